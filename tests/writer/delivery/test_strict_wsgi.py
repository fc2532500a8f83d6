"""Strict routes in the WSGI middleware: the response waits for the commit and fails closed (503)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client, TestResponse

from audit_middleware import AuditWriter, AuditWSGIMiddleware
from audit_middleware.writer.threaded import BackgroundWriter
from tests.conftest import PgTarget
from tests.faults import FaultProxy
from tests.wsgi_helpers import environ_for

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


class _ClosingWithError:
    """A response whose close() fails after its body was produced (Flask's call_on_close raising)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Any:
        return iter(self.chunks)

    def close(self) -> None:
        raise RuntimeError("mail server down")


def closing_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json")])
    return _ClosingWithError([b'{"changed": true}'])


async def test_a_complete_response_whose_close_fails_is_still_delivered(pg: PgTarget, spool_dir: Path) -> None:
    # Without the middleware a server sends the body, then close() raises and is logged: the client has its
    # 200. A strict route collects the body first, so the failure came before anything was sent (a 500).
    middleware = strict_middleware(pg.dsn, pg, spool_dir, 10.0, app=closing_app)
    started: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append(status)
        return lambda data: None

    def serve() -> bytes:
        result = middleware(environ_for("POST", "/reset", b"{}", CONTENT_TYPE="application/json"), start_response)
        body = b"".join(result)
        with pytest.raises(RuntimeError, match="mail server down"):
            result.close()  # the app's failure still reaches the server, where it would have
        return body

    try:
        body = await asyncio.to_thread(serve)
    finally:
        await asyncio.to_thread(middleware.close, 10.0)
    assert (started, body) == (["200 OK"], b'{"changed": true}')
    rows = await pg.fetch("SELECT action, metadata FROM {t}")
    assert [r["action"] for r in rows] == ["password_reset"]  # once, committed before the response; the
    assert json.loads(rows[0]["metadata"])["http"]["exception"] == "RuntimeError"  # client had its 200
