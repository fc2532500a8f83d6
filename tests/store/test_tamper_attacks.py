"""The tamper suite: an attacker with superuser and no digest key, every column as an attack surface.

Each attack runs against a chain whose oldest batch was pruned the genuine way (a signed stub), and
must be reported by ``verify`` both without and with a checkpoint taken before the attack. The
digests table's columns: seq, ids, row_hashes, batch_hash, min_created_at, max_created_at,
prev_mac, mac, written_at (informational, read by nothing), pruned_before, prune_mac. A row's:
id, user_id, action, metadata, created_at, and its presence (deleted, inserted).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from audit_middleware.errors import ConfigurationError, SchemaError
from audit_middleware.store.digests import compute_prune_mac, prune_batch, sign_stubs
from audit_middleware.store.retention import prune
from audit_middleware.store.schema.tamper import apply_digests
from audit_middleware.store.verify import Checkpoint, verify
from tests.conftest import PgTarget
from tests.tamper_helpers import KEY, Target, make_rows

pytestmark = pytest.mark.anyio

BATCHES = 5
SIZE = 4  # make_rows: row i is created at 2026-11-01 + i seconds; batch s holds rows 4(s-1)..4s-1
BASE = dt.datetime(2026, 11, 1)
STUB_CUTOFF = BASE + dt.timedelta(seconds=SIZE)  # just after batch 1: the genuine prune stubs seq 1

# Statements run as superuser with the triggers off. {t}: the audit table, {d}: the digests table.
# Each attack lists the finding kinds verify must report (more may come with them).
ATTACKS: dict[str, tuple[list[str], set[str]]] = {
    # -- the issue's attack: a batch disguised as pruned, the horizon moved into the future --------
    "issue: stub of seq 2 with a future cutoff, then a recent row deleted": (
        [
            "DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 2)",
            "UPDATE {d} SET ids = '{{}}', row_hashes = '', pruned_before = now() + interval '1 day' WHERE seq = 2",
            "DELETE FROM {t} WHERE id = (SELECT id FROM {t} ORDER BY created_at DESC LIMIT 1)",
        ],
        {"pruned", "deleted"},
    ),
    "a middle batch turned into a stub just past its newest row": (
        [
            "DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 3)",
            "UPDATE {d} SET ids = '{{}}', row_hashes = '', "
            "pruned_before = max_created_at + interval '1 microsecond' WHERE seq = 3",
        ],
        {"pruned"},
    ),
    "a batch stubbed with the genuine stub's signature and cutoff": (
        [
            "DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 2)",
            "UPDATE {d} SET ids = '{{}}', row_hashes = '', pruned_before = s.pruned_before, prune_mac = s.prune_mac "
            "FROM (SELECT pruned_before, prune_mac FROM {d} WHERE seq = 1) s WHERE seq = 2",
        ],
        {"pruned"},
    ),
    # -- pruned_before / prune_mac of the genuine stub ---------------------------------------------
    "the genuine stub's cutoff moved forward, then rows of the next batch deleted": (
        [
            "UPDATE {d} SET pruned_before = pruned_before + interval '1 hour' WHERE seq = 1",
            "DELETE FROM {t} WHERE id IN (SELECT unnest(ids[1:2]) FROM {d} WHERE seq = 2)",
        ],
        {"pruned", "deleted"},
    ),
    "the genuine stub's cutoff moved into the future": (
        ["UPDATE {d} SET pruned_before = '9999-01-01' WHERE seq = 1"],
        {"pruned"},
    ),
    "the genuine stub's cutoff moved back": (
        ["UPDATE {d} SET pruned_before = pruned_before - interval '1 microsecond' WHERE seq = 1"],
        {"pruned"},
    ),
    "the genuine stub's signature removed": (["UPDATE {d} SET prune_mac = NULL WHERE seq = 1"], {"pruned"}),
    "the genuine stub's signature altered": (
        ["UPDATE {d} SET prune_mac = sha256(prune_mac) WHERE seq = 1"],
        {"pruned"},
    ),
    "a planted row hidden in the genuine stub's ids": (
        [
            "INSERT INTO {t} (id, action, created_at) VALUES ('00000000-0000-4000-8000-000000000001', 'x', now())",
            "UPDATE {d} SET ids = '{{00000000-0000-4000-8000-000000000001}}' WHERE seq = 1",
        ],
        {"unrecorded", "pruned"},
    ),
    "row hashes planted in the genuine stub": (
        ["UPDATE {d} SET row_hashes = (SELECT row_hashes FROM {d} WHERE seq = 2) WHERE seq = 1"],
        {"pruned"},
    ),
    "the genuine stub made a digest again": (["UPDATE {d} SET pruned_before = NULL WHERE seq = 1"], {"bad_hash"}),
    "a prune signature on an unpruned digest": (
        ["UPDATE {d} SET prune_mac = (SELECT prune_mac FROM {d} WHERE seq = 1) WHERE seq = 2"],
        {"pruned"},
    ),
    "pruned_before set on an unpruned digest": (
        ["UPDATE {d} SET pruned_before = max_created_at + interval '1 second' WHERE seq = 4"],
        {"pruned"},
    ),
    # -- the other digest columns ------------------------------------------------------------------
    "seq: two digests swapped": (
        [
            "UPDATE {d} SET seq = -3 WHERE seq = 3",
            "UPDATE {d} SET seq = 3 WHERE seq = 4",
            "UPDATE {d} SET seq = 4 WHERE seq = -3",
        ],
        {"broken_link"},
    ),
    "seq: a middle digest deleted with its rows": (
        [
            "DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 3)",
            "DELETE FROM {d} WHERE seq = 3",
        ],
        {"broken_link"},
    ),
    "seq: the stub and the oldest batch deleted with its rows": (
        [
            "DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 2)",
            "DELETE FROM {d} WHERE seq <= 2",
        ],
        {"broken_link"},
    ),
    "ids: one id replaced by another row's": (
        ["UPDATE {d} SET ids[1] = (SELECT ids[1] FROM {d} WHERE seq = 4) WHERE seq = 3"],
        {"altered"},
    ),
    "ids: two ids swapped": (["UPDATE {d} SET ids = ARRAY[ids[2], ids[1]] || ids[3:] WHERE seq = 3"], {"altered"}),
    "ids: a row dropped from its digest, hashes redone": (
        [
            "UPDATE {d} SET ids = ids[2:], row_hashes = substring(row_hashes FROM 33), "
            "batch_hash = sha256(substring(row_hashes FROM 33)) WHERE seq = 3",
        ],
        {"bad_mac", "unrecorded"},
    ),
    "ids: emptied with the rows deleted": (
        [
            "DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 3)",
            "UPDATE {d} SET ids = '{{}}', row_hashes = '' WHERE seq = 3",
        ],
        {"bad_hash"},
    ),
    "row_hashes: one hash replaced": (
        ["UPDATE {d} SET row_hashes = overlay(row_hashes PLACING sha256('x') FROM 1) WHERE seq = 3"],
        {"bad_hash"},
    ),
    "batch_hash: recomputed after a row_hashes change": (
        [
            "UPDATE {d} SET row_hashes = overlay(row_hashes PLACING sha256('x') FROM 1), "
            "batch_hash = sha256(overlay(row_hashes PLACING sha256('x') FROM 1)) WHERE seq = 3",
        ],
        {"bad_mac"},
    ),
    "min_created_at moved back (to pass for a straddling batch)": (
        ["UPDATE {d} SET min_created_at = '2000-01-01' WHERE seq = 2"],
        {"bad_mac"},
    ),
    "max_created_at moved back (to look prunable)": (
        ["UPDATE {d} SET max_created_at = '2000-01-01' WHERE seq = 4"],
        {"bad_mac"},
    ),
    "prev_mac changed": (["UPDATE {d} SET prev_mac = sha256(prev_mac) WHERE seq = 3"], {"broken_link", "bad_mac"}),
    "mac changed": (["UPDATE {d} SET mac = sha256(mac) WHERE seq = 3"], {"bad_mac", "broken_link"}),
    # -- the rows ----------------------------------------------------------------------------------
    "row id changed": (
        ["UPDATE {t} SET id = gen_random_uuid() WHERE id = (SELECT ids[2] FROM {d} WHERE seq = 3)"],
        {"deleted", "unrecorded"},
    ),
    "row user_id changed": (
        ["UPDATE {t} SET user_id = gen_random_uuid() WHERE id = (SELECT ids[2] FROM {d} WHERE seq = 3)"],
        {"altered"},
    ),
    "row action changed": (
        ["UPDATE {t} SET action = 'innocent' WHERE id = (SELECT ids[2] FROM {d} WHERE seq = 3)"],
        {"altered"},
    ),
    "row metadata changed": (
        [
            'UPDATE {t} SET metadata = metadata || \'{{"ip": "10.9.9.9"}}\' '
            "WHERE id = (SELECT ids[2] FROM {d} WHERE seq = 3)"
        ],
        {"altered"},
    ),
    "row created_at moved before the prune horizon": (
        ["UPDATE {t} SET created_at = '2000-01-01' WHERE id = (SELECT ids[2] FROM {d} WHERE seq = 3)"],
        {"altered"},
    ),
    "row deleted": (["DELETE FROM {t} WHERE id = (SELECT ids[2] FROM {d} WHERE seq = 3)"], {"deleted"}),
    "row deleted from the batch right after the stub": (
        ["DELETE FROM {t} WHERE id = (SELECT ids[1] FROM {d} WHERE seq = 2)"],
        {"deleted"},
    ),
    "row inserted": (
        ["INSERT INTO {t} (id, action, created_at) VALUES (gen_random_uuid(), 'x', now())"],
        {"unrecorded"},
    ),
    "row inserted older than the prune horizon": (
        ["INSERT INTO {t} (id, action, created_at) VALUES (gen_random_uuid(), 'x', '2000-01-01')"],
        {"unrecorded"},
    ),
}


@pytest.fixture
async def pruned_chain(pg: PgTarget) -> AsyncIterator[Target]:
    """Five digested batches of four rows; seq 1 pruned the genuine way (signed stub, rows deleted)."""
    target = Target(pg.dsn, pg.schema)
    await target.setup()
    await target.sql("ALTER TABLE {t} DROP CONSTRAINT IF EXISTS user_audit_logs_user_id_fkey")
    await target.write([make_rows(SIZE, start=i * SIZE) for i in range(BATCHES)])
    conn = await asyncpg.connect(target.dsn)
    try:
        async with conn.transaction():
            stubbed = await prune_batch(conn, schema=pg.schema, table="user_audit_logs", before=STUB_CUTOFF, key=KEY)
    finally:
        await conn.close()
    assert stubbed == (1, SIZE)
    report = await target.verify()
    assert report.ok, report.findings
    assert (report.pruned_digests, report.horizon) == (1, STUB_CUTOFF.strftime("%Y-%m-%dT%H:%M:%S.%f"))
    yield target


async def attack(target: Target, statements: list[str]) -> None:
    """Run ``statements`` in one transaction as a superuser past any trigger would."""
    conn = await asyncpg.connect(target.dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            for statement in statements:
                await conn.execute(statement.format(t=target.audit, d=target.digests))
    finally:
        await conn.close()


@pytest.mark.parametrize("with_checkpoint", [False, True], ids=["no checkpoint", "checkpoint"])
@pytest.mark.parametrize("name", list(ATTACKS))
async def test_attack_is_detected(pruned_chain: Target, tmp_path: Path, name: str, with_checkpoint: bool) -> None:
    statements, expected = ATTACKS[name]
    point = None
    if with_checkpoint:
        head = (await pruned_chain.verify()).head()
        assert head is not None
        head.dump(tmp_path / "head.json", KEY)
        point = Checkpoint.load(tmp_path / "head.json")
    await attack(pruned_chain, statements)
    report = await pruned_chain.verify(checkpoint=point)
    assert not report.ok
    assert expected <= set(report.counts), report.findings


async def test_the_issue_attack_no_longer_moves_the_horizon(pruned_chain: Target) -> None:
    await attack(pruned_chain, ATTACKS["issue: stub of seq 2 with a future cutoff, then a recent row deleted"][0])
    report = await pruned_chain.verify()
    assert report.horizon == STUB_CUTOFF.strftime("%Y-%m-%dT%H:%M:%S.%f")  # only the genuine stub counts
    assert report.pruned_missing == 0
    assert [f.seq for f in report.findings if f.kind == "pruned"] == [2]
    assert "not signed" in next(f.detail for f in report.findings if f.kind == "pruned")


@pytest.mark.parametrize("first_cut", [4, 1], ids=["newest digests", "every digest"])
async def test_a_chain_cut_with_its_rows_needs_the_checkpoint(
    pruned_chain: Target, tmp_path: Path, first_cut: int
) -> None:
    # What a self-consistent chain cannot show: cutting its head off, or emptying both tables (documented).
    head = (await pruned_chain.verify()).head()
    assert head is not None
    head.dump(tmp_path / "head.json", KEY)
    cut = [
        f"DELETE FROM {{t}} WHERE id IN (SELECT unnest(ids) FROM {{d}} WHERE seq >= {first_cut})",
        f"DELETE FROM {{d}} WHERE seq >= {first_cut}",
    ]
    await attack(pruned_chain, cut)
    assert (await pruned_chain.verify()).ok
    report = await pruned_chain.verify(checkpoint=Checkpoint.load(tmp_path / "head.json"))
    assert set(report.counts) == {"checkpoint"}


async def test_written_at_is_read_by_nothing(pruned_chain: Target) -> None:
    # Not covered by any MAC on purpose: no check depends on it, so changing it hides nothing.
    before = await pruned_chain.verify()
    await attack(pruned_chain, ["UPDATE {d} SET written_at = '2000-01-01'"])
    after = await pruned_chain.verify()
    assert after.ok
    assert (after.digests, after.rows, after.horizon) == (before.digests, before.rows, before.horizon)


# -- rules for stubs made with the key ------------------------------------------------------------


async def sign(target: Target, seq: int) -> None:
    """Sign digest ``seq``'s current pruned_before with the key (what only the key holder can do)."""
    [d] = await target.sql(
        "SELECT mac, to_char(pruned_before, 'YYYY-MM-DD\"T\"HH24:MI:SS.US') AS cutoff FROM {d} WHERE seq = $1", seq
    )
    signature = compute_prune_mac(KEY.encode(), seq, bytes(d["mac"]), d["cutoff"])
    await target.sql("UPDATE {d} SET prune_mac = $2 WHERE seq = $1", seq, signature)


