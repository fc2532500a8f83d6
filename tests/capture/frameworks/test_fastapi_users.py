"""fastapi-users 15 (real package, SQLite user database) under AuditMiddleware, rows in real PostgreSQL.

Every flow fastapi-users serves, in success and failure: register, login and logout over the bearer and
the cookie transport, forgot/reset password, request-verify/verify, and a password set through
``PATCH /users/me``. Each checks the action, the user (fastapi-users ids are UUIDs: ``user_id``), the
client IP, and that no issued secret (JWT, cookie, reset or verify token, password) is in the row.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from tests.conftest import PgTarget
from tests.fastapi_helpers import CLIENT_IP, Row, assert_no_secret, audit_table, audited_client, rows
from tests.fastapi_users_app import PASSWORD, UsersApp, build, create_tables

pytestmark = pytest.mark.anyio

EMAIL = "ann@example.com"


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgTarget]:
    with audit_table(pg_dsn) as target:
        yield target


@pytest.fixture
async def users_app(tmp_path: Path) -> AsyncIterator[UsersApp]:
    built = build(tmp_path / "users.db")
    await create_tables(built.engine)
    yield built
    await built.aclose()


async def register(c: httpx.AsyncClient, email: str = EMAIL) -> uuid.UUID:
    response = await c.post("/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["id"])


async def bearer_login(c: httpx.AsyncClient, email: str = EMAIL) -> str:
    response = await c.post("/auth/jwt/login", data={"username": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def by_action(found: list[Row], action: str) -> Row:
    matching = [row for row in found if row.action == action]
    assert len(matching) == 1, [row.action for row in found]
    return matching[0]


def assert_from_client(found: list[Row]) -> None:
    assert found and all(row.metadata["ip"] == CLIENT_IP for row in found)


# -- register ----------------------------------------------------------------------------------------


async def test_register_names_the_new_user_and_a_duplicate_is_signup_failed(users_app: UsersApp, pg: PgTarget) -> None:
    async with audited_client(users_app.app, pg) as c:
        user_id = await register(c)
        duplicate = await c.post("/auth/register", json={"email": EMAIL, "password": PASSWORD})
    assert duplicate.status_code == 400 and duplicate.json()["detail"] == "REGISTER_USER_ALREADY_EXISTS"
    found = await rows(pg)
    assert [(row.action, row.user_id) for row in found] == [("signup", user_id), ("signup_failed", None)]
    assert found[0].metadata["auth"]["source"] == "fastapi_users.on_after_register"
    assert_from_client(found)
    assert_no_secret(found, PASSWORD)


# -- login and logout: bearer --------------------------------------------------------------------------


async def test_bearer_login_names_the_user_and_a_wrong_password_is_login_failed(
    users_app: UsersApp, pg: PgTarget
) -> None:
    async with audited_client(users_app.app, pg) as c:
        user_id = await register(c)
        token = await bearer_login(c)
        wrong = await c.post("/auth/jwt/login", data={"username": EMAIL, "password": "not-" + PASSWORD})
    assert wrong.status_code == 400 and wrong.json()["detail"] == "LOGIN_BAD_CREDENTIALS"
    found = await rows(pg)
    assert [(row.action, row.user_id) for row in found[1:]] == [("login", user_id), ("login_failed", None)]
    assert found[1].metadata["http"]["route"] == "/auth/jwt/login"
    assert found[1].metadata["auth"]["source"] == "fastapi_users.on_after_login"
    assert found[2].metadata["identifier"] == EMAIL
    assert_from_client(found)
    assert_no_secret(found, PASSWORD, token)


async def test_bearer_logout_names_the_user_the_app_authenticated(users_app: UsersApp, pg: PgTarget) -> None:
    async with audited_client(users_app.app, pg) as c:
        user_id = await register(c)
        token = await bearer_login(c)
        response = await c.post("/auth/jwt/logout", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 204
    logout = by_action(await rows(pg), "logout")
    assert logout.user_id == user_id
    assert logout.metadata["http"]["route"] == "/auth/jwt/logout"
    assert logout.metadata["ip"] == CLIENT_IP
    assert_no_secret([logout], token, PASSWORD)


async def test_bearer_logout_with_a_forged_token_names_nobody(users_app: UsersApp, pg: PgTarget) -> None:
    async with audited_client(users_app.app, pg) as c:
        user_id = await register(c)
        token = await bearer_login(c)
        head, payload, _signature = token.split(".")
        forged = f"{head}.{payload}.{'A' * 43}"  # the victim's claims, a signature the app refuses
        response = await c.post("/auth/jwt/logout", headers={"authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    logout = by_action(await rows(pg), "logout_failed")
    assert logout.user_id is None and str(user_id) not in logout.text
    assert_no_secret([logout], token, forged)


# -- login and logout: cookie --------------------------------------------------------------------------


async def test_cookie_login_and_logout_name_the_user(users_app: UsersApp, pg: PgTarget) -> None:
    async with audited_client(users_app.app, pg) as c:
        user_id = await register(c)
        login = await c.post("/auth/cookie/login", data={"username": EMAIL, "password": PASSWORD})
        cookie = login.cookies["fastapiusersauth"]
        logout = await c.post("/auth/cookie/logout")
    assert login.status_code == 204 and logout.status_code == 204
    found = await rows(pg)
    assert [(row.action, row.user_id) for row in found[1:]] == [("login", user_id), ("logout", user_id)]
    assert [row.metadata["http"]["route"] for row in found[1:]] == ["/auth/cookie/login", "/auth/cookie/logout"]
    assert_from_client(found)
    assert_no_secret(found, cookie, PASSWORD)


async def test_cookie_login_with_a_wrong_password_is_login_failed(users_app: UsersApp, pg: PgTarget) -> None:
    async with audited_client(users_app.app, pg) as c:
        await register(c)
        wrong = await c.post("/auth/cookie/login", data={"username": EMAIL, "password": "not-" + PASSWORD})
    assert wrong.status_code == 400 and "set-cookie" not in wrong.headers
    failed = by_action(await rows(pg), "login_failed")
    assert failed.user_id is None and failed.metadata["identifier"] == EMAIL
    assert_no_secret([failed], PASSWORD)


async def test_a_login_path_no_route_takes_is_no_auth_event(users_app: UsersApp, pg: PgTarget) -> None:
    """``//auth/jwt/login`` and an unserved prefix are answered 404 by FastAPI's router: no view checked a
    password, so they are no failed logins (they would inflate the failed-login counts ``stats`` shows)."""
    form = {"username": EMAIL, "password": "not-" + PASSWORD}
    async with audited_client(users_app.app, pg) as c:
        assert (await c.post("//auth/jwt/login", data=form)).status_code == 404
        assert (await c.post("/auth/nowhere/login", data=form)).status_code == 404
        assert (await c.post("/auth/jwt/login", data=form)).status_code == 400  # the real view: a failed login
    assert [row.action for row in await rows(pg)] == ["login_failed"]


async def test_a_get_on_the_post_only_logout_route_is_no_logout(users_app: UsersApp, pg: PgTarget) -> None:
    """fastapi-users logs out on ``POST``; FastAPI answers ``GET /auth/jwt/logout`` with 405 before any view
    runs. Nobody was (or failed to be) signed out: no ``logout_failed`` naming the caller."""
    async with audited_client(users_app.app, pg) as c:
        await register(c)
        token = await bearer_login(c)
        assert (await c.get("/auth/jwt/logout", headers={"authorization": f"Bearer {token}"})).status_code == 405
    assert [row.action for row in await rows(pg)] == ["signup", "login"]


# -- password reset --------------------------------------------------------------------------------------


async def test_forgot_password_names_no_actor_and_reset_names_the_user(users_app: UsersApp, pg: PgTarget) -> None:
    # anyone can type a user's e-mail into the reset form: the anonymous requester is not that user (user_id is
    # "the user who performed the action"); the e-mail stays as metadata.identifier
    new_password = "an0ther correct horse!"
    async with audited_client(users_app.app, pg) as c:
        user_id = await register(c)
        assert (await c.post("/auth/forgot-password", json={"email": EMAIL})).status_code == 202
        token = users_app.issued["reset"]
        reset = await c.post("/auth/reset-password", json={"token": token, "password": new_password})
        assert reset.status_code == 200
        login = await c.post("/auth/jwt/login", data={"username": EMAIL, "password": new_password})
    assert login.status_code == 200
    found = await rows(pg)
    assert [(row.action, row.user_id) for row in found[1:3]] == [
        ("password_reset_requested", None),
        ("password_reset", user_id),
    ]
    assert found[1].metadata["identifier"] == EMAIL
    assert found[2].metadata["auth"]["source"] == "fastapi_users.on_after_reset_password"
    assert_from_client(found)
    assert_no_secret(found, token, new_password, login.json()["access_token"])


async def test_reset_password_with_a_bad_token_is_password_reset_failed(users_app: UsersApp, pg: PgTarget) -> None:
    async with audited_client(users_app.app, pg) as c:
        await register(c)
        await c.post("/auth/forgot-password", json={"email": EMAIL})
        token = users_app.issued["reset"]
        bad = await c.post("/auth/reset-password", json={"token": token[:-4] + "AAAA", "password": "whatever-123"})
    assert bad.status_code == 400 and bad.json()["detail"] == "RESET_PASSWORD_BAD_TOKEN"
    failed = by_action(await rows(pg), "password_reset_failed")
    assert failed.user_id is None
    assert_no_secret([failed], token, token[:-4], "whatever-123")


async def test_forgot_password_for_an_unknown_email_names_nobody(users_app: UsersApp, pg: PgTarget) -> None:
    async with audited_client(users_app.app, pg) as c:
        response = await c.post("/auth/forgot-password", json={"email": "nobody@example.com"})
    assert response.status_code == 202  # fastapi-users answers the same, to hide who has an account
    requested = by_action(await rows(pg), "password_reset_requested")
    assert requested.user_id is None and "auth" not in requested.metadata


# -- e-mail verification --------------------------------------------------------------------------------


async def test_request_verify_names_no_actor_and_verify_names_the_user(users_app: UsersApp, pg: PgTarget) -> None:
    async with audited_client(users_app.app, pg) as c:
        user_id = await register(c)
        assert (await c.post("/auth/request-verify-token", json={"email": EMAIL})).status_code == 202
        token = users_app.issued["verify"]
        bad = await c.post("/auth/verify", json={"token": token[:-4] + "AAAA"})
        good = await c.post("/auth/verify", json={"token": token})
    assert bad.status_code == 400 and good.status_code == 200 and good.json()["is_verified"] is True
    found = await rows(pg)
    assert [(row.action, row.user_id) for row in found[1:]] == [
        ("email_verification_requested", None),  # an anonymous request naming an e-mail
        ("email_verified_failed", None),
        ("email_verified", user_id),
    ]
    assert_from_client(found)
    assert_no_secret(found, token, token[:-4])


# -- password change (PATCH /users/me) ------------------------------------------------------------------


async def test_password_set_through_users_me_is_a_password_change(users_app: UsersApp, pg: PgTarget) -> None:
    new_password = "s3cond correct horse!"
    async with audited_client(users_app.app, pg) as c:
        user_id = await register(c)
        token = await bearer_login(c)
        auth = {"authorization": f"Bearer {token}"}
        changed = await c.patch("/users/me", json={"password": new_password}, headers=auth)
        renamed = await c.patch("/users/me", json={"email": "ann2@example.com"}, headers=auth)
    assert changed.status_code == 200 and renamed.status_code == 200
    found = await rows(pg)
    change = by_action(found, "password_change")  # the e-mail change is no auth event: no row
    assert change.user_id == user_id and change.metadata["http"]["route"] == "/users/me"
    assert len(found) == 3
    assert_no_secret(found, token, new_password)


async def test_a_null_password_in_users_me_is_no_password_change(users_app: UsersApp, pg: PgTarget) -> None:
    """``{"password": null}`` reaches ``on_after_update``'s ``update_dict`` (fastapi-users dumps what was set,
    None included) yet leaves the password as it was: no password changed, no row."""
    async with audited_client(users_app.app, pg) as c:
        await register(c)
        token = await bearer_login(c)
        unchanged = await c.patch("/users/me", json={"password": None}, headers={"authorization": f"Bearer {token}"})
        still = await c.post("/auth/jwt/login", data={"username": EMAIL, "password": PASSWORD})
    assert unchanged.status_code == 200 and still.status_code == 200
    assert [row.action for row in await rows(pg)] == ["signup", "login", "login"]


async def test_a_superuser_setting_another_users_password_never_names_the_account_acted_upon(
    users_app: UsersApp, pg: PgTarget
) -> None:
    """``PATCH /users/{id}`` runs the same ``on_after_update`` hook with the *target* user; the row's user is who
    performed the action (the table contract), never the account acted upon. The route is unmapped, so
    ``audit_user`` (audited requests only) does not name the superuser either: the row records less."""
    from sqlalchemy import text

    new_password = "set by the admin 9!"
    async with audited_client(users_app.app, pg) as c:
        await register(c, "admin@example.com")
        bob_id = await register(c, "bob@example.com")
        async with users_app.engine.begin() as conn:
            await conn.execute(text("UPDATE user SET is_superuser = 1 WHERE email = 'admin@example.com'"))
        token = await bearer_login(c, "admin@example.com")
        changed = await c.patch(
            f"/users/{bob_id}", json={"password": new_password}, headers={"authorization": f"Bearer {token}"}
        )
    assert changed.status_code == 200
    found = await rows(pg)
    change = by_action(found, "password_change")
    assert change.user_id is None and "user_ref" not in change.metadata
    assert_no_secret(found, token, new_password)


# -- the user's routes win (FastAPI >= 0.137 drops the prefix from scope["route"].path) --------------


async def test_the_users_routes_win_under_include_router_prefixes(tmp_path: Path, pg: PgTarget) -> None:
    plain = build(tmp_path / "plain.db", audited=False)  # no glue: the routes and the response decide
    await create_tables(plain.engine)
    cookie_login = {"action": "cookie_login", "user_from_response": True}
    routes: dict[str, Any] = {"POST /auth/cookie/login": cookie_login, "POST /auth/jwt/logout": None}
    async with audited_client(plain.app, pg, routes=routes) as c:
        user_id = await register(c)
        token = await bearer_login(c)
        assert (await c.post("/auth/cookie/login", data={"username": EMAIL, "password": PASSWORD})).is_success
        assert (await c.post("/auth/jwt/logout", headers={"authorization": f"Bearer {token}"})).is_success
    await plain.aclose()
    found = await rows(pg)
    assert [(row.action, row.user_id) for row in found] == [
        ("signup", user_id),
        ("login", user_id),
        ("cookie_login", user_id),
    ]
    assert [row.metadata["http"]["route"] for row in found] == [
        "/auth/register",
        "/auth/jwt/login",
        "/auth/cookie/login",
    ]


# -- the glue itself ------------------------------------------------------------------------------------


async def test_a_hook_that_calls_super_reports_its_event_once() -> None:
    from fastapi_users import BaseUserManager, UUIDIDMixin
    from starlette.requests import Request

    from audit_middleware.capture.evidence import EVIDENCE_KEY
    from audit_middleware.capture.frameworks.fastapi import AuditedUserManager

    class Manager(AuditedUserManager, UUIDIDMixin, BaseUserManager[Any, uuid.UUID]):
        async def on_after_login(self, user: Any, request: Request | None = None, response: Any = None) -> None:
            await super().on_after_login(user, request, response)

    class Stricter(Manager):
        async def on_after_login(self, user: Any, request: Request | None = None, response: Any = None) -> None:
            await super().on_after_login(user, request, response)

    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/auth/jwt/login", "headers": []}
    await Stricter(user_db=cast(Any, None)).on_after_login("user-1", Request(scope))
    assert [(e.action, e.user, e.source) for e in scope[EVIDENCE_KEY]] == [
        ("login", "user-1", "fastapi_users.on_after_login")
    ]


async def test_a_failing_user_id_reader_leaves_the_request_alone(tmp_path: Path, pg: PgTarget) -> None:
    from fastapi import Depends, FastAPI

    from audit_middleware.capture.frameworks.fastapi import audit_user

    def broken(user: Any) -> Any:
        raise KeyError("session-id-abc")

    app = FastAPI(dependencies=[Depends(audit_user(lambda: {"name": "ann"}, user_id=broken))])

    @app.post("/auth/logout")
    async def logout() -> dict[str, bool]:
        return {"ok": True}

    async with audited_client(app, pg) as c:
        response = await c.post("/auth/logout")
    assert response.status_code == 200 and response.json() == {"ok": True}
    [row] = await rows(pg)
    assert (row.action, row.user_id, row.metadata.get("user_ref")) == ("logout", None, None)
