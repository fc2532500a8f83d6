"""Strict routes in the WSGI middleware: the response waits for the commit and fails closed (503)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from audit_middleware import AuditWriter, AuditWSGIMiddleware
from audit_middleware.threaded import BackgroundWriter
from tests.conftest import PgTarget
from tests.faults import FaultProxy

pytestmark = pytest.mark.anyio

SESSION = "session=s3ss10n-t0ken; HttpOnly"


def reset_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A password reset that issues a session cookie, writing part of its body through write()."""
    environ["wsgi.input"].read()
    write = start_response("200 OK", [("Content-Type", "application/json"), ("Set-Cookie", SESSION)])
    write(b'{"ok"')
    return [b": true}"]


def failing_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    raise RuntimeError("boom")


def strict_middleware(dsn: str, pg: PgTarget, spool_dir: Path, timeout: float, app: Any = reset_app) -> Any:
    def make() -> AuditWriter:
        return AuditWriter(
            dsn, schema=pg.schema, spool_dir=str(spool_dir), flush_interval=30.0, connect_timeout=5.0, write_timeout=5.0
        )

    return AuditWSGIMiddleware(
        app,
        writer=BackgroundWriter(make),
        preset=False,
        routes={"POST /reset": {"action": "password_reset", "strict": True}, "POST /other": "other"},
        strict_timeout=timeout,
    )


async def post(middleware: Any, path: str) -> TestResponse:
    # The request blocks its thread while the commit is awaited, as a WSGI worker thread would.
    client = Client(middleware)
    return await asyncio.to_thread(client.post, path, json={"email": "a@example.com"}, buffered=True)


async def test_strict_wsgi_route_responds_after_its_event_is_committed(fpg: PgTarget, spool_dir: Path) -> None:
    middleware = strict_middleware(fpg.dsn, fpg, spool_dir, 10.0)
    try:
        response = await post(middleware, "/reset")
        # flush_interval is 30 s: only the strict path can have written the row by now
        rows = await fpg.fetch("SELECT action FROM {t}")
    finally:
        await asyncio.to_thread(middleware.close, 10.0)
    assert response.status_code == 200 and response.headers["Set-Cookie"] == SESSION
    assert response.data == b'{"ok": true}'  # write() bytes, then the iterable's, unchanged
    assert [r["action"] for r in rows] == ["password_reset"]


async def test_strict_wsgi_route_fails_closed_when_the_event_cannot_be_committed(
    fpg: PgTarget, proxy: FaultProxy, spool_dir: Path
) -> None:
    proxy.set_mode("blackhole")
    middleware = strict_middleware(proxy.dsn(fpg.dsn), fpg, spool_dir, 0.3)
    try:
        refused = await post(middleware, "/reset")
        normal = await post(middleware, "/other")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert "Set-Cookie" not in refused.headers  # no session issued
        assert normal.status_code == 200  # non-strict routes never wait for the database
        proxy.set_mode("pass")
        await asyncio.to_thread(middleware.flush, 20.0)
    finally:
        await asyncio.to_thread(middleware.close, 10.0)
    actions = sorted(r["action"] for r in await fpg.fetch("SELECT action FROM {t}"))
    assert actions == ["other", "password_reset"]  # the attempt itself is still recorded, later


async def test_strict_wsgi_route_app_exception_propagates_and_is_recorded(fpg: PgTarget, spool_dir: Path) -> None:
    middleware = strict_middleware(fpg.dsn, fpg, spool_dir, 10.0, app=failing_app)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            await post(middleware, "/reset")
        await asyncio.to_thread(middleware.flush, 20.0)
    finally:
        await asyncio.to_thread(middleware.close, 10.0)
    rows = await fpg.fetch("SELECT action, metadata FROM {t}")
    assert [r["action"] for r in rows] == ["password_reset_failed"]
