"""Retention: delete audit rows older than a cutoff (``audit-middleware prune``).

On a plain table rows are deleted in batches of ``batch_size``, each batch its own short
transaction walking the ``(created_at, id)`` index forward, so locks are brief, the writer is never
blocked for long, and an interrupted prune simply resumes next time. On a partitioned table every
monthly partition entirely older than the cutoff is dropped (instant, no dead rows to vacuum), then
the rows older than the cutoff left in the partition holding it (and in the default partition) are
deleted in batches as above.

Each delete runs with ``SET LOCAL audit_middleware.prune = 'on'``: the append-only triggers that
``init-db --append-only`` installs let exactly that path delete.

With a digests table (tamper evidence, see ``digests.py``) the chain stays verifiable: each
partition drop first turns the digests of the rows it removes into stubs
(:func:`~audit_middleware.digests.prune_batch`) in its own transaction, deleting in that transaction
those batches' rows that sit in the default partition, and the batch path first
deletes whole digested batches entirely older than the cutoff with ``prune_batch`` (one
transaction of about ``batch_size`` rows each), then the remaining older rows by ``created_at``.
``prune_batch`` signs the stubs with the digest key, so a prune of a digested table needs the key
(``verify`` reports a stub it cannot authenticate), and it stubs only a prefix of the chain.
``verify`` accepts a row missing from a batch only when the batch began before the prune horizon
(the latest stub's cutoff), so rows that would look deleted are kept: the cutoff is moved back to
the start of the oldest such batch, and a partition holding some is not dropped. That only happens
when no digested batch at the head of the chain is entirely older than the cutoff; a later prune
takes those rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from ..errors import ConfigurationError
from ..writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE, SecretKey, check_digest_key
from .digests import digests_table, prune_batch
from .partitions import PRUNE_SETTING, Partition, is_partitioned, list_partitions
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
    kept_from: dt.datetime | None = None
    """Set when rows from this time up to ``cutoff`` were kept: a digested batch straddles the cutoff
    and no batch is entirely older, so deleting them would look like tampering to ``verify``. A later
    prune removes them once a whole batch is older than its cutoff."""


async def prune(
    conn: asyncpg.Connection,
    *,
    cutoff: dt.datetime,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    batch_size: int = 10_000,
    dry_run: bool = False,
    progress: Progress | None = None,
    key: SecretKey | str | None = None,
) -> PruneReport:
    """Delete every row with ``created_at < cutoff``; drop whole partitions when the table is partitioned.

    Args:
        conn: an asyncpg connection (not inside a transaction: each batch commits on its own).
        cutoff: rows strictly older than this go (naive UTC, or aware and converted).
        schema / table: the audit table.
        batch_size: rows deleted per transaction.
        dry_run: only count what would be deleted and dropped.
        progress: called after each batch with (deleted so far, total).
        key: the digest key; required when the table has a digests table (the stubs are signed with
            it), except for a dry run.

    Raises:
        ConfigurationError: bad ``batch_size``; a digests table but no (valid) ``key``, or a cutoff in
            the future.

    Example:
        >>> cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(days=365)   # doctest: +SKIP
        >>> report = await prune(conn, cutoff=cutoff)                     # doctest: +SKIP
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigurationError(f"batch_size must be a positive integer, got {batch_size!r}")
    cutoff = to_utc_naive(cutoff)
    target = _target(schema, table)
    digests = _target(schema, digests_table(table))
    if await conn.fetchval("SELECT to_regclass($1)", digests) is None:
        digests = ""
    elif not dry_run:
        if key is None:
            raise ConfigurationError(
                f"{schema}.{table} keeps tamper-evidence digests: prune needs the digest key to sign the "
                "pruned digests (key=..., or $AUDIT_DIGEST_KEY for the command)"
            )
        key = check_digest_key(key)
        if cutoff > await conn.fetchval("SELECT now() AT TIME ZONE 'UTC'"):
            raise ConfigurationError(
                f"cutoff {cutoff} is in the future: on a table with digests verify would report its stubs "
                "(a future prune horizon is how a forged stub hides rows)"
            )
    doomed = []
    default: str | None = None
    if await is_partitioned(conn, schema, table):
        partitions = await list_partitions(conn, schema, table)
        doomed = [p for p in partitions if p.end is not None and p.end <= cutoff]
        default = next((_target(schema, p.name) for p in partitions if p.end is None), None)
        if digests:  # oldest first, stopping at one that would leave rows looking deleted
            doomed = await _verifiable_partitions(conn, digests, doomed)
    dropped = tuple(p.name for p in doomed)
    before = await _verifiable_before(conn, digests, cutoff) if digests else cutoff
    if dry_run:
        total = await conn.fetchval(f"SELECT count(*) FROM {target} WHERE created_at < $1", before)
        return PruneReport(cutoff, int(total), 0, dropped, dry_run=True, kept_from=_kept(before, cutoff))
    deleted = 0
    for partition in doomed:
        deleted += await _drop_partition(conn, schema, table, partition, digests, default, key)
    total = 0
    if progress is not None:  # counting a huge backlog takes a while: only for a progress display
        total = int(await conn.fetchval(f"SELECT count(*) FROM {target} WHERE created_at < $1", before))
    batches = 0
    while digests:  # whole digested batches first: their digests become stubs, their rows go
        async with conn.transaction():
            await conn.execute(f"SELECT set_config('{PRUNE_SETTING}', 'on', true)")
            stubbed, rows = await prune_batch(
                conn, schema=schema, table=table, before=cutoff, key=key or "", limit=1000, max_rows=batch_size
            )
        if not stubbed:
            before = await _verifiable_before(conn, digests, cutoff)  # again: batches may have come meanwhile
            break
        deleted += rows
        batches += 1
        if progress is not None:
            progress(deleted, max(total, deleted))
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
            last = await conn.fetchrow(sql, before, after[0], after[1], batch_size)
        if last is None:
            break
        after = (last[0], last[1])
        deleted += int(last[2])
        batches += 1
        if progress is not None:
            progress(deleted, max(total, deleted))
        if last[2] < batch_size:
            break
    return PruneReport(cutoff, deleted, batches, dropped, dry_run=False, kept_from=_kept(before, cutoff))


