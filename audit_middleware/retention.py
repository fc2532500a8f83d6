"""Retention: delete audit rows older than a cutoff (``audit-middleware prune``).

On a plain table rows are deleted in batches of ``batch_size``, each batch its own short
transaction walking the ``(created_at, id)`` index forward, so locks are brief, the writer is never
blocked for long, and an interrupted prune simply resumes next time. On a partitioned table every
monthly partition entirely older than the cutoff is dropped (instant, no dead rows to vacuum), then
the rows older than the cutoff left in the partition holding it (and in the default partition) are
deleted in batches as above.

Each delete runs with ``SET LOCAL audit_middleware.prune = 'on'``: the append-only triggers that
``init-db --append-only`` installs let exactly that path delete.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from .config import DEFAULT_SCHEMA, DEFAULT_TABLE
from .errors import ConfigurationError
from .partitions import PRUNE_SETTING, is_partitioned, list_partitions
from .query import _target, to_utc_naive

__all__ = ["PruneReport", "prune"]

Progress = Callable[[int, int], None]
"""Called after each batch with (rows deleted so far, rows to delete in total)."""


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What ``prune`` did (or, with ``dry_run``, would do)."""

    cutoff: dt.datetime
    deleted: int
    batches: int
    dropped_partitions: tuple[str, ...]
    dry_run: bool


async def prune(
    conn: asyncpg.Connection,
    *,
    cutoff: dt.datetime,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    batch_size: int = 10_000,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PruneReport:
    """Delete every row with ``created_at < cutoff``; drop whole partitions when the table is partitioned.

    Args:
        conn: an asyncpg connection (not inside a transaction: each batch commits on its own).
        cutoff: rows strictly older than this go (naive UTC, or aware and converted).
        schema / table: the audit table.
        batch_size: rows deleted per transaction.
        dry_run: only count what would be deleted and dropped.
        progress: called after each batch with (deleted so far, total).

    Example:
        >>> cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=365)   # doctest: +SKIP
        >>> report = await prune(conn, cutoff=cutoff)                     # doctest: +SKIP
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigurationError(f"batch_size must be a positive integer, got {batch_size!r}")
    cutoff = to_utc_naive(cutoff)
    target = _target(schema, table)
    doomed = []
    if await is_partitioned(conn, schema, table):
        doomed = [p for p in await list_partitions(conn, schema, table) if p.end is not None and p.end <= cutoff]
    dropped = tuple(p.name for p in doomed)
    if dry_run:
        total = await conn.fetchval(f"SELECT count(*) FROM {target} WHERE created_at < $1", cutoff)
        return PruneReport(cutoff, int(total), 0, dropped, dry_run=True)
    for partition in doomed:
        # DROP of a partition briefly takes an exclusive lock on the parent: do not queue behind long queries.
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '10s'")
            await conn.execute(f"DROP TABLE {_target(schema, partition.name)}")
    total = 0
    if progress is not None:  # counting a huge backlog takes a while: only for a progress display
        total = int(await conn.fetchval(f"SELECT count(*) FROM {target} WHERE created_at < $1", cutoff))
    deleted = batches = 0
    after: tuple[dt.datetime, uuid.UUID] = (dt.datetime.min, uuid.UUID(int=0))
    sql = (
        f"WITH gone AS (DELETE FROM {target} WHERE created_at < $1 AND (created_at, id) IN ("
        f"SELECT created_at, id FROM {target} WHERE created_at < $1 AND (created_at, id) > ($2, $3) "
        "ORDER BY created_at, id LIMIT $4) RETURNING created_at, id) "
        "SELECT created_at, id, count(*) OVER () FROM gone ORDER BY created_at DESC, id DESC LIMIT 1"
    )
    while True:
        async with conn.transaction():
            await conn.execute(f"SELECT set_config('{PRUNE_SETTING}', 'on', true)")
            last = await conn.fetchrow(sql, cutoff, after[0], after[1], batch_size)
        if last is None:
            break
        after = (last[0], last[1])
        deleted += int(last[2])
        batches += 1
        if progress is not None:
            progress(deleted, max(total, deleted))
        if last[2] < batch_size:
            break
    return PruneReport(cutoff, deleted, batches, dropped, dry_run=False)
