"""Django's own ``django.contrib.auth.urls`` views behind AuditWSGIMiddleware with the Django glue: they announce
no password change or reset, and answer a failed form with 200 and the form again."""

from __future__ import annotations

import re
import uuid
from typing import Any

from tests.django_helpers import PASSWORD, Trail, form_token

IP = "10.0.0.13"
NEW = "new " + PASSWORD


def new_user() -> Any:
    from django.contrib.auth.models import User

    name = "d" + uuid.uuid4().hex[:10]
    return User.objects.create_user(name, f"{name}@example.com", PASSWORD)


def submit(trail: Trail, url: str, form: dict[str, str]) -> Any:
    """GET the form page (its CSRF token), then POST the form."""
    page = trail.client.get(url)
    return trail.client.post(url, data={**form, "csrfmiddlewaretoken": form_token(page.text)})


def test_password_change_with_a_wrong_old_password_failed(trail: Trail) -> None:
    user = new_user()
    assert trail.client.post("/site/accounts/login/", data={"login": user.username, "password": PASSWORD}).is_redirect
    change = {"old_password": "wrong", "new_password1": NEW, "new_password2": NEW}
    assert submit(trail, "/django/password_change/", change).status_code == 200  # the form again
    change["old_password"] = PASSWORD
    assert submit(trail, "/django/password_change/", change).status_code == 302
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [
        ("login", str(user.pk), IP),
        ("password_change_failed", str(user.pk), IP),
        ("password_change", str(user.pk), IP),
    ]
    trail.assert_no_secret(PASSWORD, NEW)


def test_password_reset_request_and_reset(trail: Trail) -> None:
    from django.core import mail

    user = new_user()
    mail.outbox = []
    assert submit(trail, "/django/password_reset/", {"email": "not an email"}).status_code == 200
    assert submit(trail, "/django/password_reset/", {"email": user.email}).status_code == 302
    link = re.search(r"http://testserver(/django/reset/[^/]+/([^/]+)/)", str(mail.outbox[0].body))
    assert link is not None
    form = trail.client.get(link.group(1))  # Django moves the token into the session, then redirects
    assert form.status_code == 302
    assert (
        submit(trail, form.headers["location"], {"new_password1": NEW, "new_password2": NEW + "!"}).status_code == 200
    )
    assert submit(trail, form.headers["location"], {"new_password1": NEW, "new_password2": NEW}).status_code == 302
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [
        ("password_reset_requested_failed", None, IP),
        ("password_reset_requested", None, IP),
        ("password_reset_failed", None, IP),
        ("password_reset", None, IP),
    ]
    assert rows[-1][2]["http"]["route"] == "/django/reset/{uidb64}/{token}/"
    trail.assert_no_secret(link.group(2), NEW)


def test_a_post_to_the_emailed_token_url_is_no_reset(trail: Trail) -> None:
    # PasswordResetConfirmView moves a valid token into the session and redirects (302) for any method: a form
    # posted to the e-mailed link changes no password, and its redirect must not read as a completed reset
    from django.core import mail

    user = new_user()
    mail.outbox = []
    assert submit(trail, "/django/password_reset/", {"email": user.email}).status_code == 302
    link = re.search(r"http://testserver(/django/reset/[^/]+/([^/]+)/)", str(mail.outbox[0].body))
    assert link is not None
    answer = trail.client.post(link.group(1), data={"new_password1": NEW, "new_password2": NEW})
    assert answer.status_code == 302 and answer.headers["location"].endswith("/set-password/")
    user.refresh_from_db()
    assert user.check_password(PASSWORD) and not user.check_password(NEW)  # nothing was reset
    assert [(a, m["ip"]) for a, _, m in trail.rows()] == [("password_reset_requested", IP)]
    trail.assert_no_secret(link.group(2), NEW)


def test_logout_of_nobody_by_a_projects_own_view_is_no_logout(trail: Trail) -> None:
    # the example project's own logout view (not one the glue knows) calls logout() for an anonymous client:
    # Django announces that nobody was signed out, so the 204 must not read as a logout
    user = new_user()
    assert trail.client.post("/accounts/logout/").status_code == 204
    assert trail.client.post("/accounts/login/", json={"username": user.username, "password": PASSWORD}).is_success
    assert trail.client.post("/accounts/logout/").status_code == 204
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [("login", str(user.pk), IP), ("logout", str(user.pk), IP)]


def test_a_login_post_refused_by_csrf_is_no_failed_login(trail: Trail) -> None:
    # a cross-site page makes visitors' browsers post Django's login form with a name it chose: the CSRF check
    # refuses it (403) before any password is checked. Stored as login_failed, every visitor's IP would show a
    # failed sign-in as "admin", a brute force that never happened.
    user = new_user()
    assert trail.client.post("/admin/login/", data={"username": "admin", "password": "x"}).status_code == 403
    assert submit(trail, "/admin/login/", {"username": user.username, "password": "wrong"}).status_code == 200
    rows = trail.rows()
    assert [(a, m["ip"], m.get("identifier")) for a, _, m in rows] == [("login_failed", IP, user.username)]
