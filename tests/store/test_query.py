"""The read API: keyset pagination on (created_at, id), filters, cursors, and the indexes it relies on."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from audit_middleware.errors import ConfigurationError
from audit_middleware.store.query import Cursor, EventFilter, count_events, fetch_page, iter_events, page_sql
from tests.conftest import PgTarget
from tests.ops_data import T0, load, ordered_keys, row

pytestmark = pytest.mark.anyio


async def read_all(pg: PgTarget, filters: EventFilter | None = None, **options: object) -> list[uuid.UUID]:
    conn = await pg.connect()
    try:
        return [r.id async for r in iter_events(conn, filters, schema=pg.schema, **options)]  # type: ignore[arg-type]
    finally:
        await conn.close()


# --- pagination ----------------------------------------------------------------------------------


@pytest.mark.parametrize("page_size", [1, 2, 3, 7, 50])
async def test_pages_across_equal_created_at_neither_skip_nor_repeat(pg: PgTarget, page_size: int) -> None:
    # 5 timestamps x 4 rows each: every page boundary falls inside a run of equal created_at.
    rows = [row("a", T0 + dt.timedelta(seconds=i // 4)) for i in range(20)]
    await load(pg, rows)
    assert await read_all(pg, page_size=page_size) == ordered_keys(rows)


@pytest.mark.parametrize("page_size", [1, 3, 50])
async def test_descending_pages_are_the_exact_reverse(pg: PgTarget, page_size: int) -> None:
    rows = [row("a", T0 + dt.timedelta(seconds=i // 3)) for i in range(15)]
    await load(pg, rows)
    assert await read_all(pg, page_size=page_size, descending=True) == ordered_keys(rows)[::-1]


async def test_fetch_page_hands_back_a_cursor_until_the_last_page(pg: PgTarget) -> None:
    rows = [row("a", T0) for _ in range(5)]  # all at the same instant: only the id orders them
    await load(pg, rows)
    conn = await pg.connect()
    try:
        seen: list[uuid.UUID] = []
        page = await fetch_page(conn, schema=pg.schema, page_size=2)
        pages = 1
        while True:
            seen += [r.id for r in page.rows]
            if page.next is None:
                break
            page = await fetch_page(conn, schema=pg.schema, page_size=2, after=Cursor.parse(str(page.next)))
            pages += 1
    finally:
        await conn.close()
    assert seen == ordered_keys(rows)
    assert pages == 3


async def test_after_cursor_and_limit(pg: PgTarget) -> None:
    rows = [row("a", T0 + dt.timedelta(minutes=i)) for i in range(10)]
    await load(pg, rows)
    keys = ordered_keys(rows)
    start = Cursor(T0 + dt.timedelta(minutes=3), keys[3])
    assert await read_all(pg, after=start, limit=4, page_size=3) == keys[4:8]


def test_cursor_token_round_trip_and_rejects_garbage() -> None:
    cursor = Cursor(dt.datetime(2026, 1, 2, 3, 4, 5, 6), uuid.uuid4())
    assert Cursor.parse(str(cursor)) == cursor
    with pytest.raises(ConfigurationError, match="cursor"):
        Cursor.parse("yesterday|nope")


# --- filters -------------------------------------------------------------------------------------


async def test_filters_by_user_action_and_time_range(pg: PgTarget, users: list[uuid.UUID]) -> None:
    u1, u2, _ = users
    rows = [
        row("login", T0, user=u1),
        row("login", T0 + dt.timedelta(days=1), user=u1),
        row("logout", T0 + dt.timedelta(days=1), user=u1),
        row("login", T0 + dt.timedelta(days=1), user=u2),
        row("login", T0 + dt.timedelta(days=2), user=u1),
    ]
    await load(pg, rows)
    since, until = T0 + dt.timedelta(hours=1), T0 + dt.timedelta(days=2)
    assert await read_all(pg, EventFilter(user_id=str(u1), action="login", since=since, until=until)) == [rows[1][0]]
    assert len(await read_all(pg, EventFilter(user_id=u1))) == 4
    # until is exclusive, since inclusive
    assert await read_all(pg, EventFilter(since=T0 + dt.timedelta(days=2))) == [rows[4][0]]


async def test_aware_times_are_converted_to_utc(pg: PgTarget) -> None:
    rows = [row("a", T0), row("b", T0 + dt.timedelta(hours=2))]
    await load(pg, rows)
    paris = dt.timezone(dt.timedelta(hours=1))
    since = (T0 + dt.timedelta(hours=1)).replace(tzinfo=dt.UTC).astimezone(paris)
    assert await read_all(pg, EventFilter(since=since)) == [rows[1][0]]


async def test_action_prefix_treats_like_wildcards_literally(pg: PgTarget) -> None:
    rows = [row("password_reset", T0), row("password_change", T0), row("passwordXreset", T0), row("login", T0)]
    await load(pg, rows)
    found = set(await read_all(pg, EventFilter(action_prefix="password_")))
    assert found == {rows[0][0], rows[1][0]}


async def test_ip_and_metadata_containment(pg: PgTarget) -> None:
    rows = [
        row("login", T0, metadata={"ip": "10.0.0.1", "http": {"method": "POST", "status": 200}}),
        row("login", T0, metadata={"ip": "10.0.0.2", "http": {"method": "POST", "status": 401}}),
        row("login", T0, metadata={"ip": "10.0.0.1", "http": {"method": "GET", "status": 401}}),
    ]
    await load(pg, rows)
    assert set(await read_all(pg, EventFilter(ip="10.0.0.1"))) == {rows[0][0], rows[2][0]}
    contained = await read_all(pg, EventFilter(metadata={"http": {"status": 401}}, ip="10.0.0.1"))
    assert contained == [rows[2][0]]


async def test_rows_decode_metadata_and_serialise(pg: PgTarget) -> None:
    rows = [row("login", T0, metadata={"ip": "10.0.0.1", "n": [1, 2]})]
    await load(pg, rows)
    conn = await pg.connect()
    try:
        [found] = (await fetch_page(conn, schema=pg.schema)).rows
        total = await count_events(conn, EventFilter(action="login"), schema=pg.schema)
    finally:
        await conn.close()
    assert found.metadata == {"ip": "10.0.0.1", "n": [1, 2]}
    assert found.to_dict()["created_at"] == "2026-03-01T12:00:00Z"
    assert total == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"user_id": "not-a-uuid"}, "user_id"),
        ({"since": "2026-01-01"}, "since"),
        ({"since": T0, "until": T0}, "since"),
        ({"metadata": ["ip"]}, "metadata"),
    ],
)
def test_invalid_filters_name_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        EventFilter(**options)  # type: ignore[arg-type]


# --- the indexes behind the pages ----------------------------------------------------------------


async def plan(pg: PgTarget, filters: EventFilter, after: Cursor | None) -> str:
    sql, args = page_sql(filters, schema=pg.schema, table=pg.table, descending=False, after=after, limit=100)
    conn = await pg.connect()
    try:
        await conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        lines = await conn.fetch(f"EXPLAIN {sql}", *args)
    finally:
        await conn.close()
    return "\n".join(r[0] for r in lines)


async def test_keyset_page_reads_the_created_at_index_in_order_without_sorting(pg: PgTarget) -> None:
    text = await plan(pg, EventFilter(since=T0), Cursor(T0, uuid.uuid4()))
    assert "idx_user_audit_logs_created_at_id" in text
    assert "Sort" not in text


async def test_user_page_uses_the_user_created_at_index(pg: PgTarget) -> None:
    text = await plan(pg, EventFilter(user_id=uuid.uuid4(), since=T0), Cursor(T0, uuid.uuid4()))
    assert "idx_user_audit_logs_user_id_created_at" in text
    assert "Sort" not in text


async def test_user_ref_page_uses_the_user_ref_index(pg: PgTarget) -> None:
    text = await plan(pg, EventFilter(user=42, since=T0), Cursor(T0, uuid.uuid4()))
    assert "idx_user_audit_logs_user_ref_created_at" in text
    assert "Sort" not in text