async def _drop_partition(
    conn: asyncpg.Connection,
    schema: str,
    table: str,
    partition: Partition,
    digests: str,
    default: str | None,
    key: SecretKey | str | None,
) -> int:
    """Drop ``partition`` in one transaction; with digests, stub those of the rows it held first.

    A stubbed batch may also have rows in the default partition (a month without a partition of its
    own): they are deleted in the same transaction, so no committed state ever has a stub whose rows
    are still there (``verify`` would report them as inserted outside the writer). Returns how many
    rows that deleted; the drop itself deletes nothing row by row.
    """
    deleted = 0
    # DROP of a partition briefly takes an exclusive lock on the parent: do not queue behind long queries.
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '10s'")
        if digests and partition.end is not None:
            await conn.execute(f"SELECT set_config('{PRUNE_SETTING}', 'on', true)")
            stubbed = 1
            while stubbed:
                stubbed, rows = await prune_batch(
                    conn,
                    schema=schema,
                    table=table,
                    before=partition.end,
                    key=key or "",
                    limit=1000,
                    delete_rows=default is not None,
                    rows_from=default,
                )
                deleted += rows
        await conn.execute(f"DROP TABLE {_target(schema, partition.name)}")
    return deleted


def _kept(before: dt.datetime, cutoff: dt.datetime) -> dt.datetime | None:
    return before if before < cutoff else None


async def _verifiable_partitions(
    conn: asyncpg.Connection, digests: str, partitions: list[Partition]
) -> list[Partition]:
    """The oldest of ``partitions`` that can be dropped without ``verify`` reporting rows deleted.

    A prefix: each drop stubs the digests of every batch older than its partition's end, whose rows
    are then all in that partition or older ones (or the default partition, deleted with the drop).
    """
    safe = []
    for partition in partitions:
        if partition.end is None or await _verifiable_before(conn, digests, partition.end) < partition.end:
            break
        safe.append(partition)
    return safe


async def _verifiable_before(conn: asyncpg.Connection, digests: str, cutoff: dt.datetime) -> dt.datetime:
    """The latest time before which every row may go without ``verify`` reporting it deleted.

    ``cutoff`` itself, unless a digested batch with rows older than it stays (not a stub) and began
    at or after the prune horizon as it will be once the prefix of batches entirely older than
    ``cutoff`` is stubbed: then the start of the oldest such batch.
    """
    found = await conn.fetchval(
        f"WITH kept AS (SELECT min(seq) AS seq FROM {digests} WHERE pruned_before IS NULL AND max_created_at >= $1), "
        f"h AS (SELECT greatest((SELECT max(pruned_before) FROM {digests}), "
        f"CASE WHEN EXISTS (SELECT 1 FROM {digests} p, kept WHERE p.pruned_before IS NULL "
        "AND (kept.seq IS NULL OR p.seq < kept.seq)) THEN $1 END) AS horizon) "
        f"SELECT min(d.min_created_at) FROM {digests} d, h, kept WHERE d.pruned_before IS NULL "
        "AND d.seq >= kept.seq AND d.min_created_at < $1 AND (h.horizon IS NULL OR d.min_created_at >= h.horizon)",
        cutoff,
    )
    return cutoff if found is None else min(cutoff, found)
