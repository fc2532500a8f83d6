"""The PostgreSQL sink: one binary COPY per batch through the writer's own small asyncpg pool.

A first attempt uses ``COPY`` (the fastest way in, one round trip). A retried batch (the previous
attempt failed in a way that leaves it unknown whether it committed, e.g. the connection dropped
while waiting for the commit reply) is written with a single ``INSERT ... SELECT FROM unnest(...)
ON CONFLICT DO NOTHING``: ids are made at capture time, so a retry never duplicates a row. No
conflict target, so the same statement works on a partitioned table, whose primary key is
``(id, created_at)`` (both made together at capture time, so that key is as unique as ``id``).

A batch the database refuses with an error that can be about a row (any SQLSTATE but those of
:data:`AVAILABILITY_CLASSES`: data errors, constraints, a trigger's ``RAISE``, ...) is split in halves
until the offending rows are isolated; the rest lands. Errors of :data:`TABLE_CLASSES` (a missing
table or column, a privilege) are usually about the table, not a row: when every part of a split
fails with one of them, the whole batch is retried instead, so a missing table never sends rows to
the dead-letter file. A row whose ``user_id`` has no matching user (foreign key) is stored with
``user_id`` NULL and the id kept in ``metadata.user_ref``. Any other row the database refuses is
returned as :class:`Rejected` with the server's reason. Connection and server-state errors propagate:
the writer retries the whole batch later. Every
command is bounded by ``timeout`` and every connection attempt by ``connect_timeout``; after any
such error (or a cancellation) the pool is terminated, so a dead or half-open connection is never
used again: the next attempt opens fresh connections.

With a ``digest_key`` every batch (and every split part) is written together with its
tamper-evidence digest in one transaction instead (see ``digests.py``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from .._types import Row
from ..store.digests import DigestWriter
from ..store.schema import quote_ident
from .config import DEFAULT_SCHEMA, DEFAULT_TABLE, Secret, SecretKey, check_identifier, mask_dsn
from .records import COLUMNS, with_user_ref

__all__ = ["PostgresSink", "Rejected"]

logger = logging.getLogger("audit_middleware.sinks.postgres")

DIGEST_SPLIT_MIN = 200  # with digests, a batch of at least twice this many rows is written as two halves

# SQLSTATE classes that say the server or the connection cannot take writes now, whatever the rows:
# connection exception, invalid transaction state (a read-only standby), transaction rollback
# (serialization, deadlock), insufficient resources, object not in prerequisite state (lock not
# available), operator intervention (shutdown, cancel), system error, configuration, internal error.
AVAILABILITY_CLASSES = frozenset({"08", "25", "40", "53", "55", "57", "58", "F0", "XX"})
# SQLSTATE classes that are usually about the table, not a row (undefined table or column, privileges,
# wrong schema or database, authorization): isolated only when part of the batch lands.
TABLE_CLASSES = frozenset({"0A", "0L", "0P", "28", "2B", "3D", "3F", "42"})
# Client-side errors caused by a row's value (asyncpg cannot encode it): also isolated.
CLIENT_ROW_ERRORS: tuple[type[Exception], ...] = (asyncpg.exceptions._base.DataError,)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A row the database refused, with the server's reason (never the row's metadata)."""

    row: Row
    reason: str


