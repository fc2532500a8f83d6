"""AuditMiddleware around a Litestar app: route templates, the user Litestar's auth middleware sets, the preset."""

from __future__ import annotations

from typing import Any

import pytest
from litestar import Litestar, Request, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware

from audit_middleware import AuditMiddleware, AuditWriter
from audit_middleware.testing import MemorySink
from tests.asgi_helpers import PASSWORD, UID, client

pytestmark = pytest.mark.anyio

SESSIONS = {"session-token-of-ann": UID}


class SessionAuth(AbstractAuthenticationMiddleware):
    """The app's own authentication: a session token it issued names the user (scope["user"])."""

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        user = SESSIONS.get(connection.headers.get("x-session", ""))
        if user is None:
            raise NotAuthorizedException()
        return AuthenticationResult(user={"id": user}, auth="session")


@post("/auth/login", exclude_from_auth=True)
async def login(request: Request[Any, Any, Any]) -> dict[str, str]:
    data = await request.json()
    if data.get("password") != PASSWORD:
        raise NotAuthorizedException()
    return {"user_id": UID, "session": "session-token-of-ann"}


@post("/auth/logout", status_code=204)
async def logout(request: Request[Any, Any, Any]) -> None:
    return None


@get("/projects/{project_id:int}/export")
async def export(request: Request[Any, Any, Any]) -> dict[str, int]:
    return {"project": request.path_params["project_id"]}


def litestar_app() -> Litestar:
    return Litestar(
        [login, logout, export],
        middleware=[DefineMiddleware(SessionAuth, exclude_from_auth_key="exclude_from_auth")],
        logging_config=None,  # Litestar's default configures the root logger with a queue thread (test isolation)
    )


async def test_litestar_login_logout_and_a_mapped_route(anyio_backend: str) -> None:
    sink = MemorySink()
    writer = AuditWriter(sink=sink)
    app = AuditMiddleware(litestar_app(), writer=writer, routes={"GET /projects/*/export": "project_exported"})
    try:
        async with client(app) as c:
            ok = await c.post("/auth/login", json={"username": "ann@example.com", "password": PASSWORD})
            bad = await c.post("/auth/login", json={"username": "mallory", "password": "not-the-password"})
            exported = await c.get("/projects/7/export", headers={"x-session": ok.json()["session"]})
            out = await c.post("/auth/logout", headers={"x-session": ok.json()["session"]})
        assert (ok.status_code, bad.status_code, exported.json(), out.status_code) == (201, 401, {"project": 7}, 204)
        await writer.flush()
    finally:
        await writer.aclose()
    assert sink.actions() == ["login", "login_failed", "project_exported", "logout"]
    login_event, failed, export_event, logout_event = sink.events
    assert str(login_event.user_id) == UID and login_event.metadata["identifier"] == "ann@example.com"
    assert failed.user_id is None and failed.metadata["identifier"] == "mallory"
    assert str(export_event.user_id) == UID and str(logout_event.user_id) == UID  # scope["user"], set by Litestar
    # The route Litestar dispatched to (its path_template), not the wildcard key that matched the path.
    assert export_event.metadata["http"]["route"] == "/projects/{project_id}/export"
    assert login_event.metadata["http"]["route"] == "/auth/login"
    sink.assert_no_secret(PASSWORD, "not-the-password", "session-token-of-ann")
