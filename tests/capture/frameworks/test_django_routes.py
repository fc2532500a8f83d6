"""Django URL patterns as route templates: ``http.route`` never stores regex text (``re_path`` routes, under
``include()`` prefixes of either kind), and a regex that is more than a path gives no template at all."""

from __future__ import annotations

from typing import Any

import pytest

from audit_middleware.capture.frameworks.django import django_route_template, regex_template
from tests.django_helpers import setup_django


@pytest.mark.parametrize(
    ("regex", "template"),
    [
        # plain paths, anchors, dj-rest-auth's optional slash, escaped literals
        (r"password/reset/?$", "password/reset/"),
        (r"^api/", "api/"),
        (r"^$", ""),
        (r"^v1\.0/items/\Z", "v1.0/items/"),
        # named groups, whatever they match
        (r"^password/reset/key/(?P<uidb36>[0-9A-Za-z]+)-(?P<key>.+)/$", "password/reset/key/{uidb36}-{key}/"),
        (r"^confirm-email/(?P<key>[-:\w]+)/$", "confirm-email/{key}/"),
        (r"^(?P<lang>en|de)/(?P<x>[)(])/$", "{lang}/{x}/"),
        # more than a path: no template rather than a wrong one
        (r"^files/(.*)$", None),
        (r"^(?P<p>x)?/$", None),
        (r"^login|signin$", None),
        (r"^v1.0/$", None),
        (r"^x\d/$", None),
        (r"^(?P<p>[a-z]+/$", None),
    ],
)
def test_regex_template(regex: str, template: str | None) -> None:
    assert regex_template(regex) == template


def view(request: Any) -> Any:  # never called: the patterns are only resolved
    raise AssertionError


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/users/7/", "/users/{pk}/"),
        ("/api/auth/password/reset/", "/api/auth/password/reset/"),  # was /api/auth/password/reset/?$
        ("/api/auth/password/reset", "/api/auth/password/reset/"),
        ("/api/auth/password/reset/key/3-abc/", "/api/auth/password/reset/key/{uidb36}-{key}/"),
        ("/v1/items/12/", "/v1/items/{pk}/"),
        ("/de/login/", "/{lang}/login/"),
        ("/files/a/b", None),
    ],
)
def test_route_of_a_resolved_request(path: str, template: str | None) -> None:
    setup_django()
    from django.urls import URLResolver, include, re_path
    from django.urls import path as route
    from django.urls.resolvers import RegexPattern

    auth = [
        re_path(r"password/reset/?$", view),
        re_path(r"^password/reset/key/(?P<uidb36>[0-9A-Za-z]+)-(?P<key>.+)/$", view),
    ]
    resolver = URLResolver(
        RegexPattern(r"^/"),
        [
            route("users/<int:pk>/", view),
            re_path(r"^api/auth/", include(auth)),
            route("v1/", include([re_path(r"^items/(?P<pk>[0-9]+)/$", view)])),
            re_path(r"^(?P<lang>en|de)/", include([route("login/", view)])),
            re_path(r"^files/(.*)$", view),
        ],
    )
    assert django_route_template(resolver.resolve(path)) == template


def test_a_language_prefix_is_read_per_request() -> None:
    """``i18n_patterns``: the prefix is the active language's, so that part of the template is never cached."""
    setup_django()
    from django.urls import URLResolver
    from django.urls import path as route
    from django.urls.resolvers import LocalePrefixPattern, RegexPattern
    from django.utils import translation

    resolver = URLResolver(
        RegexPattern(r"^/"), [URLResolver(LocalePrefixPattern(), [route("accounts/<str:name>/", view)])]
    )
    templates = []
    for language in ("en", "de", "en"):
        with translation.override(language):
            templates.append(django_route_template(resolver.resolve(f"/{language}/accounts/ann/")))
    assert templates == ["/en/accounts/{name}/", "/de/accounts/{name}/", "/en/accounts/{name}/"]
