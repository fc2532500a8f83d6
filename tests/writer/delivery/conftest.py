"""Fixtures of the delivery (fault-injection) tests: a PostgreSQL server the tests may stop, a proxy, a spool."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PgTarget, _create_schema, _drop_schema
from tests.faults import FaultProxy, ThrowawayPostgres


@pytest.fixture(scope="session")
def fault_server() -> Iterator[ThrowawayPostgres]:
    """A throwaway server on 127.0.0.1 that tests stop and start (never the shared AUDIT_TEST_DSN server).

    Its directory is not under pytest's basetemp: every pytest session started as root resets
    ``pytest-of-root`` to 0700, which would lock the unprivileged server user out of its own data
    directory (pg_ctl fails) whenever another session starts meanwhile.
    """
    base = Path(tempfile.mkdtemp(prefix="audit-fault-pg-"))
    base.chmod(0o755)
    server = ThrowawayPostgres(base / "pg")
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fpg(fault_server: ThrowawayPostgres) -> Iterator[PgTarget]:
    """A fresh schema (audit table + users) on the fault server, which is running when the test starts."""
    fault_server.ensure_running()
    schema = f"f_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_schema(fault_server.dsn, schema, users=True))
    try:
        yield PgTarget(fault_server.dsn, schema)
    finally:
        fault_server.ensure_running()
        asyncio.run(_drop_schema(fault_server.dsn, schema))


@pytest.fixture
async def proxy(fault_server: ThrowawayPostgres) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the fault server."""
    async with FaultProxy(fault_server.port) as p:
        yield p


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, step: float = 0.05) -> None:
    """Wait until ``check()`` is true (bounded); fail the test if it never becomes true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(step)
