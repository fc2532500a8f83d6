"""The writer and PostgresSink against a real server: values, batching, retries, hostile rows."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from decimal import Decimal
from typing import Any

import pytest

from audit_middleware import AuditWriter, PostgresSink
from audit_middleware.writer.records import AuditEvent, to_row
from tests.conftest import PgTarget

pytestmark = pytest.mark.anyio


def writer_for(pg: PgTarget, **options: Any) -> AuditWriter:
    options.setdefault("flush_interval", 60.0)
    return AuditWriter(pg.dsn, schema=pg.schema, **options)


async def test_recorded_event_lands_with_every_column(pg: PgTarget, users: list[uuid.UUID]) -> None:
    async with writer_for(pg) as writer:
        event = await writer.record("password_reset", user_id=users[0], metadata={"ip": "192.168.0.101"})
    assert event is not None
    [row] = await pg.rows()
    assert row["id"] == uuid.UUID(str(event.id))
    assert row["user_id"] == users[0]
    assert row["action"] == "password_reset"
    assert json.loads(row["metadata"]) == {"ip": "192.168.0.101"}
    assert row["created_at"] == event.created_at.replace(tzinfo=None)


async def test_created_at_is_capture_time_in_utc_not_flush_time(pg: PgTarget) -> None:
    async with writer_for(pg) as writer:
        before = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        writer.record_nowait("login")
        # the flush happens later; created_at must not move with it
        await writer.flush()
    [row] = await pg.rows()
    assert before <= row["created_at"] <= before + dt.timedelta(seconds=1)
    server_utc = (await pg.fetch("SELECT (now() AT TIME ZONE 'UTC')::timestamp AS t"))[0]["t"]
    assert abs(server_utc - row["created_at"]) < dt.timedelta(minutes=1)


async def test_jsonb_round_trip_of_nested_metadata(pg: PgTarget) -> None:
    metadata = {"ip": "::1", "http": {"status": 401, "path": "/auth/login"}, "tags": ["a", "b"], "ok": False}
    async with writer_for(pg) as writer:
        writer.record_nowait("login_failed", metadata=metadata)
    rows = await pg.fetch("SELECT metadata->'http'->>'status' AS status, metadata FROM {t}")
    assert rows[0]["status"] == "401"
    assert json.loads(rows[0]["metadata"]) == metadata


@pytest.mark.parametrize("count", [1, 9, 10, 11, 35])
async def test_batch_boundaries_write_every_event_once(pg: PgTarget, count: int) -> None:
    async with writer_for(pg, batch_size=10) as writer:
        ids = [writer.record_nowait(f"a{i}").id for i in range(count)]  # type: ignore[union-attr]
    rows = await pg.rows()
    assert sorted(str(r["id"]) for r in rows) == sorted(str(i) for i in ids)
    assert writer.stats().batches == -(-count // 10)


async def test_close_flushes_everything_pending(pg: PgTarget) -> None:
    writer = writer_for(pg, flush_interval=3600.0)
    await writer.start()
    for i in range(250):
        writer.record_nowait("export_data", metadata={"i": i})
    await writer.aclose()
    assert len(await pg.rows()) == 250


async def test_retry_of_a_batch_that_already_committed_adds_no_duplicates(pg: PgTarget) -> None:
    rows = [to_row(AuditEvent(f"a{i}")) for i in range(20)]
    sink = PostgresSink(pg.dsn, schema=pg.schema)
    try:
        await sink.write(rows[:12], retry=False)  # committed, but the caller never heard back
        assert await sink.write(rows, retry=True) == []  # the whole batch again
        assert await sink.write(rows, retry=True) == []
    finally:
        await sink.aclose()
    stored = await pg.rows()
    assert len(stored) == 20
    assert sorted(r["action"] for r in stored) == sorted(f"a{i}" for i in range(20))


async def test_writer_retries_until_the_table_exists(pg: PgTarget) -> None:
    # Writes to a table that does not exist yet fail like a misconfigured server would;
    # once the table appears, the same events land exactly once.
    writer = AuditWriter(pg.dsn, schema=pg.schema, table="late_table", retry_initial=0.01, retry_max=0.05)
    await writer.start()
    writer.record_nowait("login")
    writer.record_nowait("logout")
    with pytest.raises(TimeoutError):
        await writer.flush(timeout=0.3)  # the table is missing: attempts fail and are retried
    conn = await pg.connect()
    try:
        await conn.execute(f'CREATE TABLE "{pg.schema}".late_table (LIKE {pg.qualified} INCLUDING ALL)')
    finally:
        await conn.close()
    await writer.flush(timeout=10)
    await writer.aclose()
    rows = await PgTarget(pg.dsn, pg.schema, "late_table").rows()
    assert [r["action"] for r in rows] == ["login", "logout"]
    assert writer.stats().retried >= 1


async def test_every_hostile_value_lands_without_sinking_the_batch(pg: PgTarget) -> None:
    hostile: list[tuple[str, Any, dict[str, Any]]] = [
        ("a" * 150, None, {}),
        ("nul", None, {"v": "a\x00b", "k\x00": 1}),
        ("surrogate", None, {"v": "x\ud800y"}),
        ("nan", None, {"v": float("nan"), "w": float("-inf")}),
        ("types", None, {"d": dt.datetime(2026, 1, 1), "u": uuid.UUID(int=1), "b": b"\x01", "m": Decimal("2.50")}),
        ("set", None, {"s": {2, 1}, "o": object()}),
        ("not_uuid", "alice@example.com", {}),
        ("int_user", 12345, {}),
        ("unknown_user", uuid.uuid4(), {}),  # violates the foreign key
        ("big", None, {"blob": "x" * 200_000}),
        ("normal", None, {"ip": "10.0.0.1"}),
    ]
    async with writer_for(pg, max_metadata_bytes=8192) as writer:
        for action, user, metadata in hostile:
            writer.record_nowait(action, user_id=user, metadata=metadata)
    stats = writer.stats()
    assert (stats.written, stats.rejected) == (len(hostile), 0)
    stored = {r["action"]: (r["user_id"], json.loads(r["metadata"])) for r in await pg.rows()}
    assert stored["a" * 100][1]["_audit"]["action_full"] == "a" * 150
    assert stored["nul"][1] == {"v": "a\ufffdb", "k\ufffd": 1}
    assert stored["surrogate"][1] == {"v": "x\ufffdy"}
    assert stored["nan"][1] == {"v": "NaN", "w": "-Infinity"}
    assert stored["types"][1] == {
        "d": "2026-01-01T00:00:00",
        "u": "00000000-0000-0000-0000-000000000001",
        "b": "base64:AQ==",
        "m": "2.50",
    }
    assert stored["set"][1]["s"] == [1, 2]
    assert stored["set"][1]["o"].startswith("<object object at")
    assert stored["not_uuid"] == (None, {"user_ref": "alice@example.com"})
    assert stored["int_user"] == (None, {"user_ref": "12345"})
    unknown_user, unknown_meta = stored["unknown_user"]
    assert unknown_user is None
    assert unknown_meta["_audit"] == {"user_ref_reason": "unknown_user"}
    assert uuid.UUID(unknown_meta["user_ref"])
    assert len(json.dumps(stored["big"][1])) <= 8192
    assert stored["normal"] == (None, {"ip": "10.0.0.1"})


async def test_known_user_keeps_its_id_next_to_an_unknown_one(pg: PgTarget, users: list[uuid.UUID]) -> None:
    stranger = uuid.uuid4()
    async with writer_for(pg) as writer:
        writer.record_nowait("login", user_id=users[1])
        writer.record_nowait("login", user_id=stranger)
    rows = await pg.rows()
    assert [r["user_id"] for r in rows] == [users[1], None]
    assert json.loads(rows[1]["metadata"])["user_ref"] == str(stranger)


async def test_row_the_database_still_rejects_is_reported_and_the_rest_lands(
    pg: PgTarget, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    conn = await pg.connect()
    try:
        await conn.execute(f"ALTER TABLE {pg.qualified} ADD CONSTRAINT no_evil CHECK (action <> 'evil')")
    finally:
        await conn.close()
    async with writer_for(pg) as writer:
        for i in range(10):
            writer.record_nowait("evil" if i == 6 else f"ok{i}", metadata={"password_hint": "hunter2"})
    assert sorted(r["action"] for r in await pg.rows()) == sorted(f"ok{i}" for i in range(10) if i != 6)
    stats = writer.stats()
    assert (stats.written, stats.rejected) == (9, 1)
    assert "database rejected audit row" in caplog.text
    assert "no_evil" in caplog.text
    assert "hunter2" not in caplog.text  # the reason is logged, never the row's metadata


async def test_rejected_row_on_retry_path_is_isolated_too(pg: PgTarget) -> None:
    conn = await pg.connect()
    try:
        await conn.execute(f"ALTER TABLE {pg.qualified} ADD CONSTRAINT no_evil CHECK (action <> 'evil')")
    finally:
        await conn.close()
    rows = [to_row(AuditEvent(a)) for a in ("a", "evil", "b", "c")]
    sink = PostgresSink(pg.dsn, schema=pg.schema)
    try:
        rejected = await sink.write(rows, retry=True)
    finally:
        await sink.aclose()
    assert [r.row[2] for r in rejected] == ["evil"]
    assert "CheckViolationError" in rejected[0].reason
    assert sorted(r["action"] for r in await pg.rows()) == ["a", "b", "c"]


async def test_many_events_from_one_burst_all_land(pg: PgTarget) -> None:
    async with writer_for(pg, batch_size=500) as writer:
        for i in range(5000):
            writer.record_nowait("bulk", metadata={"i": i})
    count = (await pg.fetch("SELECT count(DISTINCT id) AS n, count(*) AS m FROM {t}"))[0]
    assert (count["n"], count["m"]) == (5000, 5000)
