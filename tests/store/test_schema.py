"""init-db creates exactly the specified table, idempotently, with the optional foreign key."""

from __future__ import annotations

import uuid

import pytest

from audit_middleware.errors import SchemaError
from audit_middleware.store.schema import apply, quote_ident
from tests.conftest import PgTarget

pytestmark = pytest.mark.anyio


async def columns(target: PgTarget) -> list[tuple[str, str, str, str | None]]:
    rows = await target.fetch(
        "SELECT column_name, data_type || coalesce('(' || character_maximum_length || ')', ''), is_nullable, "
        "column_default FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 "
        "ORDER BY ordinal_position",
        target.schema,
        target.table,
    )
    return [tuple(r) for r in rows]


async def indexes(target: PgTarget) -> dict[str, str]:
    rows = await target.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
        target.schema,
        target.table,
    )
    return {r["indexname"]: r["indexdef"] for r in rows}


async def test_table_matches_the_specification(empty_schema: PgTarget) -> None:
    conn = await empty_schema.connect()
    try:
        report = await apply(conn, schema=empty_schema.schema, users_table=None)
    finally:
        await conn.close()
    assert report.migrations[0] == "001_user_audit_logs.sql"
    assert await columns(empty_schema) == [
        ("id", "uuid", "NO", "gen_random_uuid()"),
        ("user_id", "uuid", "YES", None),
        ("action", "character varying(100)", "YES", None),
        ("metadata", "jsonb", "YES", None),
        ("created_at", "timestamp without time zone", "NO", "CURRENT_TIMESTAMP"),
    ]
    found = await indexes(empty_schema)
    assert found["user_audit_logs_pkey"].startswith("CREATE UNIQUE INDEX")
    assert found["idx_user_audit_logs_user_id"].endswith("USING btree (user_id)")
    assert found["idx_user_audit_logs_action"].endswith("USING btree (action)")
    # Added for reading at scale (002_created_at_index.sql; see test_query.py).
    assert found["idx_user_audit_logs_created_at_id"].endswith("USING btree (created_at, id)")
    assert found["idx_user_audit_logs_user_id_created_at"].endswith("USING btree (user_id, created_at, id)")
    # 003_user_ref_index.sql: users whose ids are not UUIDs (metadata.user_ref), partial.
    assert found["idx_user_audit_logs_user_ref_created_at"].endswith(
        "USING btree (((metadata ->> 'user_ref'::text)), created_at, id) WHERE (metadata ? 'user_ref'::text)"
    )
    # The viewer's failed outcomes by time (004_failed_index.sql): a partial index of the failed rows only.
    assert found["idx_user_audit_logs_failed_created_at"].endswith(
        "USING btree (created_at, id) WHERE ((action)::text ~~ '%\\_failed'::text)"
    )
    assert len(found) == 7


async def test_primary_key_is_id(empty_schema: PgTarget) -> None:
    conn = await empty_schema.connect()
    try:
        await apply(conn, schema=empty_schema.schema, users_table=None)
        key = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p'",
            empty_schema.qualified,
        )
    finally:
        await conn.close()
    assert key == "PRIMARY KEY (id)"


async def test_running_twice_changes_nothing_and_keeps_rows(pg: PgTarget) -> None:
    conn = await pg.connect()
    try:
        await conn.execute(f"INSERT INTO {pg.qualified} (action) VALUES ('kept')")
        before = (await columns(pg), await indexes(pg))
        await apply(conn, schema=pg.schema, users_table="users")
        await apply(conn, schema=pg.schema, users_table="users")
    finally:
        await conn.close()
    assert (await columns(pg), await indexes(pg)) == before
    rows = await pg.rows()
    assert [r["action"] for r in rows] == ["kept"]
    assert rows[0]["id"].version == 4  # the column default still serves rows others insert


async def test_foreign_key_sets_null_when_the_user_is_deleted(pg: PgTarget) -> None:
    user = uuid.uuid4()
    conn = await pg.connect()
    try:
        definition = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'f'",
            pg.qualified,
        )
        await conn.execute(f"INSERT INTO {quote_ident(pg.schema)}.users (id) VALUES ($1)", user)
        await conn.execute(f"INSERT INTO {pg.qualified} (user_id, action) VALUES ($1, 'login')", user)
        await conn.execute(f"DELETE FROM {quote_ident(pg.schema)}.users WHERE id = $1", user)
    finally:
        await conn.close()
    assert definition == f"FOREIGN KEY (user_id) REFERENCES {pg.schema}.users(id) ON DELETE SET NULL"
    rows = await pg.rows()
    assert [(r["user_id"], r["action"]) for r in rows] == [(None, "login")]


async def test_foreign_key_is_skipped_with_a_message_without_users(
    empty_schema: PgTarget, caplog: pytest.LogCaptureFixture
) -> None:
    conn = await empty_schema.connect()
    try:
        report = await apply(conn, schema=empty_schema.schema)
    finally:
        await conn.close()
    assert report.foreign_key == f"skipped: {empty_schema.schema}.users does not exist (run init-db again once it does)"
    assert "without a foreign key" in caplog.text


async def test_foreign_key_reported_as_existing_on_second_run(pg: PgTarget) -> None:
    conn = await pg.connect()
    try:
        report = await apply(conn, schema=pg.schema)
    finally:
        await conn.close()
    assert report.foreign_key == "exists"


async def test_other_table_name_gets_its_own_index_names(empty_schema: PgTarget) -> None:
    conn = await empty_schema.connect()
    try:
        await apply(conn, schema=empty_schema.schema, table="audit_events", users_table=None)
    finally:
        await conn.close()
    target = PgTarget(empty_schema.dsn, empty_schema.schema, "audit_events")
    assert set(await indexes(target)) == {
        "audit_events_pkey",
        "idx_audit_events_user_id",
        "idx_audit_events_action",
        "idx_audit_events_created_at_id",
        "idx_audit_events_user_id_created_at",
        "idx_audit_events_user_ref_created_at",
        "idx_audit_events_failed_created_at",
    }


async def test_conflicting_existing_object_raises_schema_error(empty_schema: PgTarget) -> None:
    conn = await empty_schema.connect()
    try:
        await conn.execute(f"CREATE VIEW {empty_schema.qualified} AS SELECT 1 AS id")
        with pytest.raises(SchemaError, match="could not create"):
            await apply(conn, schema=empty_schema.schema, users_table=None)
    finally:
        await conn.close()
