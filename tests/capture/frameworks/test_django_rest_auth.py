"""dj-rest-auth 7 with SimpleJWT (pure JWT: no session login) behind AuditWSGIMiddleware with the Django glue:
every flow, success and failure, lands in PostgreSQL with the right action and user and no token."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.django_helpers import PASSWORD, Trail

# dj-rest-auth 7.2's password reset still reads allauth's deprecated setting name
pytestmark = pytest.mark.filterwarnings("ignore:app_settings.AUTHENTICATION_METHOD is deprecated:UserWarning")
IP = "10.0.0.9"
NEW = "new " + PASSWORD


def new_user() -> Any:
    from allauth.account.models import EmailAddress
    from django.contrib.auth.models import User

    name = "r" + uuid.uuid4().hex[:10]
    user = User.objects.create_user(name, f"{name}@example.com", PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=True)
    return user


def jwt_login(trail: Trail, user: Any, password: str = PASSWORD) -> Any:
    return trail.client.post("/api/auth/login/", json={"username": user.username, "password": password})


def summary(rows: list[tuple[str, str | None, dict[str, Any]]]) -> list[tuple[str, str | None, str]]:
    return [(action, user, metadata["ip"]) for action, user, metadata in rows]


def test_registration_is_a_signup_with_the_new_user(trail: Trail) -> None:
    from django.contrib.auth.models import User

    name = "g" + uuid.uuid4().hex[:10]
    form = {"username": name, "email": f"{name}@example.com", "password1": PASSWORD, "password2": PASSWORD}
    created = trail.client.post("/api/auth/registration/", json=form)
    assert created.status_code == 201
    trail.client.cookies.clear()  # allauth also signed the new user in: someone else tries the same name
    assert trail.client.post("/api/auth/registration/", json=form).status_code == 400
    user = User.objects.get(username=name)
    assert summary(trail.rows()) == [("signup", str(user.pk), IP), ("signup_failed", None, IP)]
    trail.assert_no_secret(PASSWORD, created.json()["access"], created.json()["refresh"])


def test_jwt_login_refresh_and_failures(trail: Trail) -> None:
    user = new_user()
    assert jwt_login(trail, user, "wrong").status_code == 400
    tokens = jwt_login(trail, user).json()
    refreshed = trail.client.post("/api/auth/token/refresh/", json={"refresh": tokens["refresh"]})
    assert refreshed.status_code == 200
    assert trail.client.post("/api/auth/token/refresh/", json={"refresh": "not-a-token"}).status_code == 401
    rows = trail.rows()
    assert summary(rows) == [
        ("login_failed", None, IP),
        ("login", str(user.pk), IP),
        ("token_refresh", None, IP),  # nothing verified names the user: a token is never read for it
        ("token_refresh_failed", None, IP),
    ]
    assert rows[0][2]["identifier"] == user.username
    trail.assert_no_secret(PASSWORD, tokens["access"], tokens["refresh"], *refreshed.json().values())


def test_bearer_logout_names_the_authenticated_user(trail: Trail) -> None:
    user = new_user()
    tokens = jwt_login(trail, user).json()
    bearer = {"Authorization": "Bearer " + tokens["access"]}
    logout = trail.client.post("/api/auth/logout/", json={"refresh": tokens["refresh"]}, headers=bearer)
    assert logout.status_code == 200
    forged = {"Authorization": "Bearer " + tokens["access"][:-4] + "AAAA"}
    assert trail.client.post("/api/auth/logout/", json={}, headers=forged).status_code == 401
    rows = trail.rows()
    assert summary(rows) == [("login", str(user.pk), IP), ("logout", str(user.pk), IP), ("logout_failed", None, IP)]
    assert rows[1][2]["auth"]["source"] == "dj_rest_auth.logout"
    trail.assert_no_secret(tokens["access"], tokens["refresh"])


def test_bearer_logout_with_session_login_names_the_user_it_signed_out(
    trail: Trail, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dj-rest-auth's default ``SESSION_LOGIN``: the view calls Django's ``logout()``, which leaves an anonymous
    ``request.user`` behind; the signal names who was signed out."""
    from dj_rest_auth.app_settings import api_settings

    monkeypatch.setattr(api_settings, "SESSION_LOGIN", True)
    user = new_user()
    tokens = jwt_login(trail, user).json()
    trail.client.cookies.clear()  # a client that keeps only the bearer token
    bearer = {"Authorization": "Bearer " + tokens["access"]}
    assert (
        trail.client.post("/api/auth/logout/", json={"refresh": tokens["refresh"]}, headers=bearer).status_code == 200
    )
    rows = trail.rows()
    assert summary(rows) == [("login", str(user.pk), IP), ("logout", str(user.pk), IP)]
    assert rows[1][2]["auth"]["source"] == "django.user_logged_out"
    trail.assert_no_secret(tokens["access"], tokens["refresh"])


