"""Litestar's session-auth example (``litestar.security.session_auth.SessionAuth``, server-side sessions) under
AuditMiddleware, rows in real PostgreSQL.

The example's handlers (sign-up, login, the authenticated ``GET /user``) plus the logout every such app
adds (``request.clear_session()``). Its users carry integer ids here, as an autoincrement table gives
them: stored as ``metadata.user_ref``. No glue: Litestar's auth middleware leaves the user in
``scope["user"]`` before the handler runs, and the route template in ``scope["path_template"]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, Request, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import ClientException, NotAuthorizedException
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.params import JSONBody
from litestar.security.session_auth import SessionAuth
from pydantic import BaseModel, SecretStr

from tests.conftest import PgTarget
from tests.fastapi_helpers import CLIENT_IP, assert_no_secret, audit_table, audited_client, rows

pytestmark = pytest.mark.anyio

PASSWORD = "litestar-example-Pa55word!"


class User(BaseModel):
    id: int
    name: str
    email: str


class UserCreatePayload(BaseModel):
    name: str
    email: str
    password: SecretStr


class UserLoginPayload(BaseModel):
    email: str
    password: SecretStr


def example_app() -> Litestar:
    users: dict[int, User] = {}
    passwords: dict[str, tuple[int, str]] = {}  # e-mail -> (id, password); the example skips hashing too
    ids = itertools.count(41)

    async def retrieve_user_handler(session: dict[str, Any], connection: ASGIConnection[Any, Any, Any, Any]) -> Any:
        return users.get(session.get("user_id", -1))

    @post("/signup")
    async def signup(data: JSONBody[UserCreatePayload], request: Request[Any, Any, Any]) -> User:
        if data.email in passwords:
            raise ClientException("that e-mail is taken")
        user = User(id=next(ids), name=data.name, email=data.email)
        users[user.id] = user
        passwords[data.email] = (user.id, data.password.get_secret_value())
        request.set_session({"user_id": user.id})
        return user

    @post("/login")
    async def login(data: JSONBody[UserLoginPayload], request: Request[Any, Any, Any]) -> User:
        found = passwords.get(data.email)
        if found is None or found[1] != data.password.get_secret_value():
            raise NotAuthorizedException()
        request.set_session({"user_id": found[0]})
        return users[found[0]]

    @post("/logout", status_code=204)
    async def logout(request: Request[Any, Any, Any]) -> None:
        request.clear_session()

    @get("/user")
    async def get_user(request: Request[User, Any, Any]) -> User:
        return request.user

    session_auth = SessionAuth[User, ServerSideSessionBackend](
        retrieve_user_handler=retrieve_user_handler,
        session_backend_config=ServerSideSessionConfig(),
        exclude=["/login", "/signup", "/schema"],
    )
    return Litestar(
        route_handlers=[signup, login, logout, get_user],
        on_app_init=[session_auth.on_app_init],
        logging_config=None,  # its default configures the root logger with a queue thread (test isolation)
    )


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgTarget]:
    with audit_table(pg_dsn) as target:
        yield target


SIGNUP = {"name": "Ann", "email": "ann@example.com", "password": PASSWORD}


async def test_signup_login_and_logout_name_the_integer_user(pg: PgTarget) -> None:
    async with audited_client(example_app(), pg, routes={"GET /user": "profile_viewed"}) as c:
        assert (await c.post("/signup", json=SIGNUP)).status_code == 201
        c.cookies.clear()
        login = await c.post("/login", json={"email": "ann@example.com", "password": PASSWORD})
        session = c.cookies["session"]
        assert (await c.get("/user")).json()["id"] == 41
        logout = await c.post("/logout")
    assert login.status_code == 201 and logout.status_code == 204
    found = await rows(pg)
    assert [(row.action, row.user_id, row.metadata.get("user_ref")) for row in found] == [
        ("signup", None, "41"),
        ("login", None, "41"),
        ("profile_viewed", None, "41"),
        ("logout", None, "41"),
    ]
    assert [row.metadata["http"]["route"] for row in found] == ["/signup", "/login", "/user", "/logout"]
    assert all(row.metadata["ip"] == CLIENT_IP for row in found)
    assert_no_secret(found, PASSWORD, session)


async def test_wrong_password_and_duplicate_signup_fail_and_name_nobody(pg: PgTarget) -> None:
    async with audited_client(example_app(), pg) as c:
        assert (await c.post("/signup", json=SIGNUP)).status_code == 201
        c.cookies.clear()
        duplicate = await c.post("/signup", json=SIGNUP)
        wrong = await c.post("/login", json={"email": "ann@example.com", "password": "not-" + PASSWORD})
        anonymous_logout = await c.post("/logout")
    assert (duplicate.status_code, wrong.status_code, anonymous_logout.status_code) == (400, 401, 401)
    found = await rows(pg)
    assert [(row.action, row.metadata.get("user_ref")) for row in found] == [
        ("signup", "41"),
        ("signup_failed", None),
        ("login_failed", None),
        ("logout_failed", None),
    ]
    assert found[2].metadata["identifier"] == "ann@example.com"
    assert_no_secret(found, PASSWORD)


async def test_paths_and_methods_litestars_router_refuses_are_no_auth_events(pg: PgTarget) -> None:
    """An unserved ``/api/login`` (404) and ``GET /logout`` on the POST-only logout (405) are answered by
    Litestar's router before any handler: no password was checked, nobody was signed out."""
    async with audited_client(example_app(), pg) as c:
        assert (await c.post("/signup", json=SIGNUP)).status_code == 201
        wrong = {"email": "ann@example.com", "password": "not-" + PASSWORD}
        assert (await c.post("/api/login", json=wrong)).status_code == 404
        assert (await c.get("/logout")).status_code == 405
    assert [row.action for row in await rows(pg)] == ["signup"]