async def test_a_signed_stub_after_an_unpruned_digest_is_reported(pruned_chain: Target) -> None:
    await attack(
        pruned_chain,
        [
            "DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 3)",
            "UPDATE {d} SET ids = '{{}}', row_hashes = '', "
            "pruned_before = max_created_at + interval '1 second' WHERE seq = 3",
        ],
    )
    await sign(pruned_chain, 3)
    report = await pruned_chain.verify()
    assert report.counts == {"pruned": 1}
    assert "after an unpruned digest" in report.findings[0].detail


async def test_a_signed_stub_with_a_future_cutoff_is_reported(pruned_chain: Target) -> None:
    await attack(pruned_chain, ["UPDATE {d} SET pruned_before = now() + interval '1 day' WHERE seq = 1"])
    await sign(pruned_chain, 1)
    report = await pruned_chain.verify()
    assert report.counts == {"pruned": 1}
    assert "in the future" in report.findings[0].detail
    assert report.horizon is None


# -- a prune stays verifiable ------------------------------------------------------------------------


async def test_prune_takes_only_the_oldest_digests(pg: PgTarget) -> None:
    # seq 2 holds rows older than seq 1 (a spool replayed late): pruning seq 2 alone would leave a stub
    # after an unpruned digest, so it waits until seq 1 goes too.
    target = Target(pg.dsn, pg.schema)
    await target.setup()
    await target.write([make_rows(2, start=100), make_rows(2, start=0)])
    conn = await asyncpg.connect(target.dsn)
    try:
        report = await prune(conn, cutoff=BASE + dt.timedelta(seconds=50), schema=pg.schema, key=KEY)
        assert (report.deleted, report.kept_from) == (0, BASE)
        report = await prune(conn, cutoff=BASE + dt.timedelta(seconds=200), schema=pg.schema, key=KEY)
        assert report.deleted == 4
    finally:
        await conn.close()
    checked = await target.verify()
    assert checked.ok, checked.findings
    assert checked.pruned_digests == 2


