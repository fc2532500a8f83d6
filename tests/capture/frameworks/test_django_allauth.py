"""django-allauth (+ allauth.mfa) behind AuditWSGIMiddleware with the Django glue: every flow, success and
failure, lands in PostgreSQL as what happened (allauth answers a failed form with 200 and the form again)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.asgi_helpers import client
from tests.django_helpers import PASSWORD, Trail, setup_django

IP = "10.0.0.5"


def new_user(*, totp_secret: str | None = None) -> Any:
    from allauth.account.models import EmailAddress
    from django.contrib.auth.models import User

    name = "u" + uuid.uuid4().hex[:10]
    user = User.objects.create_user(name, f"{name}@example.com", PASSWORD)
    EmailAddress.objects.create(user=user, email=user.email, primary=True, verified=True)
    if totp_secret is not None:
        from allauth.mfa.totp.internal.auth import TOTP

        TOTP.activate(user, totp_secret)
    return user


def totp_code(secret: str) -> str:
    """The code the user's authenticator app shows now."""
    from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value, yield_hotp_counters_from_time

    return str(format_hotp_value(hotp_value(secret, next(yield_hotp_counters_from_time()))))


def login(trail: Trail, user: Any, password: str = PASSWORD) -> Any:
    return trail.client.post("/site/accounts/login/", data={"login": user.username, "password": password})


def session_cookie(trail: Trail) -> str:
    """The session the app issued (a secret the trail must never hold)."""
    cookie = trail.client.cookies.get("sessionid")
    assert cookie, "no session cookie was issued"
    return cookie


def test_signup_is_recorded_with_the_new_user(trail: Trail) -> None:
    from django.contrib.auth.models import User

    name = "s" + uuid.uuid4().hex[:10]
    form = {"username": name, "email": f"{name}@example.com", "password1": PASSWORD, "password2": PASSWORD}
    assert trail.client.post("/site/accounts/signup/", data=form).status_code == 302
    cookie = session_cookie(trail)
    trail.client.cookies.clear()  # someone else tries the same name
    assert trail.client.post("/site/accounts/signup/", data=form).status_code == 200  # taken: the form again
    user = User.objects.get(username=name)
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [("signup", str(user.pk), IP), ("signup_failed", None, IP)]
    assert rows[0][2]["auth"]["evidence"] == ["signup", "login"]
    trail.assert_no_secret(PASSWORD, cookie)


def test_wrong_password_rerendered_with_200_is_a_failed_login(trail: Trail) -> None:
    user = new_user()
    assert login(trail, user, "wrong " + PASSWORD).status_code == 200
    assert login(trail, user).status_code == 302
    cookie = session_cookie(trail)
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [("login_failed", None, IP), ("login", str(user.pk), IP)]
    assert rows[0][2]["identifier"] == user.username
    assert rows[0][2]["auth"]["source"] == "django.user_login_failed"
    trail.assert_no_secret(PASSWORD, cookie)


def test_a_signed_in_user_posting_the_login_form_again_is_no_login_event(trail: Trail) -> None:
    # a double-submitted login form: the second POST carries the new session, and allauth only redirects
    # an authenticated user (RedirectAuthenticatedUserMixin) without checking any password
    user = new_user()
    assert login(trail, user).status_code == 302
    assert login(trail, user, "anything").status_code == 302
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [("login", str(user.pk), IP)]
    trail.assert_no_secret(PASSWORD)


def test_logout_confirmation_page_is_no_logout(trail: Trail) -> None:
    user = new_user()
    login(trail, user)
    assert trail.client.get("/site/accounts/logout/").status_code == 200  # "are you sure?"
    cookie = session_cookie(trail)
    assert trail.client.post("/site/accounts/logout/").status_code == 302
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [("login", str(user.pk), IP), ("logout", str(user.pk), IP)]
    trail.assert_no_secret(PASSWORD, cookie)


def test_password_change_with_a_wrong_old_password_failed(trail: Trail) -> None:
    user = new_user()
    login(trail, user)
    change = {"oldpassword": "wrong", "password1": "new " + PASSWORD, "password2": "new " + PASSWORD}
    assert trail.client.post("/site/accounts/password/change/", data=change).status_code == 200
    change["oldpassword"] = PASSWORD
    assert trail.client.post("/site/accounts/password/change/", data=change).status_code == 302
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [
        ("login", str(user.pk), IP),
        ("password_change_failed", str(user.pk), IP),  # the signed-in actor, not a failed sign-in
        ("password_change", str(user.pk), IP),
    ]
    trail.assert_no_secret(PASSWORD, "new " + PASSWORD)


def test_password_reset_request_bad_key_and_reset(trail: Trail) -> None:
    from django.core import mail

    user = new_user()
    mail.outbox = []
    assert trail.client.post("/site/accounts/password/reset/", data={"email": user.email}).status_code == 302
    assert trail.client.post("/site/accounts/password/reset/", data={"email": "not an email"}).status_code == 200
    link = re.search(r"http://testserver(/site/accounts/password/reset/key/\S+/)", str(mail.outbox[0].body))
    assert link is not None
    key = link.group(1).rstrip("/").rsplit("/", 1)[1].split("-", 1)[1]
    new = {"password1": "new " + PASSWORD, "password2": "new " + PASSWORD}
    bad = f"/site/accounts/password/reset/key/{user.pk:x}-bad-{key[::-1]}/"
    assert trail.client.post(bad, data=new).status_code == 200  # "bad token" page
    form = trail.client.get(link.group(1))  # allauth moves the key into the session, then redirects
    assert form.status_code == 302
    assert trail.client.post(form.headers["location"], data=new).status_code == 302
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [
        ("password_reset_requested", None, IP),
        ("password_reset_requested_failed", None, IP),
        ("password_reset_failed", None, IP),
        ("password_reset", str(user.pk), IP),
    ]
    assert rows[-1][2]["http"]["route"] == "/site/accounts/password/reset/key/{uidb36}-{key}/"
    trail.assert_no_secret(key, "new " + PASSWORD)


