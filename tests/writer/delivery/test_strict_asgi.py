"""Strict routes in the ASGI middleware: the response waits for the commit and fails closed (503)."""

from __future__ import annotations

from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from audit_middleware import AuditMiddleware, AuditWriter
from tests.asgi_helpers import client, http_scope, read_body
from tests.conftest import PgTarget
from tests.faults import FaultProxy

pytestmark = pytest.mark.anyio

SESSION = b"session=s3ss10n-t0ken; HttpOnly"


async def reset_app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    """A password reset that issues a session cookie."""
    await read_body(receive)
    headers = [(b"content-type", b"application/json"), (b"set-cookie", SESSION)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"ok": true}'})


def strict_app(writer: AuditWriter, timeout: float) -> AuditMiddleware:
    return AuditMiddleware(
        reset_app,
        writer=writer,
        preset=False,
        routes={"POST /reset": {"action": "password_reset", "strict": True}, "POST /other": "other"},
        strict_timeout=timeout,
    )


def writer_for(dsn: str, pg: PgTarget, spool_dir: Path) -> AuditWriter:
    return AuditWriter(
        dsn, schema=pg.schema, spool_dir=str(spool_dir), flush_interval=30.0, connect_timeout=5.0, write_timeout=5.0
    )


async def test_strict_route_responds_after_its_event_is_committed(fpg: PgTarget, spool_dir: Path) -> None:
    async with writer_for(fpg.dsn, fpg, spool_dir) as writer, client(strict_app(writer, 10.0)) as http:
        response = await http.post("/reset", json={"email": "a@example.com"})
        # flush_interval is 30 s: only the strict path can have written the row by now
        rows = await fpg.fetch("SELECT action FROM {t}")
    assert response.status_code == 200 and response.headers["set-cookie"] == SESSION.decode()
    assert [r["action"] for r in rows] == ["password_reset"]


async def test_strict_route_fails_closed_when_the_event_cannot_be_committed(
    fpg: PgTarget, proxy: FaultProxy, spool_dir: Path
) -> None:
    proxy.set_mode("blackhole")
    async with writer_for(proxy.dsn(fpg.dsn), fpg, spool_dir) as writer:
        async with client(strict_app(writer, 0.3)) as http:
            refused = await http.post("/reset", json={"email": "a@example.com"})
            normal = await http.post("/other", json={})
        assert refused.status_code == 503
        assert "set-cookie" not in refused.headers  # no session issued
        assert normal.status_code == 200  # non-strict routes never wait for the database
        proxy.set_mode("pass")
        await writer.flush(timeout=20)
    actions = sorted(r["action"] for r in await fpg.fetch("SELECT action FROM {t}"))
    assert actions == ["other", "password_reset"]  # the attempt itself is still recorded, later


async def test_a_completed_response_is_still_delivered_when_the_app_raises_afterwards(
    pg: PgTarget, spool_dir: Path
) -> None:
    # A Starlette BackgroundTask that fails after the response: without the middleware the client has its
    # 200; a strict route held the response and used to drop it for an empty 500.
    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await reset_app(scope, receive, send)
        raise RuntimeError("mail server down")

    async with writer_for(pg.dsn, pg, spool_dir) as writer:
        middleware = AuditMiddleware(
            app, writer=writer, preset=False, routes={"POST /reset": {"action": "r", "strict": True}}
        )
        transport = httpx.ASGITransport(app=middleware, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.post("/reset", json={"password": "x"})
        assert (response.status_code, response.json()) == (200, {"ok": True})
        assert writer.stats().written == 1  # committed before the response went out
    assert await count_rows(pg) == 1


async def test_a_strict_request_whose_client_left_is_recorded_once(pg: PgTarget, spool_dir: Path) -> None:
    async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        assert (await receive())["type"] == "http.disconnect"  # the client went away: nothing to answer

    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"{}", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: MutableMapping[str, Any]) -> None:
        raise AssertionError("nothing is sent to a client that left")

    async with writer_for(pg.dsn, pg, spool_dir) as writer:
        middleware = AuditMiddleware(
            app, writer=writer, preset=False, routes={"POST /reset": {"action": "r", "strict": True}}
        )
        await middleware(http_scope("POST", "/reset"), receive, send)
        await writer.flush(10)
        stats = writer.stats()
    assert (stats.written, stats.rejected, stats.dead_lettered) == (1, 0, 0)  # once: no duplicate id refused
    assert await count_rows(pg) == 1


async def count_rows(pg: PgTarget) -> int:
    conn = await asyncpg.connect(pg.dsn)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{pg.schema}".user_audit_logs'))
    finally:
        await conn.close()
