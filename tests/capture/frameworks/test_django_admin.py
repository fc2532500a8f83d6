"""Django's admin login behind AuditWSGIMiddleware with the Django glue: its failures re-render the form with
200 (a wrong password, and a valid user who is not staff) and must be stored as failures."""

from __future__ import annotations

import uuid
from typing import Any

from tests.django_helpers import PASSWORD, Trail, form_token

IP = "10.0.0.11"


def admin_login(trail: Trail, username: str, password: str) -> Any:
    token = form_token(trail.client.get("/admin/login/").text)  # the admin's login is CSRF-protected
    form = {"username": username, "password": password, "csrfmiddlewaretoken": token, "next": "/admin/"}
    return trail.client.post("/admin/login/", data=form)


def test_admin_login_failures_and_success(trail: Trail) -> None:
    from django.contrib.auth.models import User

    name = "a" + uuid.uuid4().hex[:10]
    staff = User.objects.create_user(name, f"{name}@example.com", PASSWORD, is_staff=True)
    visitor = User.objects.create_user(name + "v", f"{name}v@example.com", PASSWORD)
    assert admin_login(trail, staff.username, "wrong").status_code == 200
    assert admin_login(trail, visitor.username, PASSWORD).status_code == 200  # right password, not staff
    assert admin_login(trail, staff.username, PASSWORD).status_code == 302
    cookie = trail.client.cookies.get("sessionid")
    assert cookie
    assert (
        trail.client.post(
            "/admin/logout/", data={"csrfmiddlewaretoken": form_token(trail.client.get("/admin/password_change/").text)}
        ).status_code
        == 200
    )
    rows = trail.rows()
    assert [(a, u, m["ip"]) for a, u, m in rows] == [
        ("login_failed", None, IP),
        ("login_failed", None, IP),
        ("login", str(staff.pk), IP),
        ("logout", str(staff.pk), IP),
    ]
    assert [m.get("identifier") for _, _, m in rows[:2]] == [staff.username, visitor.username]
    trail.assert_no_secret(PASSWORD, cookie)
