"""Tokens in the paths of auth routes (issue 12): a path parameter there is a secret unless shown otherwise.

Verification and reset links carry their token in the path; a UUID4 or a 12-character ``token_urlsafe`` looks
like an id to the value detectors, so the route decides: on the preset's actions every parameter is masked.
"""

from __future__ import annotations

from typing import Any

import pytest

from audit_middleware.capture.core import AuditCore, RequestInfo, ResponseInfo
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
