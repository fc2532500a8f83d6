"""Tokens in the paths of auth routes (issue 12): a path parameter there is a secret unless shown otherwise.

Verification and reset links carry their token in the path; a UUID4 or a 12-character ``token_urlsafe`` looks
like an id to the value detectors, so the route decides: on the preset's actions every parameter is masked.
"""

from __future__ import annotations

from typing import Any

import pytest

from audit_middleware.capture.core import AuditCore, RequestInfo, ResponseInfo
from audit_middleware.capture.routing import RouteSpec
from audit_middleware.redaction.detectors import REDACTED

UUID4 = "5b0c2a4e-8f1d-4c55-9a3e-2f6b7c8d9e01"
URLSAFE_12 = "Xq3_vB9kLm2Z"  # what secrets.token_urlsafe(9) gives: 12 characters


def stored_http(core: AuditCore, method: str, path: str, status: int = 200, **response: Any) -> dict[str, Any]:
    request = RequestInfo(method=method, path=path, headers=(), client="203.0.113.9")
    event = core.build_event(request, ResponseInfo(status=status, **response), core.match(method, path))
    assert event is not None and event.metadata is not None
    http: dict[str, Any] = event.metadata["http"]
    return http


@pytest.mark.parametrize("token", [UUID4, URLSAFE_12])
def test_a_verification_token_in_a_mapped_auth_route_is_masked(token: str) -> None:
    core = AuditCore(routes={"GET /verify-email/{t}": "email_verified"})
    http = stored_http(core, "GET", f"/verify-email/{token}")
    assert http["path"] == f"/verify-email/{REDACTED}"
    assert http["route"] == "/verify-email/{t}"


@pytest.mark.parametrize("token", [UUID4, URLSAFE_12])
def test_a_failed_verification_masks_its_token_too(token: str) -> None:
    core = AuditCore(routes={"GET /verify-email/{t}": "email_verified"})
    http = stored_http(core, "GET", f"/verify-email/{token}", status=400)
    assert http["path"] == f"/verify-email/{REDACTED}"


@pytest.mark.parametrize("token", [UUID4, URLSAFE_12])
def test_the_frameworks_template_masks_the_token_on_an_auth_route(token: str) -> None:
    core = AuditCore(routes={"GET /confirm/*": "email_verified"})
    http = stored_http(core, "GET", f"/confirm/{token}", route_template="/confirm/{value}")
    assert http["path"] == f"/confirm/{REDACTED}"


@pytest.mark.parametrize("token", [UUID4, URLSAFE_12])
def test_a_preset_route_ending_in_a_key_masks_the_key(token: str) -> None:
    # allauth's /accounts/password/reset/key/<uidb36>-<key>/ (the preset's "POST **/password/reset/key/**")
    http = stored_http(AuditCore(), "POST", f"/accounts/password/reset/key/1-{token}/")
    assert http["path"] == f"/accounts/password/reset/key/{REDACTED}/"


@pytest.mark.parametrize("token", [UUID4, URLSAFE_12])
def test_a_reset_token_under_any_parameter_name_is_masked(token: str) -> None:
    core = AuditCore(routes={"POST /reset/*": "password_reset"})
    http = stored_http(core, "POST", f"/reset/{token}", route_template="/reset/{t}")
    assert http["path"] == f"/reset/{REDACTED}"


def test_parameters_of_routes_that_are_not_auth_routes_are_kept() -> None:
    core = AuditCore(routes={"GET /orders/{order_id}": "order_viewed"})
    http = stored_http(core, "GET", f"/orders/{UUID4}")
    assert http["path"] == f"/orders/{UUID4}"  # an id, on a route that is not about credentials


# A user's own routes for each auth action the docs list (docs/auth-preset.md), with the link token in the path.
USER_AUTH_ROUTES = [
    ("POST /magic-link/{t}", "login"),
    ("POST /sessions/{t}/refuse", "login_failed"),
    ("POST /magic-link/{t}/start", "login_attempt"),
    ("POST /login/{t}/password", "login_mfa_pending"),
    ("POST /login/{t}/second-factor", "mfa_verify"),
    ("POST /sessions/{t}/end", "logout"),
    ("POST /invitations/{t}/accept", "signup"),
    ("POST /account/{t}/password", "password_change"),
    ("POST /account/{t}/forgot", "password_reset_requested"),
    ("POST /set-password/{t}", "password_reset"),
    ("POST /account/{t}/send-verification", "email_verification_requested"),
    ("GET /confirm-email/{t}", "email_verified"),
    ("POST /api/sessions/{t}/renew", "token_refresh"),
]


@pytest.mark.parametrize(("route", "action"), USER_AUTH_ROUTES)
@pytest.mark.parametrize("status", [200, 400])
def test_every_auth_action_masks_the_token_in_its_path(route: str, action: str, status: int) -> None:
    # a user maps their own route to one of the preset's actions: it is an auth route, so its link token is
    # masked whether the request succeeded or failed, and the template still says which route it was
    method, template = route.split()
    core = AuditCore(routes={route: action})
    http = stored_http(core, method, template.replace("{t}", URLSAFE_12), status=status)
    assert http["path"] == template.replace("{t}", REDACTED)
    assert http["route"] == template


def test_a_route_naming_its_failure_login_failed_masks_it_under_another_suffix() -> None:
    # a team records "<action>_denied" for failures, but names one route's failure login_failed explicitly
    core = AuditCore(
        routes={"POST /magic-link/{t}": RouteSpec(action="magic_link", failed_action="login_failed")},
        failed_suffix="_denied",
    )
    http = stored_http(core, "POST", f"/magic-link/{UUID4}", status=401)
    assert http["path"] == f"/magic-link/{REDACTED}"
