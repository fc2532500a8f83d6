"""The viewer against the database itself: read-only by construction, a SELECT-only role is enough,
the list query is an index keyset scan, and the integrity page reads the digest chain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from audit_middleware.store.query import page_sql
from audit_middleware.store.schema import quote_ident
from audit_middleware.viewer import create_app
from audit_middleware.viewer.queries import ViewFilter, parse_filter
from tests.conftest import PgTarget
from tests.tamper_helpers import KEY, Target, make_rows
from tests.viewer.conftest import allow, open_client
from tests.viewer.data import Dataset

pytestmark = pytest.mark.anyio

PAGES = [
    "/",
    "/?action=login*&failed=1",
    "/?ip=10.0.0.0/8&q=login",
    "/investigate",
    "/integrity",
    "/live",
    "/api/events",
    "/export.csv",
    "/export.jsonl",
]


@pytest.fixture
async def reader(pg: PgTarget) -> AsyncIterator[str]:
    """A role that may only SELECT the audit table; yields its DSN."""
    role = f"viewer_ro_{uuid.uuid4().hex[:8]}"
    conn = await pg.connect()
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
        await conn.execute(f"GRANT USAGE ON SCHEMA {quote_ident(pg.schema)} TO {role}")
        await conn.execute(f"GRANT SELECT ON {pg.qualified} TO {role}")
        rest = pg.dsn.partition("://")[2].partition("@")[2]
        yield f"postgresql://{role}@{rest}"
    finally:
        await conn.execute(f"DROP OWNED BY {role}")
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def test_every_page_works_with_a_select_only_role(pg: PgTarget, dataset: Dataset, reader: str) -> None:
    conn = await asyncpg.connect(reader)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # the role really cannot write
            await conn.execute(f"INSERT INTO {pg.qualified} (action) VALUES ('x')")
    finally:
        await conn.close()
    app = create_app(dsn=reader, authorize=allow, schema=pg.schema)
    async with await open_client(app) as client:
        for path in PAGES:
            response = await client.get(path)
            assert response.status_code == 200, (path, response.text[:300])
            assert 'class="error"' not in response.text, path
        row = dataset.rows[0][0]
        assert (await client.get(f"/events/{row}")).status_code == 200
    await app.state.viewer.aclose()


async def test_the_viewers_connections_refuse_writes_even_for_a_superuser(pg: PgTarget, dataset: Dataset) -> None:
    app = create_app(dsn=pg.dsn, authorize=allow, schema=pg.schema)
    pool = await app.state.viewer.pool()
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await pool.execute(f"DELETE FROM {pg.qualified}")
    await app.state.viewer.aclose()
    assert len(await pg.rows()) == len(dataset.rows)


@pytest.mark.parametrize(
    "params",
    [{}, {"action": "login*"}, {"failed": "1"}, {"ip": "203.0.113.0/24", "q": "victim"}, {"user": "github|octocat"}],
)
async def test_the_list_query_is_a_keyset_index_scan_without_offset_or_count(
    pg: PgTarget, dataset: Dataset, params: dict[str, str]
) -> None:
    f = parse_filter(params)
    sql, args = page_sql(f, schema=pg.schema, table="user_audit_logs", descending=True, after=None, limit=50)
    assert "OFFSET" not in sql.upper() and "COUNT(" not in sql.upper()
    conn = await pg.connect()
    try:
        await conn.execute("SET enable_seqscan = off")  # a 130-row table: ask whether the index *can* serve it
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
    finally:
        await conn.close()
    assert "Index Scan Backward" in plan and "Sort" not in plan, plan


def test_view_filter_conditions_extend_the_event_filter() -> None:
    args: list[object] = []
    conditions = ViewFilter(action="login", failed=True, text="a%b").where(args)
    assert conditions[0] == "action = $1" and "LIKE '%\\_failed'" in conditions[1]
    assert args == ["login", "%a\\%b%"]


async def test_integrity_page_shows_the_chain_head_and_verifies_with_the_key(target: Target, pg: PgTarget) -> None:
    await target.write([make_rows(5), make_rows(5, start=5)])
    app = create_app(dsn=pg.dsn, authorize=allow, schema=pg.schema, digest_key=KEY)
    async with await open_client(app) as client:
        html = (await client.get("/integrity")).text
        assert "chain head</dt><dd>seq 2," in html and "Not verified by this viewer yet" in html
        response = await client.post("/integrity/verify")
        assert response.status_code == 303
        html = (await client.get("/integrity")).text
        assert 'id="verify-result">clean' in html and "2 digests, 10 rows checked" in html
        await target.sql("UPDATE {t} SET action = 'forged' WHERE id = (SELECT id FROM {t} LIMIT 1)")
        await client.post("/integrity/verify")
        html = (await client.get("/integrity")).text
        assert 'id="verify-result">TAMPERING' in html and "altered: 1" in html
    pool = await app.state.viewer.pool()
    assert pool.get_size() == 1  # the connection verify used, back in the pool...
    assert await pool.fetchval("SHOW statement_timeout") == "30s"  # ...with the pages' timeout again
    await app.state.viewer.aclose()


async def test_integrity_page_without_the_key_shows_the_head_only(target: Target, pg: PgTarget) -> None:
    await target.write([make_rows(3)])
    app = create_app(dsn=pg.dsn, authorize=allow, schema=pg.schema)
    async with await open_client(app) as client:
        html = (await client.get("/integrity")).text
        assert "chain head</dt><dd>seq 1," in html and "needs the digest key" in html
        assert (await client.post("/integrity/verify")).status_code == 303
        assert "Not verified by this viewer yet" in (await client.get("/integrity")).text
    await app.state.viewer.aclose()


async def test_a_database_error_is_shown_not_raised(pg: PgTarget, dataset: Dataset) -> None:
    app = create_app(dsn=pg.dsn, authorize=allow, schema=pg.schema, table="no_such_table")
    client: httpx.AsyncClient
    async with await open_client(app) as client:
        response = await client.get("/")
        assert response.status_code == 503 and "the query failed" in response.text
    await app.state.viewer.aclose()


async def test_verify_compares_the_chain_head_with_an_exported_checkpoint(
    target: Target, pg: PgTarget, tmp_path: Path
) -> None:
    await target.write([make_rows(4), make_rows(4, start=4)])
    head = (await target.verify()).head()
    assert head is not None
    path = tmp_path / "checkpoint.json"
    head.dump(path, KEY)
    app = create_app(dsn=pg.dsn, authorize=allow, schema=pg.schema, digest_key=KEY, checkpoint=str(path))
    async with await open_client(app) as client:
        await client.post("/integrity/verify")
        assert "checkpoint: seq 2 matches the checkpoint" in (await client.get("/integrity")).text
        await target.sql("DELETE FROM {d} WHERE seq = 2")  # the newest digest deleted
        await client.post("/integrity/verify")
        html = (await client.get("/integrity")).text
        assert 'id="verify-result">TAMPERING' in html and "checkpoint: 1" in html
    await app.state.viewer.aclose()
