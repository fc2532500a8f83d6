"""Under trio (Starlette and FastAPI on anyio's trio backend) the writer runs and every event lands.

The writer is asyncio code (asyncpg): under trio it runs on an asyncio loop on a thread of its own.
Real trio, real PostgreSQL; the checks read the table with asyncpg from a worker thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from audit_middleware import AuditMiddleware, AuditWriter, WriterClosedError
from tests.conftest import PgTarget

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "trio"


async def stored(pg: PgTarget) -> list[Any]:
    """The table's rows (asyncpg needs asyncio: it runs in a worker thread)."""
    return await anyio.to_thread.run_sync(lambda: asyncio.run(pg.rows()))


async def login(request: Request) -> JSONResponse:
    return JSONResponse({"id": 7}, status_code=200 if (await request.json()).get("ok") else 401)


async def lifespan_around(app: Any, body: Callable[[], Awaitable[None]]) -> list[str]:
    """Drive app's lifespan as a server does (startup, ``body``, shutdown); the messages it sent back."""
    sent: list[str] = []
    to_app, app_inbox = anyio.create_memory_object_stream[dict[str, Any]](4)
    async with to_app, app_inbox, anyio.create_task_group() as tg:

        async def send(message: dict[str, Any]) -> None:
            sent.append(message["type"])

        tg.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, app_inbox.receive, send)
        await to_app.send({"type": "lifespan.startup"})
        await body()
        await to_app.send({"type": "lifespan.shutdown"})
    return sent


async def test_the_middleware_under_trio_writes_every_event(pg: PgTarget, tmp_path: Path) -> None:
    app = Starlette(routes=[Route("/auth/login", login, methods=["POST"])])
    options = {"schema": pg.schema, "spool_dir": str(tmp_path), "flush_interval": 0.05}
    middleware = AuditMiddleware(app, dsn=pg.dsn, writer_options=options)

    async def requests() -> None:
        transport = httpx.ASGITransport(app=middleware, client=("10.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            assert (await client.post("/auth/login", json={"ok": True})).status_code == 200
            assert (await client.post("/auth/login", json={"ok": False})).status_code == 401

    with anyio.fail_after(60):
        sent = await lifespan_around(middleware, requests)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    rows = await stored(pg)
    assert sorted(r["action"] for r in rows) == ["login", "login_failed"]


async def test_a_writer_used_directly_under_trio_flushes_commits_and_closes(pg: PgTarget, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with AuditWriter(pg.dsn, schema=pg.schema, spool_dir=str(tmp_path)) as writer:
            writer.record_nowait("export_data", metadata={"rows": 3})
            await writer.flush(timeout=30)
            assert [r["action"] for r in await stored(pg)] == ["export_data"]
            assert await writer.record_strict("password_reset", timeout=30) is True
            await writer.record("logout")
    assert sorted(r["action"] for r in await stored(pg)) == ["export_data", "logout", "password_reset"]
    assert not writer.started


async def test_a_writer_never_started_closes_cleanly_under_trio(pg: PgTarget, tmp_path: Path) -> None:
    writer = AuditWriter(pg.dsn, schema=pg.schema, spool_dir=str(tmp_path))
    with anyio.fail_after(30):
        await writer.aclose()
    assert not writer.started
    with pytest.raises(WriterClosedError):
        writer.record_nowait("late")
