"""``prune`` (retention) on a table with digests: the chain still verifies, and tampering is still caught."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import asyncpg
import pytest

from audit_middleware import PostgresSink
from audit_middleware._types import Row
from audit_middleware.store.partitions import list_partitions
from audit_middleware.store.retention import _drop_partition, prune
from audit_middleware.store.schema import quote_ident
from audit_middleware.store.schema.tamper import apply_append_only
from audit_middleware.writer.records import COLUMNS
from tests.conftest import PgTarget
from tests.tamper_helpers import KEY, Target, make_rows, partitioned_target

pytestmark = pytest.mark.anyio

BASE = dt.datetime(2026, 11, 1)  # make_rows(start=i) is created at BASE + i seconds


async def write_with_digests(target: Target, batches: Sequence[Sequence[Row]]) -> None:
    """Through the sink with a digest_key set, as the writer does (one digest per batch)."""
    sink = PostgresSink(target.dsn, schema=target.schema, digest_key=KEY)
    try:
        for batch in batches:
            assert await sink.write(batch, retry=False) == []
    finally:
        await sink.aclose()


async def run_prune(target: Target, cutoff: dt.datetime, **options: object) -> tuple[int, int, tuple[str, ...]]:
    conn = await asyncpg.connect(target.dsn)
    try:
        report = await prune(conn, cutoff=cutoff, schema=target.schema, key=KEY, **options)  # type: ignore[arg-type]
    finally:
        await conn.close()
    return report.deleted, report.batches, report.dropped_partitions


async def append_only(target: Target) -> None:
    conn = await asyncpg.connect(target.dsn)
    try:
        await apply_append_only(conn, schema=target.schema)
    finally:
        await conn.close()


async def tamper(target: Target, statement: str, *args: object) -> None:
    """Change the table as someone able to get past the append-only triggers would."""
    conn = await asyncpg.connect(target.dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL audit_middleware.prune = 'on'")
            await conn.execute(statement.replace("{t}", target.audit), *args)
    finally:
        await conn.close()


async def test_prune_keeps_the_chain_verifiable(target: Target) -> None:
    # 5 batches of 4 rows, 1 s apart; the cutoff takes batches 1-2 whole and half of batch 3.
    await write_with_digests(target, [make_rows(4, start=i * 4) for i in range(5)])
    await append_only(target)  # prune must take the sanctioned path on both tables
    progress: list[tuple[int, int]] = []
    cutoff = BASE + dt.timedelta(seconds=10)
    assert await run_prune(target, cutoff, batch_size=3, progress=lambda *p: progress.append(p)) == (10, 3, ())
    assert progress == [(4, 10), (8, 10), (10, 10)]  # two whole digested batches, then the rest by created_at
    assert len(await target.sql("SELECT 1 FROM {t}")) == 10
    report = await target.verify()
    assert report.ok, report.findings
    assert (report.pruned_digests, report.pruned_missing, report.rows) == (2, 2, 10)


async def test_tampering_after_a_prune_is_still_caught(target: Target) -> None:
    await write_with_digests(target, [make_rows(4, start=i * 4) for i in range(5)])
    await run_prune(target, BASE + dt.timedelta(seconds=10))
    await target.sql("UPDATE {t} SET action = 'forged' WHERE created_at = $1", BASE + dt.timedelta(seconds=15))
    await target.sql("DELETE FROM {t} WHERE created_at = $1", BASE + dt.timedelta(seconds=19))
    report = await target.verify()
    assert report.counts == {"altered": 1, "deleted": 1}


async def test_prune_dry_run_counts_what_it_would_delete(target: Target) -> None:
    await write_with_digests(target, [make_rows(4, start=i * 4) for i in range(3)])
    assert await run_prune(target, BASE + dt.timedelta(seconds=6), dry_run=True) == (6, 0, ())
    assert len(await target.sql("SELECT 1 FROM {t}")) == 12


async def test_prune_keeps_rows_that_would_look_deleted(target: Target) -> None:
    # No batch is entirely older than the cutoff, so no stub sets a prune horizon: deleting the older
    # half of the first batch would be indistinguishable from tampering. Those rows stay for now.
    await write_with_digests(target, [make_rows(4), make_rows(4, start=4)])
    conn = await asyncpg.connect(target.dsn)
    try:
        planned = await prune(conn, cutoff=BASE + dt.timedelta(seconds=2), schema=target.schema, dry_run=True)
    finally:
        await conn.close()
    assert (planned.deleted, planned.kept_from) == (0, BASE)  # says what it keeps, and from when
    assert await run_prune(target, BASE + dt.timedelta(seconds=2)) == (0, 0, ())
    assert (await target.verify()).ok
    # Once a batch is entirely older, its stub moves the horizon and the straddling rows may go.
    assert await run_prune(target, BASE + dt.timedelta(seconds=6)) == (6, 2, ())
    report = await target.verify()
    assert report.ok, report.findings
    assert (report.pruned_digests, report.pruned_missing, report.rows) == (1, 2, 2)


async def test_prune_without_digests_still_deletes_everything_older(pg: PgTarget) -> None:
    target = Target(pg.dsn, pg.schema)  # no digests table
    conn = await asyncpg.connect(pg.dsn)
    try:
        await conn.copy_records_to_table(
            "user_audit_logs", records=make_rows(5), columns=COLUMNS, schema_name=pg.schema
        )
    finally:
        await conn.close()
    assert await run_prune(target, BASE + dt.timedelta(seconds=3)) == (3, 1, ())


# -- partitioned table ----------------------------------------------------------------------


async def test_prune_drops_a_partition_and_the_chain_still_verifies(empty_schema: PgTarget) -> None:
    target = await partitioned_target(empty_schema)
    # October: batches 1-2 (8 rows); batch 3 straddles the month end; then 2 batches in November.
    await write_with_digests(target, [make_rows(4, start=-10 + i * 4) for i in range(5)])
    await append_only(target)
    deleted, batches, dropped = await run_prune(target, BASE + dt.timedelta(seconds=1))
    assert dropped == ("user_audit_logs_p10",)
    assert (deleted, batches) == (1, 1)  # the drop took 10 rows; batch 3's row at BASE + 0 s went by created_at
    report = await target.verify()
    assert report.ok, report.findings
    assert (report.pruned_digests, report.pruned_missing, report.rows) == (2, 3, 9)
    await tamper(target, "UPDATE {t} SET metadata = '{}' WHERE created_at = $1", BASE + dt.timedelta(seconds=5))
    assert (await target.verify()).counts == {"altered": 1}


async def test_prune_does_not_drop_a_partition_whose_rows_would_look_deleted(empty_schema: PgTarget) -> None:
    target = await partitioned_target(empty_schema)
    await write_with_digests(target, [make_rows(4, start=-2), make_rows(4, start=2)])  # batch 1 straddles
    assert await run_prune(target, BASE, dry_run=True) == (0, 0, ())
    assert await run_prune(target, BASE) == (0, 0, ())
    report = await target.verify()
    assert report.ok and report.rows == 8


async def test_a_partition_drop_takes_its_batches_rows_from_the_default_partition_too(empty_schema: PgTarget) -> None:
    target = await partitioned_target(empty_schema)
    day = 86_400
    # Batch 1: two rows from September (no partition of its own: they land in the default partition)
    # and two from October (p10). Batch 2: November (p11).
    await write_with_digests(target, [make_rows(2, start=-40 * day) + make_rows(2, start=-10 * day), make_rows(3)])
    await append_only(target)
    conn = await asyncpg.connect(target.dsn)
    try:
        p10 = next(p for p in await list_partitions(conn, target.schema) if p.name == "user_audit_logs_p10")
        default = f"{quote_ident(target.schema)}.{quote_ident('user_audit_logs_default')}"
        digests = target.digests
        # The drop's own transaction, as prune runs it: a prune interrupted right after it must leave
        # a chain that verifies, so the stubbed batch's September rows go in that transaction too.
        deleted = await _drop_partition(conn, target.schema, "user_audit_logs", p10, digests, default, KEY)
    finally:
        await conn.close()
    report = await target.verify()
    assert report.ok, report.findings
    assert (report.pruned_digests, report.pruned_missing, report.rows) == (1, 0, 3)
    assert deleted == 2
    left = await target.sql("SELECT count(*) AS n FROM {t} WHERE created_at < '2026-11-01'")
    assert left[0]["n"] == 0
