"""The writer and sink with a digest key: every stored row is in exactly one digest of one chain."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import asyncpg
import pytest

from audit_middleware import AuditWriter, PostgresSink
from audit_middleware.errors import SchemaError
from tests.conftest import PgTarget
from tests.tamper_helpers import KEY, Target, make_rows

pytestmark = pytest.mark.anyio


async def test_writer_with_digest_key_builds_a_valid_chain(target: Target) -> None:
    async with AuditWriter(target.dsn, schema=target.schema, digest_key=KEY, batch_size=50) as writer:
        for i in range(230):
            writer.record_nowait("login", metadata={"i": i, "ip": "10.0.0.1", "x": [1.5, {"b": 1, "a": None}]})
        await writer.flush()
    assert writer.stats().written == 230
    report = await target.verify()
    assert report.ok, report.findings
    assert report.rows == 230 and report.digests == writer.stats().batches


async def test_two_writers_at_once_share_one_chain(target: Target) -> None:
    writers = [AuditWriter(target.dsn, schema=target.schema, digest_key=KEY, batch_size=20) for _ in range(2)]
    for writer in writers:
        await writer.start()
    for i in range(150):
        for n, writer in enumerate(writers):
            writer.record_nowait(f"w{n}", metadata={"i": i})
        if i % 25 == 0:
            await asyncio.sleep(0)
    await asyncio.gather(*(w.aclose() for w in writers))
    report = await target.verify()
    assert report.ok, report.findings
    assert report.rows == 300 and report.head_seq == report.digests


async def test_sink_retry_of_a_committed_batch_keeps_the_chain(target: Target) -> None:
    sink = PostgresSink(target.dsn, schema=target.schema, digest_key=KEY)
    try:
        rows = make_rows(10)
        assert await sink.write(rows, retry=False) == []
        assert await sink.write(rows, retry=True) == []  # as after a lost COMMIT reply
        assert await sink.write(make_rows(4, start=10), retry=True) == []
    finally:
        await sink.aclose()
    report = await target.verify()
    assert report.ok and (report.digests, report.rows) == (2, 14)


async def test_isolated_rows_are_digested_and_rejected_rows_are_not(target: Target, users: list[uuid.UUID]) -> None:
    good = make_rows(5, users=users)
    unknown_user = make_rows(1, users=[uuid.uuid4()], start=5)
    bad_json = [(uuid.uuid4(), None, "broken", "{not json", dt.datetime(2026, 11, 1))]
    sink = PostgresSink(target.dsn, schema=target.schema, digest_key=KEY)
    try:
        rejected = await sink.write([*good[:2], *bad_json, *unknown_user, *good[2:]], retry=False)
    finally:
        await sink.aclose()
    assert [r.row[2] for r in rejected] == ["broken"]
    report = await target.verify()
    assert report.ok, report.findings
    assert report.rows == 6  # the unknown user's row landed with user_id NULL, in a digest of its own


async def test_sink_without_digests_table_says_what_to_run(pg: PgTarget) -> None:
    sink = PostgresSink(pg.dsn, schema=pg.schema, digest_key=KEY)
    try:
        with pytest.raises(SchemaError, match="init-db --digests"):
            await sink.write(make_rows(1), retry=False)
    finally:
        await sink.aclose()
    assert await pg.rows() == []


def test_sink_repr_hides_the_key() -> None:
    sink = PostgresSink("postgresql://app:pw@127.0.0.1/db", digest_key=KEY)
    assert KEY not in repr(sink) and "digests=True" in repr(sink) and "pw" not in repr(sink)


async def test_large_batch_written_as_two_digested_halves(target: Target) -> None:
    rows = make_rows(500)
    broken = (uuid.uuid4(), None, "broken", "{not json", dt.datetime(2026, 11, 1))
    sink = PostgresSink(target.dsn, schema=target.schema, digest_key=KEY)
    try:
        rejected = await sink.write([*rows[:400], broken, *rows[400:]], retry=False)
        assert await sink.write(rows, retry=True) == []  # a retry after both halves committed adds nothing
    finally:
        await sink.aclose()
    assert [r.row[2] for r in rejected] == ["broken"]
    report = await target.verify()
    assert report.ok, report.findings
    assert report.rows == 500 and report.digests >= 2


async def test_digest_arrays_are_stored_uncompressed_and_init_is_repeatable(target: Target) -> None:
    from audit_middleware.store.schema.tamper import apply_digests

    conn = await asyncpg.connect(target.dsn)
    try:
        await apply_digests(conn, schema=target.schema)  # the second time: a no-op, no error
        storage = await conn.fetch(
            "SELECT attname, attstorage::text AS attstorage FROM pg_attribute WHERE attrelid = $1::regclass "
            "AND attname IN ('ids', 'row_hashes') ORDER BY attname",
            target.digests,
        )
    finally:
        await conn.close()
    assert [(r["attname"], r["attstorage"]) for r in storage] == [("ids", "e"), ("row_hashes", "e")]


async def test_digest_reads_its_batch_back_by_index_never_by_scanning_the_table(target: Target) -> None:
    # On a table the planner knows is large next to the batch, a plain join planned a hash of the
    # whole table (every row hashed into memory, per batch, growing with the table).
    await target.write([make_rows(500, start=i * 500) for i in range(20)])
    await target.sql(f"ANALYZE {target.audit}")
    batch = make_rows(400, start=10_000)
    await target.write([batch])
    ids, created = [row[0] for row in batch], [row[4] for row in batch]
    plan = "\n".join(r[0] for r in await target.sql(f"EXPLAIN {target.writer._hash}", ids, created, "lock"))
    assert "Index" in plan and "Seq Scan" not in plan, plan
