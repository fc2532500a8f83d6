"""The fallback outcome of form-type actions when no framework evidence is known: the response, not the status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, flash, redirect, request, url_for
from werkzeug.wrappers import Response

from audit_middleware import AuditWriter
from audit_middleware.capture.config import RequestInfo, ResponseInfo
from audit_middleware.capture.core import AuditCore
from audit_middleware.capture.wsgi import AuditWSGIMiddleware
from audit_middleware.testing import MemorySink

FORM = (b"content-type", b"application/x-www-form-urlencoded")
JSON = (b"content-type", b"application/json")
HTML = (b"content-type", b"text/html; charset=utf-8")
UID = "0d5f6f36-1f7b-4c9e-8d2a-6f0e3b7b9c11"


def sent(path: str = "/accounts/login/", *, form: bool = True, user: Any = None) -> RequestInfo:
    body = b"login=ann&password=pw" if form else b'{"username": "ann", "password": "pw"}'
    return RequestInfo(
        method="POST", path=path, headers=[FORM if form else JSON], body=body, body_size=len(body), user=user
    )


def answered(status: int, *headers: tuple[bytes, bytes], body: Any = b"", user: Any = None) -> ResponseInfo:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return ResponseInfo(status=status, headers=list(headers), body=raw, completed=True, user=user)


def recorded(request: RequestInfo, response: ResponseInfo, **options: Any) -> tuple[str, Any, Any]:
    core = AuditCore(**options)
    event = core.build_event(request, response, core.match(request.method, request.path))
    assert event is not None and event.metadata is not None
    return event.action, event.user_id, event.metadata.get("auth")


# -- HTML forms ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/login/",
        "/admin/login/",
        "/accounts/signup/",
        "/accounts/password/change/",
        "/accounts/2fa/authenticate/",
    ],
)
def test_a_form_post_answered_with_a_page_is_the_form_again(path: str) -> None:
    # allauth, Flask-Security and Django's admin answer a wrong password (a taken e-mail, a wrong old
    # password or code) with 200 and the re-rendered form
    action, user, auth = recorded(sent(path), answered(200, HTML, (b"set-cookie", b"csrftoken=x; Path=/")))
    assert action.endswith("_failed") and user is None
    assert auth == {"source": "response", "outcome": "failed", "reason": "form_rerendered"}


def test_a_redirect_back_to_the_form_is_a_failure() -> None:
    # Flask-Login tutorial: flash('Please check your login details'), redirect(url_for('auth.login'))
    action, _, auth = recorded(sent("/login"), answered(302, (b"location", b"http://testserver/login?next=%2F")))
    assert action == "login_failed" and auth["reason"] == "redirect_back"


def test_a_redirect_elsewhere_is_a_success() -> None:
    assert recorded(sent("/login"), answered(302, (b"location", b"/profile")))[0] == "login"


def test_a_bad_reset_token_sent_back_to_the_request_form_is_a_failed_reset() -> None:
    # Flask-Security: POST /reset/<token> with an expired token redirects to /reset
    request = sent("/reset/InRva2VuIg.abc")
    request.body, request.headers = b"password=x&password_confirm=x", [FORM]
    assert recorded(request, answered(302, (b"location", b"/reset")))[0] == "password_reset_failed"
    assert recorded(request, answered(302, (b"location", b"/")))[0] == "password_reset"


# -- JSON APIs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        answered(200, JSON, body={"access_token": "opaque", "token_type": "bearer"}),  # OAuth2 tutorial, FastAPI-Users
        answered(200, JSON, body={"key": "opaque"}),  # dj-rest-auth token
        answered(200, JSON, body={"status": 200, "data": {"user": {"id": 1}}}),  # allauth headless
        answered(204, (b"set-cookie", b"fastapiusersauth=opaque; HttpOnly")),  # FastAPI-Users cookie
    ],
)
def test_a_json_login_that_hands_out_a_credential_is_a_success(response: ResponseInfo) -> None:
    assert recorded(sent("/auth/jwt/login", form=False), response)[0] == "login"


def test_a_json_login_that_says_nothing_is_only_an_attempt() -> None:
    # {"success": false} with 200 exists in the wild: without a credential, a preset route records less
    action, user, auth = recorded(sent("/login", form=False), answered(200, JSON, body={"success": False}))
    assert (action, user) == ("login_attempt", None)
    assert auth == {"source": "response", "outcome": "unknown", "reason": "no_credential"}


def test_a_user_known_after_the_login_and_not_before_is_a_success() -> None:
    action, user, _ = recorded(sent("/login", form=False), answered(200, JSON, body={"ok": True}, user=UID))
    assert (action, str(user)) == ("login", UID)


def test_the_users_own_login_route_keeps_its_status_when_the_response_cannot_tell() -> None:
    options = {"routes": {"POST /api/session": {"action": "login", "user_from_response": True}}}
    assert recorded(sent("/api/session", form=False), answered(200, JSON, body={"ok": True}), **options)[0] == "login"
    assert recorded(sent("/api/session"), answered(200, HTML), **options)[0] == "login_failed"  # the form again


def test_other_actions_are_not_second_guessed() -> None:
    request = RequestInfo(method="POST", path="/auth/jwt/logout", headers=[JSON])
    assert recorded(request, answered(200, JSON, body={}))[0] == "logout"
    reset = RequestInfo(method="POST", path="/reset", headers=[FORM], body=b"email=a%40b.c", body_size=13)
    # Flask-Security re-renders its forgot-password form after a successful request too
    assert recorded(reset, answered(200, HTML))[0] == "password_reset_requested"


# -- a second factor pending (item 6) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        answered(302, (b"location", b"/accounts/2fa/authenticate/")),  # allauth
        answered(302, (b"location", b"/tf-validate")),  # Flask-Security
        answered(200, JSON, body={"meta": {"code": 200}, "response": {"tf_required": True, "tf_state": "ready"}}),
        answered(401, JSON, body={"status": 401, "data": {"flows": [{"id": "mfa_authenticate", "is_pending": True}]}}),
        answered(200, JSON, body={"user_id": UID, "access_token": "opaque", "mfa_pending": True}),
        answered(200, JSON, body={"user_id": UID, "requires_mfa": True}),  # (the bytes pre-check missed this one)
    ],
)
def test_a_right_password_with_a_second_factor_pending_is_login_mfa_pending(response: ResponseInfo) -> None:
    action, user, auth = recorded(sent("/login"), response)
    assert (action, user, auth["outcome"]) == ("login_mfa_pending", None, "mfa_pending")


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": UID, "access_token": "opaque", "email_pending": True},  # "_pending", yet no second factor
        {"user_id": UID, "access_token": "opaque", "flows": [{"id": "verify_email", "is_pending": True}]},
        {"user_id": UID, "access_token": "opaque", "mfa_required": False},
    ],
)
def test_a_login_whose_answer_only_looks_like_a_second_factor_names_its_user(body: dict[str, Any]) -> None:
    # the middleware's bytes pre-check may fire on these; the JSON check that follows decides
    action, user, auth = recorded(sent("/login", form=False), answered(200, JSON, body=body))
    assert (action, str(user), auth) == ("login", UID, None)


def test_a_wrong_password_on_an_mfa_stack_is_still_a_failure() -> None:
    response = answered(
        401, JSON, body={"status": 401, "data": {"flows": [{"id": "login"}, {"id": "mfa_authenticate"}]}}
    )
    assert recorded(sent("/login"), response)[0] == "login_failed"


# -- the Flask-Login tutorial, for real ------------------------------------------------------------------


@pytest.fixture
def tutorial() -> Iterator[tuple[Any, AuditWSGIMiddleware, MemorySink]]:
    app = Flask(__name__)
    app.secret_key = "test"

    @app.post("/login")
    def login_post() -> Response:
        if request.form.get("password") != "right":
            flash("Please check your login details and try again.")
            return redirect(url_for("login_post"))
        return redirect(url_for("profile"))

    @app.post("/signup")
    def signup_post() -> Response:
        if request.form.get("email") == "taken@example.com":
            flash("Email address already exists")
            return redirect(url_for("signup_post"))
        return redirect(url_for("login_post"))

    @app.get("/profile")
    def profile() -> str:
        return "profile"

    sink = MemorySink()
    middleware = AuditWSGIMiddleware(app.wsgi_app, writer=AuditWriter(sink=sink))
    app.wsgi_app = middleware  # type: ignore[method-assign]
    yield app.test_client(), middleware, sink
    middleware.close(5)


def test_the_flask_login_tutorial_tells_a_wrong_password_from_a_right_one(
    tutorial: tuple[Any, AuditWSGIMiddleware, MemorySink],
) -> None:
    client, middleware, sink = tutorial
    assert client.post("/login", data={"email": "a@example.com", "password": "wrong"}, buffered=True).status_code == 302
    assert client.post("/login", data={"email": "a@example.com", "password": "right"}, buffered=True).status_code == 302
    assert (
        client.post("/signup", data={"email": "taken@example.com", "password": "x"}, buffered=True).status_code == 302
    )
    assert client.post("/signup", data={"email": "new@example.com", "password": "x"}, buffered=True).status_code == 302
    middleware.flush(5)
    assert sink.actions() == ["login_failed", "login", "signup_failed", "signup"]
