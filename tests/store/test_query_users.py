"""Integer (and other non-UUID) user ids end to end: written by the real writer path, found by every reader.

Django and most Flask apps have integer ids; the writer keeps them as text in ``metadata.user_ref``
(``user_id`` is a uuid). ``EventFilter(user=...)``, ``--user`` and ``--meta user_ref=`` find them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import uuid
from typing import Any

import pytest

from audit_middleware.cli.main import EXIT_OK, EXIT_USAGE, main
from audit_middleware.errors import ConfigurationError
from audit_middleware.store.follow import follow
from audit_middleware.store.query import Cursor, EventFilter, count_events, fetch_page, iter_events
from audit_middleware.store.stats import collect_stats
from audit_middleware.writer.records import COLUMNS, AuditEvent, to_row
from tests.conftest import PgTarget

pytestmark = pytest.mark.anyio

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
UID = uuid.UUID("7f1e3d98-3240-4e58-bb57-93e219daaa10")


async def write_events(pg: PgTarget, users: list[Any]) -> None:
    """One row per user id, converted by the writer's own to_row (what the middleware stores)."""
    rows = [
        to_row(AuditEvent("login", user, {"ip": "10.0.0.1"}, created_at=T0 + dt.timedelta(seconds=i)))
        for i, user in enumerate(users)
    ]
    conn = await pg.connect()
    try:
        await conn.execute(
            f'ALTER TABLE "{pg.schema}".user_audit_logs DROP CONSTRAINT IF EXISTS user_audit_logs_user_id_fkey'
        )
        await conn.copy_records_to_table(pg.table, records=rows, columns=COLUMNS, schema_name=pg.schema)
    finally:
        await conn.close()


async def refs(pg: PgTarget, filters: EventFilter) -> list[Any]:
    conn = await pg.connect()
    try:
        return [
            r.user_id or (r.metadata or {}).get("user_ref") async for r in iter_events(conn, filters, schema=pg.schema)
        ]
    finally:
        await conn.close()


@pytest.mark.parametrize("user", [42, "42"])
async def test_an_integer_user_is_found_by_its_ref(pg: PgTarget, user: int | str) -> None:
    await write_events(pg, [42, 7, 420, "42x", UID, None, 42])
    assert await refs(pg, EventFilter(user=user)) == ["42", "42"]


async def test_a_uuid_user_is_found_in_user_id(pg: PgTarget) -> None:
    await write_events(pg, [42, UID, str(UID).upper()])
    assert await refs(pg, EventFilter(user=str(UID))) == [UID, UID]
    assert await refs(pg, EventFilter(user=UID)) == [UID, UID]


async def test_a_ref_stored_as_a_json_number_is_found_too(pg: PgTarget) -> None:
    # Rows written by hand (or by an older tool) may hold the ref as a number: ->> reads both as text.
    conn = await pg.connect()
    try:
        await conn.execute(
            f'INSERT INTO "{pg.schema}".user_audit_logs (action, metadata) VALUES '
            """('login', '{"user_ref": 42}'), ('login', '{"user_ref": "42"}'), ('login', '{"user_ref": 43}')"""
        )
    finally:
        await conn.close()
    assert len(await refs(pg, EventFilter(user=42))) == 2


async def test_a_long_or_dirty_ref_is_matched_as_the_writer_stored_it(pg: PgTarget) -> None:
    long_ref, dirty = "u" * 300, "a\x00b"
    await write_events(pg, [long_ref, dirty])
    assert await refs(pg, EventFilter(user=long_ref)) == ["u" * 200]
    assert await refs(pg, EventFilter(user=dirty)) == ["a\ufffdb"]