class PostgresSink:
    """Writes rows to ``schema.table`` with asyncpg.

    Args:
        dsn: connection string (or pass ``pool`` to share one).
        schema: the schema rows go to.
        table: the table rows go to; see ``init_db`` to create it.
        min_size: the smallest size of the sink's own pool.
        max_size: the largest size of the sink's own pool.
        timeout: seconds one command (COPY or INSERT) may take.
        connect_timeout: seconds to open a connection.
        pool: an existing asyncpg pool to use instead of creating one (not closed by ``aclose``).
        digest_key: HMAC key that turns on tamper-evident digests (needs ``init-db --digests``).

    Example:
        >>> sink = PostgresSink("postgresql://localhost/app")   # doctest: +SKIP
        >>> await sink.open()                                     # doctest: +SKIP
        >>> rejected = await sink.write(rows, retry=False)        # doctest: +SKIP
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str = DEFAULT_SCHEMA,
        table: str = DEFAULT_TABLE,
        min_size: int = 1,
        max_size: int = 2,
        timeout: float = 10.0,
        pool: asyncpg.Pool | None = None,
        connect_timeout: float = 5.0,
        digest_key: SecretKey | str | None = None,
    ) -> None:
        if dsn is None and pool is None:
            raise ValueError("PostgresSink needs a dsn or a pool")
        check_identifier("schema", schema)
        check_identifier("table", table)
        self._dsn = Secret(dsn) if dsn is not None else None
        self.schema = schema
        self.table = table
        self._min_size = min_size
        self._max_size = max_size
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._pool = pool
        self._owns_pool = pool is None
        self._digests = None if digest_key is None else DigestWriter(schema=schema, table=table, key=digest_key)
        self._digests_checked = False
        target = f"{quote_ident(schema)}.{quote_ident(table)}"
        self._upsert = (
            f"INSERT INTO {target} ({', '.join(COLUMNS)}) "
            "SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::varchar[], $4::jsonb[], $5::timestamp[]) "
            "ON CONFLICT DO NOTHING"
        )

    def __repr__(self) -> str:
        where = mask_dsn(self._dsn) if self._dsn else "shared pool"
        digests = ", digests=True" if self._digests is not None else ""
        return f"PostgresSink({where!r}, schema={self.schema!r}, table={self.table!r}{digests})"

    async def open(self) -> None:
        """Create the pool (idempotent). Raises if the server cannot be reached; the writer retries."""
        if self._pool is None:
            async with asyncio.timeout(self._connect_timeout * 2):  # (not wait_for: it can drop a cancel on 3.11)
                self._pool = await _create_pool(
                    self._dsn,
                    **_pool_size(self._min_size),
                    max_size=self._max_size,
                    timeout=self._connect_timeout,
                    # The writer's connections only run COPY and one INSERT; keep them out of the app's way.
                    server_settings={"application_name": "audit_middleware"},
                )

    async def table_exists(self) -> bool:
        """True if the audit table exists (checked once at writer start, on a connection of its own).

        Raises if the server cannot be reached (the writer then leaves the report to the writes).
        """
        query = "SELECT to_regclass($1) IS NOT NULL"
        name = f"{quote_ident(self.schema)}.{quote_ident(self.table)}"
        if self._dsn is None:
            assert self._pool is not None  # a sink without a dsn has a pool
            return bool(await self._pool.fetchval(query, name, timeout=self._timeout))
        conn = await asyncpg.connect(
            str(self._dsn), timeout=self._connect_timeout, server_settings={"application_name": "audit_middleware"}
        )
        try:
            return bool(await conn.fetchval(query, name, timeout=self._timeout))
        finally:
            await conn.close(timeout=self._timeout)

    async def aclose(self) -> None:
        """Close the pool if this sink created it."""
        pool, self._pool = self._pool, None
        if pool is not None and self._owns_pool:
            await pool.close()

    def terminate(self) -> None:
        """Close every connection at once, without waiting (for shutdown on an unreachable server)."""
        pool, self._pool = self._pool, None
        if pool is not None and self._owns_pool:
            pool.terminate()

    async def write(self, rows: Sequence[Row], *, retry: bool) -> list[Rejected]:
        """Store ``rows``; return those the database refused because of their content."""
        if not rows:
            return []
        if self._pool is None:
            await self.open()
        pool_size = self._pool.get_max_size() if self._pool is not None else 1
        if self._digests is not None and pool_size >= 2 and len(rows) >= 2 * DIGEST_SPLIT_MIN:
            # The digest's hashing is database time inside the batch's transaction: two halves on two
            # connections (two transactions, two digests) overlap it. If one half fails after the
            # other committed, the caller's retry (ON CONFLICT, digests only new rows) completes it.
            middle = len(rows) // 2
            parts = await asyncio.gather(
                self._write_part(rows[:middle], retry=retry),
                self._write_part(rows[middle:], retry=retry),
                return_exceptions=True,
            )
            for part in parts:
                if isinstance(part, BaseException):
                    raise part
            return [item for part in parts if not isinstance(part, BaseException) for item in part]
        return await self._write_part(rows, retry=retry)

    async def _write_part(self, rows: Sequence[Row], *, retry: bool) -> list[Rejected]:
        try:
            if self._pool is None:
                await self.open()
            try:
                await self._send(rows, retry=retry)
            except Exception as exc:
                if not _maybe_about_rows(exc):
                    raise
                return await self._isolate(rows, retry=retry, error=exc, table_works=False)
        except (TimeoutError, asyncio.CancelledError):
            # Timed out or cancelled mid-command: the peer may be half-open and the connection stuck in
            # the protocol, so close every connection now, without a goodbye; the next attempt reconnects.
            if self._owns_pool:
                self.terminate()
            raise
        except Exception:
            # Connection lost or server shutting down: connections asyncpg has not noticed are dead yet
            # are replaced when next acquired, so a retry never lands on a dead one.
            if self._pool is not None and self._owns_pool:
                await self._pool.expire_connections()
            raise
        return []

    async def _send(self, rows: Sequence[Row], *, retry: bool) -> None:
        assert self._pool is not None  # open() ran; a None here is a bug, not a runtime condition
        # asyncpg's own timeout covers the command, not the pool's release of a connection whose reply
        # never came (a half-open peer): the outer bound covers both.
        async with asyncio.timeout(self._timeout * 1.5):
            if self._digests is not None:
                await self._send_with_digest(self._digests, rows, retry=retry)
            elif retry:
                columns = list(zip(*rows, strict=True))
                await self._pool.execute(self._upsert, *columns, timeout=self._timeout)
            else:
                await self._pool.copy_records_to_table(
                    self.table, records=rows, columns=COLUMNS, schema_name=self.schema, timeout=self._timeout
                )

    async def _send_with_digest(self, digests: DigestWriter, rows: Sequence[Row], *, retry: bool) -> None:
        assert self._pool is not None
        async with self._pool.acquire(timeout=self._timeout) as conn:
            if not self._digests_checked:
                await digests.check(conn)  # a clear "run init-db --digests" instead of a bare missing table
                self._digests_checked = True
            await digests.write(conn, rows, retry=retry, timeout=self._timeout)

    async def _isolate(
        self, rows: Sequence[Row], *, retry: bool, error: Exception, table_works: bool
    ) -> list[Rejected]:
        """Split ``rows`` (refused with ``error``) until the rows the database refuses are alone.

        ``table_works``: some part of the batch landed, so a table-class error is about its rows.
        Without that proof, a single row or a split whose parts all fail with table-class errors
        re-raises: the table itself is wrong, and the writer retries (and spools) the batch.
        """
        if len(rows) == 1:
            if not table_works and _table_class(error):
                raise error
            return await self._single(rows[0], retry=retry, error=error)
        middle = len(rows) // 2
        failed: list[tuple[Sequence[Row], Exception]] = []
        landed = False
        for half in (rows[:middle], rows[middle:]):
            try:
                await self._send(half, retry=retry)
                landed = True
            except Exception as exc:
                if not _maybe_about_rows(exc):
                    raise
                failed.append((half, exc))
        if not landed and not table_works and all(_table_class(failure) for _, failure in failed):
            raise failed[0][1]
        rejected: list[Rejected] = []
        for half, part_error in failed:
            works = table_works or landed
            rejected.extend(await self._isolate(half, retry=retry, error=part_error, table_works=works))
        return rejected

    async def _single(self, row: Row, *, retry: bool, error: Exception) -> list[Rejected]:
        if _table_class(error):
            # Seen before another part landed, it may be stale: the table may have been created (or a
            # privilege granted) meanwhile. Only a refusal after that proof is about this row.
            try:
                await self._send([row], retry=retry)
            except Exception as exc:
                if not _maybe_about_rows(exc):
                    raise
                error = exc
            else:
                return []
        if isinstance(error, asyncpg.ForeignKeyViolationError) and row[1] is not None:
            fixed = with_user_ref(row, "unknown_user")
            try:
                await self._send([fixed], retry=retry)
            except Exception as exc:
                if not _maybe_about_rows(exc):
                    raise
                return [Rejected(fixed, _reason(exc))]
            return []
        return [Rejected(row, _reason(error))]


_create_pool: Any = asyncpg.create_pool  # its keyword set depends on the asyncpg version (see _pool_size)


def _pool_size(min_size: int) -> dict[str, int]:
    """Open ``min_size`` connections, but keep no connection floor where asyncpg has one (0.32+).

    A floor makes the pool reconnect in the background while the server is down, logging a traceback
    per attempt; the writer already retries (with its own backoff and rate-limited warnings).
    """
    if "init_size" in inspect.signature(asyncpg.create_pool).parameters:
        return {"init_size": min_size, "min_size": 0}
    return {"min_size": min_size}  # pragma: no cover - asyncpg < 0.32: min_size is the initial size


def _maybe_about_rows(exc: Exception) -> bool:
    """True for an error that may be caused by a row's content (worth splitting the batch for).

    Any server error but those of :data:`AVAILABILITY_CLASSES` (a trigger can ``RAISE`` any
    SQLSTATE for one row), and asyncpg's own refusal to encode a value. Connection, timeout and
    protocol errors are never about a row.
    """
    if isinstance(exc, CLIENT_ROW_ERRORS):
        return True
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] not in AVAILABILITY_CLASSES


def _table_class(exc: Exception) -> bool:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate[:2] in TABLE_CLASSES


def _reason(exc: Exception) -> str:
    # Only the primary message: PostgreSQL's DETAIL ("Failing row contains (...)") would carry the row.
    sqlstate = getattr(exc, "sqlstate", None)
    message = getattr(exc, "message", None) or type(exc).__name__
    return f"{type(exc).__name__} ({sqlstate}): {str(message)[:300]}"
