"""Route matching and the preset, rule by rule (found by mutation testing, issue 15).

Each preset row is stated with a request a user's app receives, the action recorded and the template stored.
"""

from __future__ import annotations

import pytest

from audit_middleware.capture.preset import AUTH_PRESET
from audit_middleware.capture.routing import RouteSpec, compile_routes
from audit_middleware.errors import ConfigurationError

PRESET = compile_routes(AUTH_PRESET)


@pytest.mark.parametrize(
    ("method", "path", "action", "template"),
    [
        ("POST", "/_allauth/app/v1/auth/code/confirm", "login", "/_allauth/*/v1/auth/code/confirm"),
        ("POST", "/_allauth/app/v1/auth/2fa/authenticate", "mfa_verify", "/_allauth/*/v1/auth/2fa/authenticate"),
        ("POST", "/api/token/refresh", "token_refresh", "/api/token/refresh"),
        ("POST", "/auth/jwt/refresh", "token_refresh", "/auth/jwt/refresh"),
        ("POST", "/auth/refresh", "token_refresh", "/auth/refresh"),
        ("POST", "/auth/refresh-token", "token_refresh", "/auth/refresh-token"),
        ("POST", "/auth/refresh_token", "token_refresh", "/auth/refresh_token"),
        ("POST", "/auth/signin", "login", "/auth/signin"),
        ("POST", "/auth/sign-in", "login", "/auth/sign-in"),
        ("POST", "/auth/jwt/create", "login", "/auth/jwt/create"),
        ("POST", "/auth/2fa/verify", "mfa_verify", "/auth/2fa/verify"),
        ("POST", "/auth/mfa/verify", "mfa_verify", "/auth/mfa/verify"),
        ("POST", "/auth/otp/verify", "mfa_verify", "/auth/otp/verify"),
        ("POST", "/auth/verify-otp", "mfa_verify", "/auth/verify-otp"),
        ("GET", "/auth/signout", "logout", "/auth/signout"),
        ("POST", "/auth/sign-out", "logout", "/auth/sign-out"),
        ("POST", "/auth/sign-up", "signup", "/auth/sign-up"),
        (
            "POST",
            "/dj-rest-auth/registration/verify-email/",
            "email_verified",
            "/dj-rest-auth/registration/verify-email",
        ),
        ("POST", "/dj-rest-auth/password/reset/confirm/", "password_reset", "/dj-rest-auth/password/reset/confirm"),
        ("POST", "/accounts/password/reset/confirm/MQ/abc-1/", "password_reset", "/accounts/password/reset/confirm/**"),
        ("POST", "/auth/reset-password/abc123", "password_reset", "/auth/reset-password/{token}"),
        ("POST", "/accounts/password/reset/", "password_reset_requested", "/accounts/password/reset"),
        ("POST", "/api/password-reset", "password_reset_requested", "/api/password-reset"),
        ("POST", "/accounts/password/change/", "password_change", "/accounts/password/change"),
        ("POST", "/api/change-password", "password_change", "/api/change-password"),
        ("POST", "/api/change_password", "password_change", "/api/change_password"),
    ],
)
def test_each_preset_row_records_its_action_and_template(method: str, path: str, action: str, template: str) -> None:
    match = PRESET.match(method, path)
    assert match is not None and match.spec is not None
    named = match.spec.action if isinstance(match.spec.action, str) else getattr(match.spec.action, "action", None)
    assert (named, match.template) == (action, template)  # (a generic row names its action once corroborated)


@pytest.mark.parametrize(
    ("path", "user_from_response", "identifier", "user_before"),
    [
        ("/auth/login", True, True, False),  # sign-in: the user is named by the app's response, the attempt recorded
        ("/auth/2fa/verify", True, True, False),
        ("/auth/register", True, True, False),  # sign-up likewise
        ("/auth/logout", False, False, True),  # sign-out: the user is resolved before the session goes
        ("/auth/forgot-password", False, True, False),  # a reset request records who it was for
        ("/auth/reset-password", False, False, False),
        ("/auth/refresh", False, False, False),
    ],
)
def test_each_kind_of_preset_route_reads_the_user_as_documented(
    path: str, user_from_response: bool, identifier: bool, user_before: bool
) -> None:
    match = PRESET.match("POST", path)
    assert match is not None and match.spec is not None
    spec = match.spec
    assert (spec.user_from_response, spec.identifier, spec.user_before) == (user_from_response, identifier, user_before)