def test_a_post_to_the_emailed_reset_link_is_no_reset_attempt(trail: Trail) -> None:
    # allauth moves a valid key into the session and redirects for any method: nothing was tried, nothing failed
    from django.core import mail

    user = new_user()
    mail.outbox = []
    assert trail.client.post("/site/accounts/password/reset/", data={"email": user.email}).status_code == 302
    link = re.search(r"http://testserver(/site/accounts/password/reset/key/\S+/)", str(mail.outbox[0].body))
    assert link is not None
    new = {"password1": "new " + PASSWORD, "password2": "new " + PASSWORD}
    answer = trail.client.post(link.group(1), data=new)
    assert answer.status_code == 302 and answer.headers["location"].endswith("-set-password/")
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [("password_reset_requested", None, IP)]
    trail.assert_no_secret(link.group(1).rstrip("/").rsplit("/", 1)[1], "new " + PASSWORD)


def test_two_factor_login_records_each_stage(trail: Trail) -> None:
    from allauth.mfa.totp.internal.auth import generate_totp_secret

    secret = generate_totp_secret()
    user = new_user(totp_secret=secret)
    pending = login(trail, user)
    assert (pending.status_code, pending.headers["location"]) == (302, "/site/accounts/2fa/authenticate/")
    assert trail.client.post("/site/accounts/2fa/authenticate/", data={"code": "000000"}).status_code == 200
    code = totp_code(secret)
    assert trail.client.post("/site/accounts/2fa/authenticate/", data={"code": code}).status_code == 302
    cookie = session_cookie(trail)
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [
        ("login_mfa_pending", str(user.pk), IP),
        ("mfa_verify_failed", None, IP),
        ("mfa_verify", str(user.pk), IP),
    ]
    assert rows[-1][2]["auth"]["evidence"] == ["mfa_verify", "login"]
    trail.assert_no_secret(PASSWORD, code, cookie)


def test_ajax_reset_request_answered_with_json(trail: Trail) -> None:
    """allauth answers an AJAX form with JSON instead of a redirect: 200 when done, 400 with the form's errors."""
    user = new_user()
    ajax = {"X-Requested-With": "XMLHttpRequest"}
    reset = "/site/accounts/password/reset/"
    assert trail.client.post(reset, data={"email": user.email}, headers=ajax).status_code == 200
    assert trail.client.post(reset, data={"email": "not an email"}, headers=ajax).status_code == 400
    assert [a for a, _, _ in trail.rows()] == ["password_reset_requested", "password_reset_requested_failed"]


def test_headless_two_factor_login_records_each_stage(trail: Trail) -> None:
    """allauth's headless API answers a right password with 2FA pending by 401: a stage, not a failed login."""
    from allauth.mfa.totp.internal.auth import generate_totp_secret

    secret = generate_totp_secret()
    user = new_user(totp_secret=secret)
    auth = "/_allauth/app/v1/auth"
    pending = trail.client.post(f"{auth}/login", json={"username": user.username, "password": PASSWORD})
    assert pending.status_code == 401
    session = {"X-Session-Token": pending.json()["meta"]["session_token"]}
    assert trail.client.post(f"{auth}/2fa/authenticate", json={"code": "000000"}, headers=session).status_code == 400
    code = totp_code(secret)
    assert trail.client.post(f"{auth}/2fa/authenticate", json={"code": code}, headers=session).status_code == 200
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [
        ("login_mfa_pending", str(user.pk), IP),
        ("mfa_verify_failed", None, IP),
        ("mfa_verify", str(user.pk), IP),
    ]
    trail.assert_no_secret(PASSWORD, code, session["X-Session-Token"])


@pytest.mark.anyio
async def test_two_factor_login_under_asgi() -> None:
    """Under ``AuditMiddleware`` around ``get_asgi_application()`` the glue runs on the event loop: the pending
    second factor is still told from e-mail verification (that is decided in the view's thread)."""
    from asgiref.sync import sync_to_async

    await sync_to_async(setup_django)()  # migrates: not on the event loop
    from allauth.mfa.totp.internal.auth import generate_totp_secret
    from django.core.asgi import get_asgi_application

    from audit_middleware import AuditMiddleware, AuditWriter
    from audit_middleware.testing import MemorySink

    secret = generate_totp_secret()
    user = await sync_to_async(new_user)(totp_secret=secret)
    sink = MemorySink()
    writer = AuditWriter(sink=sink)
    app = AuditMiddleware(get_asgi_application(), writer=writer)
    try:
        async with client(app, peer=IP) as c:
            form = {"login": user.username, "password": PASSWORD}
            assert (await c.post("/site/accounts/login/", data=form)).status_code == 302
            code = await sync_to_async(totp_code)(secret)
            assert (await c.post("/site/accounts/2fa/authenticate/", data={"code": code})).status_code == 302
        await writer.flush()
    finally:
        await writer.aclose()
    assert [(e.action, e.metadata.get("user_ref"), e.metadata["ip"]) for e in sink.events] == [
        ("login_mfa_pending", str(user.pk), IP),
        ("mfa_verify", str(user.pk), IP),
    ]
    sink.assert_no_secret(PASSWORD, code)
