"""init-db --partitioned, monthly partitions, the writer (with a retry) and prune on a partitioned table."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence

import pytest

from audit_middleware import AuditWriter, PostgresSink
from audit_middleware._types import Row
from audit_middleware.cli.main import EXIT_FAILURE, EXIT_OK, main
from audit_middleware.store.partitions import create_partitions, list_partitions
from audit_middleware.store.retention import prune
from audit_middleware.store.schema import apply
from audit_middleware.writer.sink import Rejected
from tests.conftest import PgTarget
from tests.ops_data import load, row

NOW = dt.datetime(2026, 5, 15, 10, 0)


def init_partitioned(target: PgTarget, *extra: str) -> int:
    return main(["init-db", "--dsn", target.dsn, "--schema", target.schema, "--partitioned", "--no-users-fk", *extra])


async def partitions(target: PgTarget) -> list[str]:
    conn = await target.connect()
    try:
        return [p.name for p in await list_partitions(conn, target.schema, target.table)]
    finally:
        await conn.close()


def test_init_db_partitioned_creates_key_default_and_months_ahead(
    empty_schema: PgTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init_partitioned(empty_schema, "--ahead", "2") == EXIT_OK
    assert "partitioned by month" in capsys.readouterr().out
    key = asyncio.run(
        empty_schema.fetch(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p'",
            empty_schema.qualified,
        )
    )
    assert key[0][0] == "PRIMARY KEY (id, created_at)"
    names = asyncio.run(partitions(empty_schema))
    this_month = dt.datetime.now(dt.UTC)
    assert names[0] == f"user_audit_logs_p{this_month:%Y%m}"
    assert len(names) == 4  # this month, 2 ahead, default
    assert names[-1] == "user_audit_logs_default"
    # Running it again creates nothing and fails nothing.
    assert init_partitioned(empty_schema, "--ahead", "2") == EXIT_OK
    assert asyncio.run(partitions(empty_schema)) == names


def test_row_outside_every_partition_lands_in_the_default(empty_schema: PgTarget) -> None:
    assert init_partitioned(empty_schema) == EXIT_OK
    asyncio.run(load(empty_schema, [row("ancient", dt.datetime(1999, 1, 1))]))
    where = asyncio.run(empty_schema.fetch("SELECT tableoid::regclass::text FROM {t}"))
    assert where[0][0].endswith("user_audit_logs_default")


def test_init_db_refuses_to_partition_an_existing_plain_table(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    assert init_partitioned(pg) == EXIT_FAILURE
    assert "not partitioned" in capsys.readouterr().err


@pytest.mark.anyio
async def test_creating_a_month_moves_its_rows_out_of_the_default(empty_schema: PgTarget) -> None:
    conn = await empty_schema.connect()
    try:
        await apply(conn, schema=empty_schema.schema, users_table=None, partitioned=True, ahead=0)
        stray = [row("early", dt.datetime(2026, 1, 10)), row("other", dt.datetime(2025, 6, 1))]
        await load(empty_schema, stray)
        created = await create_partitions(
            conn, schema=empty_schema.schema, start=dt.date(2026, 1, 1), ahead=1, now=dt.datetime(2026, 1, 20)
        )
        placed = await conn.fetch(f"SELECT action, tableoid::regclass::text FROM {empty_schema.qualified}")
    finally:
        await conn.close()
    assert created == ["user_audit_logs_p202601", "user_audit_logs_p202602"]
    where = {action: table.rsplit(".", 1)[-1] for action, table in placed}
    assert where == {"early": "user_audit_logs_p202601", "other": "user_audit_logs_default"}


class CommitThenFail:
    """A sink whose first write commits and then raises, like a connection lost before the commit reply."""

    def __init__(self, inner: PostgresSink) -> None:
        self.inner = inner
        self.calls: list[bool] = []

    async def open(self) -> None:
        await self.inner.open()

    async def write(self, rows: Sequence[Row], *, retry: bool) -> list[Rejected]:
        self.calls.append(retry)
        rejected = await self.inner.write(rows, retry=retry)
        if len(self.calls) == 1:
            raise ConnectionResetError("connection lost after commit")
        return rejected

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.anyio
async def test_writer_on_a_partitioned_table_retries_without_duplicates(empty_schema: PgTarget) -> None:
    conn = await empty_schema.connect()
    try:
        await apply(conn, schema=empty_schema.schema, users_table=None, partitioned=True)
    finally:
        await conn.close()
    sink = CommitThenFail(PostgresSink(empty_schema.dsn, schema=empty_schema.schema))
    writer = AuditWriter(sink=sink, flush_interval=60.0, retry_initial=0.01, retry_max=0.02)
    async with writer:
        for i in range(50):
            await writer.record("login", metadata={"i": i})
        await writer.flush(timeout=10)
    stored = await empty_schema.rows()
    assert sink.calls[:2] == [False, True]  # COPY, then the idempotent retry
    assert writer.stats().retried >= 1
    assert len(stored) == 50
    assert sorted(json.loads(r["metadata"])["i"] for r in stored) == list(range(50))


@pytest.mark.anyio
async def test_prune_drops_whole_old_partitions_and_batches_the_boundary(empty_schema: PgTarget) -> None:
    conn = await empty_schema.connect()
    try:
        await apply(conn, schema=empty_schema.schema, users_table=None, partitioned=True, ahead=0)
        await create_partitions(conn, schema=empty_schema.schema, start=dt.date(2026, 1, 1), ahead=1, now=NOW)
        rows = [
            *(row("jan", dt.datetime(2026, 1, 5 + i)) for i in range(3)),
            *(row("feb", dt.datetime(2026, 2, 3 + i)) for i in range(2)),
            *(row("mar-early", dt.datetime(2026, 3, 2, i)) for i in range(5)),
            row("mar-late", dt.datetime(2026, 3, 20)),
            row("ancient", dt.datetime(2001, 1, 1)),  # default partition
        ]
        await load(empty_schema, rows)
        dry = await prune(conn, cutoff=dt.datetime(2026, 3, 10), schema=empty_schema.schema, dry_run=True)
        report = await prune(conn, cutoff=dt.datetime(2026, 3, 10), schema=empty_schema.schema, batch_size=2)
        left = sorted(r[0] for r in await conn.fetch(f"SELECT action FROM {empty_schema.qualified}"))
    finally:
        await conn.close()
    assert dry.deleted == 11
    assert dry.dropped_partitions == ("user_audit_logs_p202601", "user_audit_logs_p202602")
    assert report.dropped_partitions == dry.dropped_partitions
    assert report.deleted == 6  # 5 from March's partition + 1 from the default, in batches of 2
    assert report.batches == 3
    assert left == ["mar-late"]
    names = await partitions(empty_schema)
    assert "user_audit_logs_p202601" not in names
    assert "user_audit_logs_p202603" in names


def test_partitions_command_creates_months_and_lists_them(
    empty_schema: PgTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init_partitioned(empty_schema, "--ahead", "0") == EXIT_OK
    capsys.readouterr()
    args = ["partitions", "--dsn", empty_schema.dsn, "--schema", empty_schema.schema, "--ahead", "1"]
    assert main([*args, "--from", "2025-12"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "user_audit_logs_p202512" in out.splitlines()[0]
    assert "DEFAULT" in out


def test_partitions_command_on_a_plain_table_fails(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["partitions", "--dsn", pg.dsn, "--schema", pg.schema]) == EXIT_FAILURE
    assert "not a partitioned table" in capsys.readouterr().err