def test_a_user_route_for_another_method_does_not_hide_the_preset() -> None:
    # the user's GET /login (the form) comes first, but a POST /login is still the preset's login
    table = compile_routes({"GET /login": "login_page"}, AUTH_PRESET)
    get, post = table.match("GET", "/login"), table.match("POST", "/login")
    assert get is not None and get.spec is not None and get.spec.action == "login_page"
    assert post is not None and post.spec is not None and post.spec.action == "login"


def test_a_user_route_for_another_method_does_not_hide_a_later_user_route() -> None:
    table = compile_routes({"GET /items/{id}": "item_viewed", "DELETE /items/{id}": "item_deleted"})
    match = table.match("DELETE", "/items/7")
    assert match is not None and match.spec is not None and match.spec.action == "item_deleted"


@pytest.mark.parametrize(
    ("route", "path", "template"),
    [
        ("POST /users/<string:name>/rename", "/users/alice/rename", "/users/{name}/rename"),  # Flask/Werkzeug
        ("PUT /prices/<float:amount>", "/prices/19.99", "/prices/{amount}"),  # Flask/Werkzeug
        ("PUT /prices/{amount:float}", "/prices/20", "/prices/{amount}"),  # Starlette
    ],
)
def test_a_route_with_a_werkzeug_or_starlette_converter_is_recorded(route: str, path: str, template: str) -> None:
    # a user copies the route from their Flask or Starlette app, converter and all: it must compile and match
    table = compile_routes({route: "item_changed"})
    match = table.match(route.split()[0], path)
    assert match is not None and match.spec is not None
    assert (match.spec.action, match.template) == ("item_changed", template)


def test_a_float_route_does_not_record_a_request_for_a_word() -> None:
    table = compile_routes({"PUT /prices/<float:amount>": "price_changed"})
    assert table.match("PUT", "/prices/cheap") is None


@pytest.mark.parametrize(
    ("route", "path", "template"),
    [
        ("GET /{tenant}/files/{rest:path}", "/acme/files/q3/report.pdf", "/{tenant}/files/{rest}"),
        ("GET /{org}/{repo}", "/acme/web", "/{org}/{repo}"),
        ("DELETE /{org}/{repo}/hooks/{hook_id:int}", "/acme/web/hooks/7", "/{org}/{repo}/hooks/{hook_id}"),
    ],
)
def test_a_route_made_mostly_of_parameters_is_recorded(route: str, path: str, template: str) -> None:
    # routes that start with a parameter (a tenant, an org) are as common as literal ones
    table = compile_routes({route: "resource_touched"})
    match = table.match(route.split()[0], path)
    assert match is not None and match.spec is not None
    assert (match.spec.action, match.template) == ("resource_touched", template)


def test_an_action_of_100_characters_fits_the_action_column_and_101_is_refused_at_start() -> None:
    # user_audit_logs.action is VARCHAR(100) (docs/table.md): the longest name that fits is accepted
    longest = "report_" + "x" * 93
    table = compile_routes({"POST /reports": longest})
    match = table.match("POST", "/reports")
    assert match is not None and match.spec is not None and match.spec.action == longest
    with pytest.raises(ConfigurationError):
        compile_routes({"POST /reports": longest + "x"})


@pytest.mark.parametrize("route", ["GET /items/{id", "GET /items/id}", "GET /items/<id", "GET /items/id>"])
def test_a_route_with_a_half_written_parameter_is_refused_at_start(route: str) -> None:
    # a typo would otherwise record the route under a literal that no request ever has
    with pytest.raises(ConfigurationError):
        compile_routes({route: "item_viewed"})


def test_outcome_takes_a_bool_and_refuses_a_word() -> None:
    assert RouteSpec(action="export", outcome=True).outcome is True
    with pytest.raises(ConfigurationError):
        RouteSpec(action="export", outcome="yes")  # type: ignore[arg-type]


def test_a_body_field_list_with_an_empty_name_is_refused() -> None:
    with pytest.raises(ConfigurationError):
        RouteSpec(action="profile_updated", body=("email", ""))