def test_password_change(trail: Trail) -> None:
    user = new_user()
    tokens = jwt_login(trail, user).json()
    bearer = {"Authorization": "Bearer " + tokens["access"]}
    mismatch = {"new_password1": NEW, "new_password2": NEW + "!"}
    assert trail.client.post("/api/auth/password/change/", json=mismatch, headers=bearer).status_code == 400
    change = {"new_password1": NEW, "new_password2": NEW}
    assert trail.client.post("/api/auth/password/change/", json=change, headers=bearer).status_code == 200
    assert summary(trail.rows()) == [
        ("login", str(user.pk), IP),
        ("password_change_failed", str(user.pk), IP),
        ("password_change", str(user.pk), IP),
    ]
    trail.assert_no_secret(PASSWORD, NEW, tokens["access"])


def test_reset_request_is_not_a_completed_reset(trail: Trail) -> None:
    """``re_path('password/reset/?$')``: its regex text must not become the route (it matched ``**/reset/{token}``)."""
    from django.core import mail

    user = new_user()
    mail.outbox = []
    assert trail.client.post("/api/auth/password/reset/", json={"email": user.email}).status_code == 200
    assert trail.client.post("/api/auth/password/reset/", json={"email": "not an email"}).status_code == 400
    link = re.search(r"http://testserver/django/reset/([^/]+)/([^/]+)/", str(mail.outbox[0].body))
    assert link is not None
    uid, token = link.groups()
    confirm = {"uid": uid, "token": token[::-1], "new_password1": NEW, "new_password2": NEW}
    assert trail.client.post("/api/auth/password/reset/confirm/", json=confirm).status_code == 400
    confirm["token"] = token
    assert trail.client.post("/api/auth/password/reset/confirm/", json=confirm).status_code == 200
    rows = trail.rows()
    assert summary(rows) == [
        ("password_reset_requested", None, IP),
        ("password_reset_requested_failed", None, IP),
        ("password_reset_failed", None, IP),
        ("password_reset", None, IP),
    ]
    assert [m["http"]["route"] for _, _, m in rows] == [
        "/api/auth/password/reset/",
        "/api/auth/password/reset/",
        "/api/auth/password/reset/confirm/",
        "/api/auth/password/reset/confirm/",
    ]
    trail.assert_no_secret(token, NEW)


def test_an_api_key_sent_as_basic_username_is_no_identifier(trail: Trail, monkeypatch: pytest.MonkeyPatch) -> None:
    """DRF's BasicAuthentication hands the Basic header's user part to ``authenticate()``; API clients often send
    their key there (``key:``). The failed sign-in is recorded, but the header's credential must not become the
    row's ``identifier`` (the header itself is never stored); a plain user name still is."""
    import base64

    from dj_rest_auth.views import UserDetailsView
    from rest_framework.authentication import BasicAuthentication

    monkeypatch.setattr(UserDetailsView, "authentication_classes", [BasicAuthentication])
    key = "k3J9xQ2mP8vL4nR7tY6wZ5aB"  # the shape of an API key: mixed case and digits, no separator
    for name in (key, "mallory"):
        basic = {"Authorization": "Basic " + base64.b64encode(f"{name}:".encode()).decode()}
        assert trail.client.get("/api/auth/user/", headers=basic).status_code in (401, 403)
    rows = trail.rows()
    assert summary(rows) == [("login_failed", None, IP), ("login_failed", None, IP)]
    assert [m.get("identifier") for _, _, m in rows] == [None, "mallory"]
    trail.assert_no_secret(key)