async def test_prune_of_a_digested_table_needs_the_key(pruned_chain: Target) -> None:
    conn = await asyncpg.connect(pruned_chain.dsn)
    try:
        with pytest.raises(ConfigurationError, match="digest key"):
            await prune(conn, cutoff=BASE + dt.timedelta(seconds=10), schema=pruned_chain.schema)
        dry = await prune(conn, cutoff=BASE + dt.timedelta(seconds=10), schema=pruned_chain.schema, dry_run=True)
    finally:
        await conn.close()
    assert dry.deleted == 6


# -- chains pruned before stubs were signed ------------------------------------------------------------


async def test_a_stub_of_an_earlier_version_is_reported_until_signed(pg: PgTarget) -> None:
    target = Target(pg.dsn, pg.schema)
    await target.setup()
    await target.write([make_rows(SIZE, start=i * SIZE) for i in range(3)])
    # What prune did before stubs were signed, on a digests table made then (no prune_mac column).
    await attack(
        target,
        [
            "ALTER TABLE {d} DROP COLUMN prune_mac",
            "DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 1)",
            f"UPDATE {{d}} SET ids = '{{{{}}}}', row_hashes = '', pruned_before = '{STUB_CUTOFF}' WHERE seq = 1",
        ],
    )
    report = await target.verify()
    assert report.counts == {"pruned": 1}
    assert "sign-stubs" in report.findings[0].detail
    conn = await asyncpg.connect(target.dsn)
    try:
        await apply_digests(conn, schema=pg.schema)  # init-db --digests adds the column in place
        assert await sign_stubs(conn, schema=pg.schema, table="user_audit_logs", key=KEY) == 1
        assert await sign_stubs(conn, schema=pg.schema, table="user_audit_logs", key=KEY) == 0
    finally:
        await conn.close()
    assert (await target.verify()).ok


