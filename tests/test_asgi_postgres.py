"""End to end: a FastAPI app behind AuditMiddleware writing to a real PostgreSQL server."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse

from audit_middleware import AuditMiddleware, AuditWriter, audit_context
from tests.asgi_helpers import PASSWORD, client, make_jwt
from tests.conftest import PgTarget

pytestmark = pytest.mark.anyio


def auth_app(user_ids: list[uuid.UUID]) -> FastAPI:
    accounts = {"alice@example.com": user_ids[0], "bob@example.com": user_ids[1]}
    app = FastAPI()

    @app.post("/auth/jwt/login")
    async def login(username: str = Form(), password: str = Form()) -> Any:
        if username not in accounts or password != PASSWORD:
            return JSONResponse({"detail": "LOGIN_BAD_CREDENTIALS"}, status_code=400)
        return {"access_token": make_jwt({"sub": str(accounts[username])}), "token_type": "bearer"}

    @app.post("/auth/jwt/logout")
    async def logout(request: Request) -> Any:
        audit_context(request).set_user(accounts["alice@example.com"])
        return JSONResponse(None, status_code=204)

    @app.post("/auth/reset-password")
    async def reset(request: Request) -> Any:
        body = await request.json()
        audit_context(request).update(user=accounts["bob@example.com"], method="email_link")
        return {"ok": bool(body.get("token"))}

    return app


async def all_rows_text(pg: Any) -> str:
    return " ".join(str(dict(r)) for r in await pg.fetch("SELECT * FROM {t}"))


async def test_rows_land_with_correct_columns_and_no_secret(pg: PgTarget, users: list[uuid.UUID]) -> None:
    writer = AuditWriter(pg.dsn, schema=pg.schema)
    app = auth_app(users)
    app.add_middleware(AuditMiddleware, writer=writer)
    reset_token = "rst-" + uuid.uuid4().hex
    async with client(app) as c:
        assert (
            await c.post("/auth/jwt/login", data={"username": "alice@example.com", "password": PASSWORD})
        ).is_success
        bad = await c.post(
            "/auth/jwt/login",
            data={"username": "bob@example.com", "password": "guess-" + PASSWORD},
            headers={"authorization": "Basic dXNlcjpodW50ZXIy", "x-forwarded-for": "6.6.6.6"},
        )
        assert bad.status_code == 400
        await c.post("/auth/jwt/logout", headers={"cookie": "fastapiusersauth=" + make_jwt({"sub": "x"})})
        await c.post("/auth/reset-password", json={"token": reset_token, "password": PASSWORD})
    await writer.aclose()

    rows = await pg.fetch("SELECT id, user_id, action, metadata, created_at FROM {t} ORDER BY created_at, id")
    assert [r["action"] for r in rows] == ["login", "login_failed", "logout", "password_reset"]
    login, failed, logout, reset = rows
    assert login["user_id"] == users[0] and logout["user_id"] == users[0] and reset["user_id"] == users[1]
    assert failed["user_id"] is None
    md = [json.loads(r["metadata"]) for r in rows]
    assert md[0]["ip"] == "10.0.0.1" and md[0]["identifier"] == "alice@example.com"
    assert md[0]["http"] == {**md[0]["http"], "method": "POST", "route": "/auth/jwt/login", "status": 200}
    assert md[1]["ip"] == "10.0.0.1" and md[1]["http"]["status"] == 400  # the peer is not a trusted proxy
    assert md[3]["method"] == "email_link"
    assert all(isinstance(r["id"], uuid.UUID) and r["created_at"] is not None for r in rows)
    text = await all_rows_text(pg)
    for secret in (PASSWORD, reset_token, "dXNlcjpodW50ZXIy", "fastapiusersauth="):
        assert secret not in text


async def test_owned_writer_flushes_on_lifespan_shutdown(pg: PgTarget, users: list[uuid.UUID]) -> None:
    app = auth_app(users)
    middleware = AuditMiddleware(app, dsn=pg.dsn, writer_options={"schema": pg.schema, "flush_interval": 60})
    messages = [{"type": "lifespan.startup"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        while not messages:
            async with client(middleware) as c:
                await c.post("/auth/jwt/login", data={"username": "alice@example.com", "password": PASSWORD})
            messages.append({"type": "lifespan.shutdown"})
        return messages.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await middleware({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    rows = await pg.rows()
    assert [(r["action"], r["user_id"]) for r in rows] == [("login", users[0])]