async def test_every_reader_takes_the_user_filter(pg: PgTarget) -> None:
    await write_events(pg, [42, 7, 42])
    f = EventFilter(user=42)
    conn = await pg.connect()
    try:
        assert await count_events(conn, f, schema=pg.schema) == 2
        page = await fetch_page(conn, f, schema=pg.schema, page_size=1)
        assert page.next is not None
        rest = await fetch_page(conn, f, schema=pg.schema, after=page.next)
        assert [r.metadata["user_ref"] for r in page.rows + rest.rows] == ["42", "42"]
        stats = await collect_stats(conn, f, schema=pg.schema)
        assert stats.total == 2
        followed = follow(conn, f, schema=pg.schema, last=5, poll_interval=0.05)
        got = [await anext(followed), await anext(followed)]
        await followed.aclose()
        assert [r.metadata["user_ref"] for r in got] == ["42", "42"]
    finally:
        await conn.close()


def test_user_filter_keeps_the_old_fields_working() -> None:
    assert EventFilter(user_id=str(UID)).user_id == UID
    with pytest.raises(ConfigurationError, match="user_id must be a UUID"):
        EventFilter(user_id="42")
    assert EventFilter(user=42).user_ref == "42"
    assert EventFilter(user=str(UID)).user == UID and EventFilter(user=UID).user_ref is None


@pytest.mark.parametrize("bad", [True, 4.2, b"42", [42]])
def test_user_of_another_type_is_refused(bad: Any) -> None:
    with pytest.raises(ConfigurationError, match="user must be"):
        EventFilter(user=bad)


# --- command line -------------------------------------------------------------------------------------


def cli(pg: PgTarget, *args: str) -> int:
    return main([args[0], "--dsn", pg.dsn, "--schema", pg.schema, *args[1:]])


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("query", ["--user", "42", "--format", "jsonl"]),
        ("query", ["--meta", "user_ref=42", "--format", "jsonl"]),
        ("export", ["--user", "42"]),
        ("export", ["--meta", "user_ref=42"]),
        ("tail", ["--user", "42", "--json", "--timeout", "0.3", "--poll-interval", "0.05"]),
    ],
)
def test_cli_finds_an_integer_user(
    pg: PgTarget, capsys: pytest.CaptureFixture[str], command: str, options: list[str]
) -> None:
    asyncio.run(write_events(pg, [42, 7, 42]))
    assert cli(pg, command, *options) == EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["metadata"]["user_ref"] for line in lines] == ["42", "42"]


def test_stats_takes_an_integer_user(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(write_events(pg, [42, 7, 42]))
    assert cli(pg, "stats", "--user", "42", "--since", "2026-01-01", "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out)["total"] == 2


# --- bad filters: one clear ConfigurationError, never a driver error ---------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"metadata": {"k": "a\x00b"}}, "must not contain NUL"),
        ({"metadata": {"a\x00": 1}}, "must not contain NUL"),
        ({"metadata": {"k": ["x", {"y": "\x00"}]}}, "must not contain NUL"),
        ({"metadata": {"k": {1, 2}}}, "not JSON"),
        ({"metadata": {"k": object()}}, "not JSON"),
        ({"metadata": {"k": math.nan}}, "not JSON"),
        ({"metadata": {"k": "\ud800"}}, "not JSON"),
        ({"action": "a\x00"}, "must not contain NUL"),
        ({"action_prefix": "a\x00"}, "must not contain NUL"),
        ({"ip": "1.2.3.4\x00"}, "must not contain NUL"),
        ({"action": 42}, "must be a string"),
    ],
)
def test_bad_filters_raise_configuration_error(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        EventFilter(**fields)


async def test_a_backslash_u0000_text_is_a_fine_filter(pg: PgTarget) -> None:
    conn = await pg.connect()
    try:
        found = await count_events(conn, EventFilter(metadata={"k": "\\u0000"}), schema=pg.schema)
    finally:
        await conn.close()
    assert found == 0


@pytest.mark.parametrize("token", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
def test_a_cursor_outside_utc_years_is_a_configuration_error(token: str) -> None:
    with pytest.raises(ConfigurationError, match="cursor"):
        Cursor.parse(f"{token}|{UID}")


def test_cli_meta_nul_is_a_usage_error(pg: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(pg, "query", "--meta", "k=a\x00b") == EXIT_USAGE
    assert "must not contain NUL" in capsys.readouterr().err