async def test_the_batch_hash_of_a_stub_still_binds_its_mac(pruned_chain: Target) -> None:
    # A stub keeps batch_hash: changing it breaks the digest's own MAC, as for any digest.
    await attack(pruned_chain, ["UPDATE {d} SET batch_hash = sha256('x') WHERE seq = 1"])
    report = await pruned_chain.verify()
    assert set(report.counts) == {"bad_mac"}


async def test_prune_refuses_a_future_cutoff_on_a_digested_table(pruned_chain: Target) -> None:
    # verify reports a stub whose cutoff is in the future: prune must never make one.
    conn = await asyncpg.connect(pruned_chain.dsn)
    try:
        with pytest.raises(ConfigurationError, match="in the future"):
            await prune(conn, cutoff=dt.datetime(2999, 1, 1), schema=pruned_chain.schema, key=KEY)
    finally:
        await conn.close()
    assert (await pruned_chain.verify()).ok


# -- a batch straddling the prune horizon ---------------------------------------------------------------


@pytest.fixture
async def straddled_chain(pg: PgTarget) -> AsyncIterator[Target]:
    """Three batches of four rows pruned at +6 s: batch 1 a stub, batch 2 (+4..+7 s) keeps its two newest."""
    target = Target(pg.dsn, pg.schema)
    await target.setup()
    await target.write([make_rows(SIZE, start=i * SIZE) for i in range(3)])
    conn = await asyncpg.connect(target.dsn)
    try:
        report = await prune(conn, cutoff=BASE + dt.timedelta(seconds=6), schema=pg.schema, key=KEY)
    finally:
        await conn.close()
    assert report.deleted == 6
    checked = await target.verify()
    assert checked.ok and checked.pruned_missing == 2, checked.findings
    yield target


