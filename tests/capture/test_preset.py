"""The auth preset: every row on the request its library really sends, and no auth row for business routes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from audit_middleware.capture.config import RequestInfo, ResponseInfo
from audit_middleware.capture.core import AuditCore
from audit_middleware.capture.preset import AUTH_ACTIONS, AUTH_PRESET, PRESET_TABLE
from audit_middleware.capture.routing import compile_routes

PRESET = compile_routes(AUTH_PRESET)
DOC = Path(__file__).resolve().parents[2] / "docs" / "auth-preset.md"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def sent(method: str, path: str, body: Any = None, *, cookie: str | None = None) -> RequestInfo:
    """A request as its client sends it: a dict body goes as JSON, a str body as a form."""
    headers: list[tuple[bytes, bytes]] = []
    raw = b""
    if isinstance(body, dict):
        raw = json.dumps(body).encode()
        headers.append((b"content-type", JSON.encode()))
    elif isinstance(body, str):
        raw = body.encode()
        headers.append((b"content-type", FORM.encode()))
    if cookie is not None:
        headers.append((b"cookie", cookie.encode()))
    return RequestInfo(method=method, path=path, headers=headers, body=raw, body_size=len(raw))


def answered(status: int = 200, *headers: tuple[str, str], body: bytes = b"") -> ResponseInfo:
    return ResponseInfo(status=status, headers=[(k.encode(), v.encode()) for k, v in headers], body=body)


def action_of(request: RequestInfo, response: ResponseInfo | None = None) -> tuple[str | None, str | None]:
    """(the action the preset names for this request, the key of the row that matched)."""
    match = PRESET.match(request.method, request.path)
    if match is None or match.spec is None:
        return None, None
    action = match.spec.action
    named = action(request, response or answered()) if callable(action) else action
    return named, match.key


# Each row on the request its library sends (FastAPI-Users, allauth, dj-rest-auth + SimpleJWT, Flask-Security,
# the FastAPI OAuth2 tutorial, django-oauth-toolkit, Flask-Login tutorial). Every PRESET_TABLE row is here.
PINNED: list[tuple[RequestInfo, ResponseInfo | None, str]] = [
    # allauth headless
    (sent("DELETE", "/_allauth/browser/v1/auth/session"), None, "logout"),
    (sent("POST", "/_allauth/browser/v1/auth/password/request", {"email": "a@b.c"}), None, "password_reset_requested"),
    (sent("POST", "/_allauth/browser/v1/auth/password/reset", {"key": "k", "password": "p"}), None, "password_reset"),
    (sent("POST", "/_allauth/browser/v1/auth/2fa/authenticate", {"code": "123456"}), None, "mfa_verify"),
    (sent("POST", "/_allauth/app/v1/auth/code/confirm", {"code": "ABC"}), None, "login"),
    (sent("POST", "/_allauth/browser/v1/auth/login", {"email": "a@b.c", "password": "p"}), None, "login"),
    (sent("POST", "/_allauth/app/v1/auth/signup", {"email": "a@b.c", "password": "p"}), None, "signup"),
    (sent("POST", "/_allauth/browser/v1/account/password/change", {"new_password": "p"}), None, "password_change"),
    # token refresh
    (sent("POST", "/dj-rest-auth/token/refresh/", {"refresh": "r"}), None, "token_refresh"),
    (sent("POST", "/api/v1/auth/token/refresh", {"refresh": "r"}), None, "token_refresh"),
    (sent("POST", "/auth/jwt/refresh"), None, "token_refresh"),
    (sent("POST", "/auth/refresh"), None, "token_refresh"),  # an auth parent
    (sent("POST", "/refresh", {"refresh_token": "r"}), None, "token_refresh"),  # the body
    (sent("POST", "/api/refresh-token", cookie="refresh_token=r"), None, "token_refresh"),  # a cookie
    (  # flask-jwt-extended: the refresh token in the Authorization header; the response issues the access token
        sent("POST", "/api/refresh_token"),
        answered(200, ("content-type", JSON), body=b'{"access_token": "a"}'),
        "token_refresh",
    ),
    # sign-in
    (sent("POST", "/auth/jwt/login", "username=a%40b.c&password=p"), None, "login"),  # FastAPI-Users
    (sent("POST", "/auth/cookie/login", "username=a%40b.c&password=p"), None, "login"),
    (sent("POST", "/accounts/login/", "login=a&password=p"), None, "login"),  # allauth
    (sent("POST", "/dj-rest-auth/login/", {"username": "a", "password": "p"}), None, "login"),
    (sent("POST", "/login", "email=a%40b.c&password=p"), None, "login"),  # Flask-Security
    (sent("POST", "/signin", {"email": "a@b.c", "password": "p"}), None, "login"),
    (sent("POST", "/sign-in", {"email": "a@b.c", "password": "p"}), None, "login"),
    (sent("POST", "/us-signin", {"identity": "a@b.c", "passcode": "123"}), None, "login"),
    (sent("POST", "/token", "grant_type=password&username=a&password=p"), None, "login"),  # the FastAPI tutorial
    (sent("POST", "/token", "username=a&password=p"), None, "login"),  # (its client may omit grant_type)
    (sent("POST", "/api/token/", {"username": "a", "password": "p"}), None, "login"),  # SimpleJWT
    (sent("POST", "/o/token/", "grant_type=client_credentials"), None, "login"),  # django-oauth-toolkit
    (sent("POST", "/oauth/token", "grant_type=refresh_token&refresh_token=r"), None, "token_refresh"),
    (sent("POST", "/auth/jwt/create/", {"username": "a", "password": "p"}), None, "login"),  # Djoser
    # MFA
    (sent("POST", "/tf-validate", "code=123456"), None, "mfa_verify"),  # Flask-Security
    (sent("POST", "/accounts/2fa/authenticate/", "code=123456"), None, "mfa_verify"),  # allauth
    (sent("POST", "/mfa/verify", {"code": "1"}), None, "mfa_verify"),
    (sent("POST", "/2fa/verify", {"code": "1"}), None, "mfa_verify"),
    (sent("POST", "/otp/verify", {"code": "1"}), None, "mfa_verify"),
    (sent("POST", "/verify-otp", {"code": "1"}), None, "mfa_verify"),
    # sign-out
    (sent("POST", "/auth/jwt/logout"), None, "logout"),
    (sent("POST", "/accounts/logout/"), None, "logout"),
    (sent("POST", "/dj-rest-auth/logout/"), None, "logout"),
    (sent("POST", "/signout"), None, "logout"),
    (sent("POST", "/sign-out"), None, "logout"),
    (sent("GET", "/logout"), answered(302, ("location", "/")), "logout"),  # Flask-Login tutorial
    (sent("GET", "/signout"), answered(303, ("location", "/login")), "logout"),
    (sent("GET", "/sign-out"), answered(200, ("set-cookie", "session=; Max-Age=0; Path=/")), "logout"),
    # registration
    (sent("POST", "/auth/register", {"email": "a@b.c", "password": "p"}), None, "signup"),  # FastAPI-Users
    (sent("POST", "/register", "email=a%40b.c&password=p&password_confirm=p"), None, "signup"),  # Flask-Security
    (sent("POST", "/accounts/signup/", "email=a%40b.c&password1=p&password2=p"), None, "signup"),
    (sent("POST", "/sign-up", {"email": "a@b.c", "password": "p"}), None, "signup"),
    (sent("POST", "/dj-rest-auth/registration/", {"email": "a@b.c", "password1": "p"}), None, "signup"),
    # e-mail verification
    (sent("POST", "/auth/request-verify-token", {"email": "a@b.c"}), None, "email_verification_requested"),
    (sent("POST", "/auth/verify", {"token": "t"}), None, "email_verified"),
    (sent("POST", "/dj-rest-auth/registration/verify-email/", {"key": "k"}), None, "email_verified"),
    # password reset
    (sent("POST", "/dj-rest-auth/password/reset/confirm/", {"uid": "u", "token": "t"}), None, "password_reset"),
    (sent("POST", "/auth/password/reset/confirm/MQ/set-password/", "new_password1=p"), None, "password_reset"),
    (sent("POST", "/accounts/password/reset/key/1-set-password/", "password1=p"), None, "password_reset"),
    (sent("POST", "/auth/reset-password", {"token": "t", "password": "p"}), None, "password_reset"),
    (sent("POST", "/reset-password/tok", {"password": "p"}), None, "password_reset"),
    (sent("POST", "/reset/InRva2VuIg.abc", "password=p&password_confirm=p"), None, "password_reset"),  # Flask-Security
    (sent("POST", "/auth/forgot-password", {"email": "a@b.c"}), None, "password_reset_requested"),
    (sent("POST", "/accounts/password/reset/", "email=a%40b.c"), None, "password_reset_requested"),
    (sent("POST", "/dj-rest-auth/password/reset/", {"email": "a@b.c"}), None, "password_reset_requested"),
    (sent("POST", "/password-reset", {"email": "a@b.c"}), None, "password_reset_requested"),
    (sent("POST", "/reset", "email=a%40b.c"), None, "password_reset_requested"),  # Flask-Security
    # password change
    (sent("POST", "/accounts/password/change/", "oldpassword=o&password1=p"), None, "password_change"),
    (sent("POST", "/dj-rest-auth/password/change/", {"new_password1": "p"}), None, "password_change"),
    (sent("POST", "/change-password", {"old": "o", "new": "p"}), None, "password_change"),
    (sent("POST", "/change_password", {"old": "o", "new": "p"}), None, "password_change"),
    (sent("POST", "/change", "password=o&new_password=p&new_password_confirm=p"), None, "password_change"),
]


@pytest.mark.parametrize(("request_", "response", "action"), PINNED, ids=lambda v: getattr(v, "path", None))
def test_preset_names_the_action_of_each_library_request(
    request_: RequestInfo, response: ResponseInfo | None, action: str
) -> None:
    assert action_of(request_, response)[0] == action


def test_every_preset_row_is_pinned_on_a_real_request() -> None:
    pinned = {action_of(request_, response)[1] for request_, response, _action in PINNED}
    assert [row.key for row in PRESET_TABLE if row.key not in pinned] == []


# -- business routes that share a generic last word: no auth row -------------------------------------

BUSINESS: list[tuple[RequestInfo, ResponseInfo]] = [
    (sent("POST", "/projects/3/reset", {}), answered(200)),
    (sent("POST", "/projects/3/reset"), answered(204)),
    (sent("POST", "/cache/refresh"), answered(200, ("content-type", JSON), body=b'{"status": "ok"}')),
    (sent("POST", "/feeds/7/refresh", {"force": True}), answered(202)),
    (sent("POST", "/settings/change", {"theme": "dark"}), answered(200)),
    (sent("POST", "/plans/change", "plan=pro"), answered(302, ("location", "/billing"))),
    (sent("POST", "/api/token", {"name": "ci", "scopes": ["read"]}), answered(201)),  # creating an API token
    (sent("POST", "/api/devices/register", {"device_id": "d1", "name": "my phone"}), answered(201)),
    (sent("POST", "/events/9/register", "seats=2"), answered(302, ("location", "/events/9"))),
    (sent("POST", "/counters/reset/7"), answered(200)),
    (sent("GET", "/accounts/logout/"), answered(200, ("content-type", "text/html"))),  # allauth's confirmation page
    (sent("GET", "/logout"), answered(405)),  # Flask-Security 5 refuses GET /logout: nobody was logged out
    (sent("GET", "/logout"), answered(200, ("set-cookie", "csrftoken=abc; Path=/"))),  # a new cookie, none cleared
]


@pytest.mark.parametrize(("request_", "response"), BUSINESS, ids=lambda v: getattr(v, "path", None))
def test_a_generic_last_word_alone_names_no_auth_action(request_: RequestInfo, response: ResponseInfo) -> None:
    assert action_of(request_, response)[0] is None


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/projects/3/reset", {}),
        ("POST", "/cache/refresh", None),
        ("POST", "/settings/change", {"theme": "dark"}),
        ("POST", "/api/token", {"name": "ci"}),
    ],
)
def test_the_issue_examples_record_no_row_with_zero_configuration(method: str, path: str, body: Any) -> None:
    core = AuditCore()
    request_ = sent(method, path, body)
    response = answered(200, ("content-type", JSON), body=b'{"status": "ok"}')
    assert core.build_event(request_, response, core.match(method, path)) is None


def test_a_failed_corroborated_request_is_still_a_failed_login() -> None:
    core = AuditCore()
    request_ = sent("POST", "/api/token/", {"username": "a", "password": "wrong"})
    event = core.build_event(request_, answered(401), core.match("POST", "/api/token/"))
    assert event is not None and event.action == "login_failed"


@pytest.mark.parametrize(
    ("body", "action"),
    [
        ("grant_type=password&username=a&password=b", "login"),
        ("grant_type=refresh_token&refresh_token=x", "token_refresh"),
        ({"grant_type": "refresh_token", "refresh_token": "x"}, "token_refresh"),
        ("grant_type=client_credentials", "login"),
    ],
)
def test_oauth_token_endpoint_tells_refresh_from_login(body: Any, action: str) -> None:
    assert action_of(sent("POST", "/oauth/token", body))[0] == action


def test_preset_never_keeps_a_reset_key_in_the_template() -> None:
    match = PRESET.match("POST", "/accounts/password/reset/key/1-s3cr3tk3y/")
    assert match is not None and "s3cr3tk3y" not in match.template
    match = PRESET.match("POST", "/reset/s3cr3tk3y")
    assert match is not None and "s3cr3tk3y" not in match.template


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/login"),  # showing the form is not a login
        ("GET", "/accounts/password/reset/"),
        ("GET", "/users/me"),
        ("POST", "/items"),
        ("POST", "/blog/login-tips/comments"),
    ],
)
def test_preset_ignores_other_requests(method: str, path: str) -> None:
    assert PRESET.match(method, path) is None


def test_preset_table_has_unique_keys_and_sources() -> None:
    keys = [row.key for row in PRESET_TABLE]
    assert len(keys) == len(set(keys))
    assert all(row.source for row in PRESET_TABLE)


def test_the_docs_page_lists_every_row_with_its_corroboration() -> None:
    page = DOC.read_text()
    for row in PRESET_TABLE:
        needs = row.corroborated.needs if row.corroborated is not None else ""
        assert f"| `{row.key}` | `{row.action}` | {needs} |" in page, row.key


def test_the_vocabulary_has_the_second_factor_stage_and_the_docs_list_every_action() -> None:
    assert "login_mfa_pending" in AUTH_ACTIONS and "login_attempt" in AUTH_ACTIONS
    page = DOC.read_text()
    assert all(f"| `{action}` |" in page for action in AUTH_ACTIONS)


@pytest.mark.anyio
async def test_corroboration_reads_the_body_even_when_bodies_are_not_stored() -> None:
    from audit_middleware import AuditWriter
    from audit_middleware.capture.asgi import AuditMiddleware
    from audit_middleware.testing import MemorySink
    from tests.asgi_helpers import client, ok_app

    sink = MemorySink()
    writer = AuditWriter(sink=sink)
    app = AuditMiddleware(ok_app(201), writer=writer, capture_body=False)
    async with client(app) as c:
        await c.post("/register", data={"email": "ann@example.com", "password": "pw-Zq8#kL2!vX"})
        await c.post("/api/devices/register", json={"device_id": "d1"})
    await writer.aclose()
    [event] = sink.events
    assert event.action == "signup" and "body" not in event.metadata
    sink.assert_no_secret("pw-Zq8#kL2!vX")


# -- each piece of corroboration, as docs/auth-preset.md states it ----------------------------------------


@pytest.mark.parametrize(
    ("path", "action"),
    [  # nothing in the body: the auth parent before the generic word is the whole evidence
        ("/api/auth/refresh", "token_refresh"),
        ("/oauth/token", "login"),
        ("/oauth2/token", "login"),
        ("/o/token/", "login"),  # django-oauth-toolkit, client credentials in the Authorization header
        ("/api/jwt/refresh-token", "token_refresh"),
        ("/_allauth/register", "signup"),
        ("/dj-rest-auth/refresh", "token_refresh"),
        ("/rest-auth/register/", "signup"),
        ("/authentication/reset", "password_reset_requested"),
        ("/sso/token", "login"),
    ],
)
def test_a_generic_word_under_each_auth_parent_is_an_auth_request(path: str, action: str) -> None:
    assert action_of(sent("POST", path))[0] == action


@pytest.mark.parametrize("field", ["email", "username", "login", "identity", "identifier", "user_name", "phone"])
def test_a_reset_request_naming_the_account_by_any_identifier_field_is_recorded(field: str) -> None:
    # Flask-Security's POST /reset, or an app's own: who asked is named by one of the documented fields
    assert action_of(sent("POST", "/reset", {field: "ann"}))[0] == "password_reset_requested"


@pytest.mark.parametrize("field", ["refresh", "refresh_token", "refreshToken"])
def test_a_refresh_token_in_the_body_under_each_field_name_is_a_refresh(field: str) -> None:
    # SimpleJWT sends "refresh", OAuth2 clients "refresh_token", JavaScript clients "refreshToken"
    assert action_of(sent("POST", "/api/refresh", {field: "r"}))[0] == "token_refresh"


@pytest.mark.parametrize(
    ("path", "body", "status", "action"),
    [  # the endpoint alone names the action: a refused request with nothing in its body is still the failure
        ("/api/token/refresh/", {}, 401, "token_refresh_failed"),  # SimpleJWT
        ("/accounts/password/reset/", "", 400, "password_reset_requested_failed"),  # allauth: empty form
        ("/accounts/password/change/", "", 400, "password_change_failed"),  # allauth: empty form
    ],
)
def test_a_dedicated_library_endpoint_records_a_refused_empty_request(
    path: str, body: Any, status: int, action: str
) -> None:
    core = AuditCore()
    event = core.build_event(sent("POST", path, body), answered(status), core.match("POST", path))
    assert event is not None and event.action == action


async def _rows_of(app: Any, method: str, path: str) -> list[str]:
    from audit_middleware import AuditWriter
    from audit_middleware.capture.asgi import AuditMiddleware
    from audit_middleware.testing import MemorySink
    from tests.asgi_helpers import client

    sink = MemorySink()
    writer = AuditWriter(sink=sink)
    async with client(AuditMiddleware(app, writer=writer)) as c:
        await c.request(method, path)
    await writer.aclose()
    return [event.action for event in sink.events]


def _answering(status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (302, [(b"location", b"/")]),  # the Flask-Login tutorial: clear the session, redirect home
        (200, [(b"set-cookie", b"session=; Max-Age=0; Path=/")]),  # a page that deletes the session cookie
    ],
)
async def test_a_get_logout_is_recorded_through_the_middleware(status: int, headers: list[tuple[bytes, bytes]]) -> None:
    # the middleware must keep the response headers of the row to see the deleted cookie
    assert await _rows_of(_answering(status, headers), "GET", "/logout") == ["logout"]


@pytest.mark.anyio
async def test_a_refresh_whose_response_issues_a_token_is_recorded_through_the_middleware() -> None:
    # flask-jwt-extended: the refresh token travels in the Authorization header; only the answer tells
    app = _answering(200, [(b"content-type", b"application/json")], b'{"access_token": "a"}')
    assert await _rows_of(app, "POST", "/api/refresh_token") == ["token_refresh"]


@pytest.mark.parametrize(
    ("response", "action"),
    [
        (answered(300, ("location", "/")), "logout"),  # any 3xx sends the user elsewhere: signed out
        (answered(400, ("set-cookie", "session=; Max-Age=0; Path=/")), None),  # refused, whatever it clears
        (answered(401, ("location", "/login")), None),
    ],
)
def test_a_get_logout_is_a_logout_only_when_answered_below_400(response: ResponseInfo, action: str | None) -> None:
    assert action_of(sent("GET", "/logout"), response)[0] == action


@pytest.mark.parametrize("field", ["passwd", "pwd", "PWD"])
def test_a_registration_with_a_short_password_field_name_is_a_signup(field: str) -> None:
    # apps that name the field passwd or pwd (any case) sign users up at POST /register too
    assert action_of(sent("POST", "/register", {"email": "a@b.c", field: "p"}))[0] == "signup"


def test_a_grant_type_that_is_not_a_string_is_no_oauth_grant() -> None:
    # creating an API token whose JSON happens to carry a numeric grant_type is no sign-in
    assert action_of(sent("POST", "/api/token", {"name": "ci", "grant_type": 5}))[0] is None


def test_an_oauth_refresh_grant_at_a_refresh_route_is_a_refresh() -> None:
    # the refresh token travels in the Authorization header; the form only names the grant
    assert action_of(sent("POST", "/api/refresh", "grant_type=refresh_token&client_id=web"))[0] == "token_refresh"
