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
    messages: list[dict[str, Any]] = [{"type": "lifespan.startup"}]
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


async def test_hostile_input_still_lands_as_a_clean_row(pg: PgTarget) -> None:
    from tests.asgi_helpers import Driver, http_scope, ok_app

    writer = AuditWriter(pg.dsn, schema=pg.schema)
    app = AuditMiddleware(ok_app(), writer=writer, audit_unmapped=True, trusted_proxies=["10.0.0.0/8"])
    headers = [
        (b"user-agent", b"evil\x00agent\xff\xfe" + b"A" * 10_000),
        (b"x-request-id", "ünïcode-id\x00".encode()),
        (b"x-forwarded-for", b"garbage, \x00, 999.1.1.1, " + b"1.1.1.1, " * 50),
        (b"content-type", b"application/json"),
        (b"referer", b"https://user:pa55@evil.example/\x00?token=abc"),
    ]
    body = (
        b'{"username": "a\\u0000b", "note": "\\ud800 lone surrogate", "password": "p\\u0000w", "deep": '
        + (b"[" * 200 + b"]" * 200)
        + b"}"
    )
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": body[:40], "more_body": True},
        {"type": "http.request", "body": body[40:]},
    ]
    driver = Driver(messages)
    scope = http_scope("POST", "/login\x00/../login", headers=headers, query_string=b"q=\xff\xfe&token=secret-q")
    await app(scope, driver.receive, driver.send)
    assert driver.status == 200
    await writer.aclose()
    [row] = await pg.fetch("SELECT action, metadata::text AS md FROM {t}")
    assert row["action"] in ("login", "login_attempt", "http_request")
    metadata = json.loads(row["md"])
    assert metadata["request_id"] != "ünïcode-id\x00" and len(metadata["user_agent"]) < 1100
    assert metadata["ip"] == "10.0.0.1"  # the garbage chain is kept but never believed
    for secret in ("pa55", "secret-q", "p\\u0000w", "p\x00w"):
        assert secret not in row["md"]