async def test_every_row_of_a_straddling_batch_deleted_is_caught(straddled_chain: Target) -> None:
    await attack(straddled_chain, ["DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 2)"])
    report = await straddled_chain.verify()
    assert report.counts == {"deleted": 4}


async def test_some_newer_rows_of_a_straddling_batch_deleted_pass_as_pruned(straddled_chain: Target) -> None:
    # The documented blind spot: a digest does not record each row's time, so a row newer than the horizon
    # missing from a batch that straddles it cannot be told from one prune deleted. It is counted, not hidden.
    await attack(straddled_chain, ["DELETE FROM {t} WHERE id = (SELECT ids[3] FROM {d} WHERE seq = 2)"])
    report = await straddled_chain.verify()
    assert report.ok
    assert report.pruned_missing == 3


async def test_sign_stubs_never_signs_a_stub_newer_than_a_signed_one(pruned_chain: Target) -> None:
    # After an upgrade and a signed prune, an unsigned stub can only be a forgery: --sign-stubs must not adopt it.
    await attack(pruned_chain, ATTACKS["a middle batch turned into a stub just past its newest row"][0])
    conn = await asyncpg.connect(pruned_chain.dsn)
    try:
        assert await sign_stubs(conn, schema=pruned_chain.schema, table="user_audit_logs", key=KEY) == 0
    finally:
        await conn.close()
    report = await pruned_chain.verify()
    assert [f.seq for f in report.findings if f.kind == "pruned"] == [3]


