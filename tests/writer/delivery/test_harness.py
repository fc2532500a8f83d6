"""The fault-injection harness itself: each fault does what the delivery tests rely on."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from tests.conftest import PgTarget
from tests.faults import FaultProxy, ThrowawayPostgres, terminate_writer_backends

pytestmark = pytest.mark.anyio


async def test_proxy_passes_then_resets_then_passes(fpg: PgTarget, proxy: FaultProxy) -> None:
    conn = await asyncpg.connect(proxy.dsn(fpg.dsn))
    assert await conn.fetchval("SELECT 1") == 1
    proxy.set_mode("reset")
    with pytest.raises((ConnectionError, asyncpg.PostgresConnectionError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    with pytest.raises((ConnectionError, asyncpg.PostgresConnectionError, OSError)):
        await asyncpg.connect(proxy.dsn(fpg.dsn), timeout=2)
    proxy.set_mode("pass")
    conn = await asyncpg.connect(proxy.dsn(fpg.dsn))
    assert await conn.fetchval("SELECT 2") == 2
    await conn.close()


async def test_proxy_blackhole_never_answers_until_passing_again(fpg: PgTarget, proxy: FaultProxy) -> None:
    proxy.set_mode("blackhole")
    with pytest.raises(TimeoutError):
        await asyncpg.connect(proxy.dsn(fpg.dsn), timeout=0.5)
    proxy.set_mode("pass")
    conn = await asyncpg.connect(proxy.dsn(fpg.dsn))
    proxy.set_mode("stall")
    with pytest.raises(TimeoutError):
        await conn.fetchval("SELECT 1", timeout=0.3)
    conn.terminate()
    proxy.set_mode("delay", delay=0.05)
    conn = await asyncpg.connect(proxy.dsn(fpg.dsn))
    assert await conn.fetchval("SELECT 3") == 3
    await conn.close()


async def test_server_stops_and_starts_again(fpg: PgTarget, fault_server: ThrowawayPostgres) -> None:
    await asyncio.to_thread(fault_server.stop, "immediate")
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(fpg.dsn, timeout=2)
    await asyncio.to_thread(fault_server.start)
    conn = await asyncpg.connect(fpg.dsn)
    assert await conn.fetchval("SELECT 1") == 1
    await conn.close()


async def test_terminate_ends_only_the_writers_backends(fpg: PgTarget) -> None:
    writer_conn = await asyncpg.connect(fpg.dsn, server_settings={"application_name": "audit_middleware"})
    other = await asyncpg.connect(fpg.dsn)
    assert await terminate_writer_backends(fpg.dsn) == 1
    await asyncio.sleep(0.1)
    assert writer_conn.is_closed() or not await _alive(writer_conn)
    assert await other.fetchval("SELECT 1") == 1
    await other.close()
    writer_conn.terminate()


async def _alive(conn: asyncpg.Connection) -> bool:
    try:
        await conn.fetchval("SELECT 1", timeout=2)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True
