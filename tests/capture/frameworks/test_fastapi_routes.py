"""http.route is the full template under FastAPI's include_router() prefixes, and the user's routes beat the preset.

FastAPI >= 0.137 shares one APIRoute between every include_router() of its router, so the route object
only knows ``/login``; scripts/test-compat runs this module on FastAPI 0.136 too, where the route object
itself carries the prefix.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from audit_middleware import AuditMiddleware, AuditWriter
from audit_middleware.capture.core import AuditCore
from audit_middleware.testing import MemorySink

pytestmark = pytest.mark.anyio


def prefixed_app() -> FastAPI:
    auth = APIRouter()

    @auth.post("/login")
    async def login() -> dict[str, str]:
        return {"access_token": "opaque", "token_type": "bearer"}  # (a login that says nothing is an attempt)

    @auth.post("/logout", status_code=204)
    async def logout() -> None:
        return None

    devices = APIRouter(prefix="/devices")

    @devices.put("/{device_id}")
    async def device(device_id: int) -> dict[str, int]:
        return {"device": device_id}

    auth.include_router(devices, prefix="/me")
    app = FastAPI()
    app.include_router(auth, prefix="/auth/jwt")
    app.include_router(auth, prefix="/auth/cookie")
    sub = FastAPI()
    sub.include_router(auth, prefix="/v2")
    app.mount("/mobile", sub)
    return app


def client(app: Any, root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 1234), root_path=root_path)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_http_route_includes_every_router_prefix_and_the_mount(writer: AuditWriter, sink: MemorySink) -> None:
    app = AuditMiddleware(prefixed_app(), writer=writer, routes={"PUT **/me/devices/{id}": "device_changed"})
    async with client(app) as c:
        await c.post("/auth/jwt/login")
        await c.post("/auth/cookie/login")
        await c.put("/auth/cookie/me/devices/7")
        await c.post("/mobile/v2/logout")
    await writer.flush()
    assert [(e.action, e.metadata["http"]["route"]) for e in sink.events] == [
        ("login", "/auth/jwt/login"),
        ("login", "/auth/cookie/login"),
        ("device_changed", "/auth/cookie/me/devices/{device_id}"),
        ("logout", "/mobile/v2/logout"),
    ]


async def test_http_route_under_a_servers_root_path_leaves_the_root_path_out(
    writer: AuditWriter, sink: MemorySink
) -> None:
    app = AuditMiddleware(prefixed_app(), writer=writer)
    async with client(app, root_path="/api") as c:
        await c.post("/api/auth/cookie/login")
        await c.post("/api/mobile/v2/login")
    await writer.flush()
    assert [e.metadata["http"]["route"] for e in sink.events] == ["/auth/cookie/login", "/mobile/v2/login"]


async def test_a_route_the_user_excluded_or_renamed_stays_so(writer: AuditWriter, sink: MemorySink) -> None:
    routes = {"POST /auth/cookie/login": "cookie_login", "POST /auth/jwt/logout": None}
    app = AuditMiddleware(prefixed_app(), writer=writer, routes=routes)
    async with client(app) as c:
        await c.post("/auth/cookie/login")
        await c.post("/auth/jwt/logout")
        await c.post("/auth/cookie/logout")
    await writer.flush()
    assert [(e.action, e.metadata["http"]["route"]) for e in sink.events] == [
        ("cookie_login", "/auth/cookie/login"),
        ("logout", "/auth/cookie/logout"),
    ]


# -- rematch: a template that lacks the path's prefix (as FastAPI 0.137-0.165 route objects have) ----------


def test_a_preset_route_matching_the_template_does_not_replace_the_users_route() -> None:
    core = AuditCore(routes={"POST /auth/cookie/login": "cookie_login", "POST /auth/jwt/logout": None})
    renamed = core.match("POST", "/auth/cookie/login")
    excluded = core.match("POST", "/auth/jwt/logout")
    assert renamed is not None and excluded is not None
    assert core.rematch("POST", "/login", renamed) is renamed
    assert core.rematch("POST", "/logout", excluded) is excluded


def test_the_template_still_picks_between_routes_of_the_same_kind() -> None:
    core = AuditCore(routes={"POST /files/upload": "upload", "POST /files/{name}": "file_replaced"})
    by_path = core.match("POST", "/files/upload")
    assert by_path is not None and by_path.spec is not None and by_path.spec.action == "upload"
    by_template = core.rematch("POST", "/files/{name}", by_path)  # the framework ran its /files/{name} view
    assert by_template is not None and by_template.spec is not None and by_template.spec.action == "file_replaced"
    preset = core.match("POST", "/api/login")
    assert preset is not None
    user = core.rematch("POST", "/files/{name}", preset)  # a user route found by the template beats the preset
    assert user is not None and user.spec is not None and user.spec.action == "file_replaced"