async def test_a_search_path_with_an_attackers_unnest_does_not_hide_a_planted_row(pruned_chain: Target) -> None:
    # A superuser can set the verifying role's search_path (ALTER ROLE ... SET search_path) to a schema whose
    # unnest(uuid[]) adds the planted row's id to every digest's list: verify reads only built-in functions.
    planted = "00000000-0000-4000-8000-0000000000aa"
    evil = f"{pruned_chain.schema}_evil"
    await attack(
        pruned_chain,
        [
            f"INSERT INTO {{t}} (id, action, created_at) VALUES ('{planted}', 'x', now())",
            f"CREATE SCHEMA {evil}",
            f"CREATE FUNCTION {evil}.unnest(uuid[]) RETURNS SETOF uuid LANGUAGE sql "
            f"AS $$ SELECT pg_catalog.unnest($1) UNION ALL SELECT '{planted}'::uuid $$",
        ],
    )
    conn = await asyncpg.connect(pruned_chain.dsn)
    try:
        await conn.execute(f"SET search_path = {evil}, pg_catalog")
        assert await conn.fetchval(f"SELECT count(*) FROM (SELECT unnest(ids) FROM {pruned_chain.digests}) s") > 0
        report = await verify(conn, key=KEY, schema=pruned_chain.schema)
    finally:
        await conn.execute(f"DROP SCHEMA {evil} CASCADE")
        await conn.close()
    assert report.counts == {"unrecorded": 1}
    assert report.findings[0].id == planted


async def test_row_level_security_cannot_hide_a_planted_row_from_the_verifying_role(pruned_chain: Target) -> None:
    # verify needs only SELECT: a superuser can add a policy that hides a planted row from the verifying role
    # alone, while every other reader (query, stats, the viewer) still sees it. verify must not report "intact".
    planted = "00000000-0000-4000-8000-0000000000bb"
    role = f"{pruned_chain.schema}_verifier"
    await attack(
        pruned_chain,
        [
            f"INSERT INTO {{t}} (id, action, created_at) VALUES ('{planted}', 'login', now())",
            f"CREATE ROLE {role} LOGIN",
            f"GRANT USAGE ON SCHEMA {pruned_chain.schema} TO {role}",
            f"GRANT SELECT ON {{t}}, {{d}} TO {role}",
            "ALTER TABLE {t} ENABLE ROW LEVEL SECURITY",
            f"CREATE POLICY hide ON {{t}} FOR SELECT TO {role} USING (id <> '{planted}')",
        ],
    )
    parts = urlsplit(pruned_chain.dsn)
    dsn = urlunsplit(parts._replace(netloc=role + "@" + parts.netloc.rpartition("@")[2]))
    try:
        conn = await asyncpg.connect(dsn)
        try:
            assert await conn.fetchval(f"SELECT count(*) FROM {pruned_chain.audit} WHERE id = '{planted}'") == 0
            with pytest.raises(SchemaError, match="row-level security"):
                await verify(conn, key=KEY, schema=pruned_chain.schema)
        finally:
            await conn.close()
    finally:
        await pruned_chain.sql(f"DROP OWNED BY {role}")
        await pruned_chain.sql(f"DROP ROLE {role}")
    assert (await pruned_chain.verify()).counts == {"unrecorded": 1}  # a role that bypasses the policy sees it


async def test_rows_older_than_the_horizon_written_after_the_prune_pass_as_pruned(pruned_chain: Target) -> None:
    # The documented blind spot: a batch written after a prune with rows older than its cutoff (a spool replayed
    # late, a host whose clock is behind) looks like one a later prune emptied; deleting it is counted, not caught.
    # Its rows are at +0..+3 s, before the genuine stub's cutoff (+4 s).
    await pruned_chain.write([make_rows(SIZE, start=0)])
    late = "(SELECT max(seq) FROM {d})"
    await attack(pruned_chain, [f"DELETE FROM {{t}} WHERE id IN (SELECT unnest(ids) FROM {{d}} WHERE seq = {late})"])
    report = await pruned_chain.verify()
    assert report.ok
    assert report.pruned_missing == SIZE
