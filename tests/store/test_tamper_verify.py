"""verify against a real PostgreSQL: a clean chain passes, every kind of tampering is caught."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from audit_middleware.store.digests import compute_mac, digests_table, row_hash, row_text_sql
from audit_middleware.store.verify import Checkpoint, CheckpointError, verify
from tests.conftest import PgTarget
from tests.tamper_helpers import KEY, OTHER_KEY, Target, make_rows

pytestmark = pytest.mark.anyio

BATCHES = 4
SIZE = 5  # rows per batch: 20 rows, seq 1..4


@pytest.fixture
async def chain(pg: PgTarget, users: list[uuid.UUID]) -> AsyncIterator[Target]:
    """Four digested batches of five rows each (tricky metadata, users and NULL users mixed)."""
    target = Target(pg.dsn, pg.schema)
    await target.setup()
    rows = make_rows(BATCHES * SIZE, users=[*users, None])
    await target.write([rows[i : i + SIZE] for i in range(0, len(rows), SIZE)])
    yield target


async def nth_id(chain: Target, seq: int, index: int) -> uuid.UUID:
    [row] = await chain.sql("SELECT ids[$2::int] AS id FROM {d} WHERE seq = $1", seq, index + 1)
    event_id: uuid.UUID = row["id"]
    return event_id


# -- clean ----------------------------------------------------------------------------------


async def test_clean_chain_verifies(chain: Target) -> None:
    report = await chain.verify()
    assert report.ok, report.findings
    assert (report.digests, report.rows, report.first_seq, report.head_seq) == (BATCHES, BATCHES * SIZE, 1, BATCHES)


async def test_row_hashes_match_what_postgres_stores(chain: Target) -> None:
    # The writer's server-side canonical text and verify's recomputation agree on jsonb-normalised values.
    [digest] = await chain.sql("SELECT ids, row_hashes FROM {d} WHERE seq = 2")
    rows = await chain.sql(f"SELECT id::text, {row_text_sql()} AS text FROM {{t}} WHERE id = ANY($1)", digest["ids"])
    by_id = {r["id"]: r["text"] for r in rows}
    for i, event_id in enumerate(digest["ids"]):
        expected = digest["row_hashes"][i * 32 : (i + 1) * 32]
        assert row_hash(by_id[str(event_id)]) == expected


async def test_wrong_key_fails_every_mac(chain: Target) -> None:
    report = await chain.verify(key=OTHER_KEY)
    assert report.counts == {"bad_mac": BATCHES}


async def test_empty_chain_verifies(pg: PgTarget) -> None:
    target = Target(pg.dsn, pg.schema)
    await target.setup()
    report = await target.verify()
    assert report.ok and report.digests == 0 and report.head() is None


# -- altered rows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "assignment",
    [
        "metadata = jsonb_set(metadata, '{n}', '999')",
        "action = 'innocent'",
        "user_id = NULL",
        "user_id = gen_random_uuid()",
        "created_at = created_at + interval '1 microsecond'",
        'metadata = metadata || \'{"ip": "10.9.9.9"}\'',
    ],
)
async def test_altered_value_is_caught_at_its_row(chain: Target, assignment: str) -> None:
    victim = await nth_id(chain, 3, 2)
    await chain.sql("ALTER TABLE {t} DROP CONSTRAINT IF EXISTS user_audit_logs_user_id_fkey")
    await chain.sql(f"UPDATE {{t}} SET {assignment} WHERE id = $1", victim)
    report = await chain.verify()
    assert report.counts == {"altered": 1}
    assert (report.findings[0].seq, report.findings[0].id) == (3, str(victim))


async def test_swapped_created_at_is_caught(chain: Target) -> None:
    a, b = await nth_id(chain, 1, 0), await nth_id(chain, 1, 1)
    await chain.sql(
        "UPDATE {t} SET created_at = CASE WHEN id = $1 THEN (SELECT created_at FROM {t} WHERE id = $2) "
        "ELSE (SELECT created_at FROM {t} WHERE id = $1) END WHERE id IN ($1, $2)",
        a,
        b,
    )
    report = await chain.verify()
    assert report.counts == {"altered": 2}


async def test_swapped_ids_are_caught(chain: Target) -> None:
    a, b = await nth_id(chain, 2, 0), await nth_id(chain, 4, 4)
    tmp = uuid.uuid4()
    for old, new in ((a, tmp), (b, a), (tmp, b)):
        await chain.sql("UPDATE {t} SET id = $2 WHERE id = $1", old, new)
    report = await chain.verify()
    assert report.counts == {"altered": 2}
    assert [f.seq for f in report.findings] == [2, 4]


# -- deleted rows ---------------------------------------------------------------------------


async def test_deleted_middle_row_is_caught(chain: Target) -> None:
    victim = await nth_id(chain, 2, 3)
    await chain.sql("DELETE FROM {t} WHERE id = $1", victim)
    report = await chain.verify()
    assert report.counts == {"deleted": 1}
    assert (report.findings[0].seq, report.findings[0].id) == (2, str(victim))


async def test_deleted_newest_rows_are_caught(chain: Target) -> None:
    await chain.sql("DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = $1)", BATCHES)
    report = await chain.verify()
    assert report.counts == {"deleted": SIZE}
    assert {f.seq for f in report.findings} == {BATCHES}


async def test_deleted_newest_rows_and_digests_are_caught_by_the_checkpoint(chain: Target, tmp_path: Path) -> None:
    clean = await chain.verify()
    head = clean.head()
    assert head is not None
    head.dump(tmp_path / "head.json", KEY)
    await chain.sql("DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq >= 3)")
    await chain.sql("DELETE FROM {d} WHERE seq >= 3")
    assert (await chain.verify()).ok  # without the checkpoint the shortened chain is self-consistent
    report = await chain.verify(checkpoint=Checkpoint.load(tmp_path / "head.json"))
    assert report.counts == {"checkpoint": 1}
    assert "behind the checkpoint" in report.findings[0].detail


async def test_checkpoint_matches_a_longer_chain(chain: Target, tmp_path: Path) -> None:
    head = (await chain.verify()).head()
    assert head is not None
    head.dump(tmp_path / "head.json", KEY)
    await chain.write([make_rows(3, start=100)])
    report = await chain.verify(checkpoint=Checkpoint.load(tmp_path / "head.json"))
    assert report.ok and report.checkpoint == f"seq {BATCHES} matches the checkpoint"


async def test_rewritten_chain_does_not_match_the_checkpoint(chain: Target, tmp_path: Path) -> None:
    head = (await chain.verify()).head()
    assert head is not None
    head.dump(tmp_path / "head.json", KEY)
    await chain.sql("UPDATE {d} SET mac = $1 WHERE seq = $2", bytes(32), BATCHES)
    report = await chain.verify(checkpoint=Checkpoint.load(tmp_path / "head.json"))
    assert report.counts["checkpoint"] == 1 and report.counts["bad_mac"] == 1


async def test_forged_checkpoint_file_is_caught(chain: Target, tmp_path: Path) -> None:
    head = (await chain.verify()).head()
    assert head is not None
    Checkpoint(schema=head.schema, table=head.table, seq=1, mac=head.mac).dump(tmp_path / "cp.json", OTHER_KEY)
    report = await chain.verify(checkpoint=Checkpoint.load(tmp_path / "cp.json"))
    assert report.counts == {"checkpoint": 1}


def test_unreadable_checkpoint_raises(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError):
        Checkpoint.load(tmp_path / "bad.json")


# -- forged rows and digests ----------------------------------------------------------------


async def test_forged_row_is_reported_unrecorded(chain: Target) -> None:
    forged = uuid.uuid4()
    await chain.sql("INSERT INTO {t} (id, action, metadata) VALUES ($1, 'login', '{}')", forged)
    report = await chain.verify()
    assert report.counts == {"unrecorded": 1}
    assert report.findings[0].id == str(forged)


async def test_rehashed_digest_without_the_key_fails_its_mac(chain: Target) -> None:
    # The attacker alters a row and recomputes its row hash and the batch hash (no key needed for
    # those), but cannot recompute the HMAC.
    victim = await nth_id(chain, 2, 0)
    await chain.sql("UPDATE {t} SET action = 'nothing_to_see' WHERE id = $1", victim)
    [r] = await chain.sql(f"SELECT {row_text_sql()} AS text FROM {{t}} WHERE id = $1", victim)
    fresh = row_hash(r["text"])
    [d] = await chain.sql("SELECT row_hashes FROM {d} WHERE seq = 2")
    hashes = fresh + bytes(d["row_hashes"])[32:]
    await chain.sql(
        "UPDATE {d} SET row_hashes = $1, batch_hash = $2 WHERE seq = 2", hashes, hashlib.sha256(hashes).digest()
    )
    report = await chain.verify()
    assert report.counts == {"bad_mac": 1}
    assert report.findings[0].seq == 2


async def test_forged_digest_made_with_another_key_fails(chain: Target) -> None:
    forged = uuid.uuid4()
    await chain.sql("INSERT INTO {t} (id, action, metadata) VALUES ($1, 'login', '{}')", forged)
    [head] = await chain.sql("SELECT seq, mac FROM {d} ORDER BY seq DESC LIMIT 1")
    [r] = await chain.sql(
        f"""SELECT {row_text_sql()} AS text, to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS.US') AS c """
        "FROM {t} WHERE id = $1",
        forged,
    )
    hashes = row_hash(r["text"])
    batch = hashlib.sha256(hashes).digest()
    seq = head["seq"] + 1
    mac = compute_mac(OTHER_KEY.encode(), seq, bytes(head["mac"]), batch, r["c"], r["c"])
    await chain.sql(
        "INSERT INTO {d} (seq, ids, row_hashes, batch_hash, min_created_at, max_created_at, prev_mac, mac) "
        "VALUES ($1, $2, $3, $4, $5::text::timestamp, $5::text::timestamp, $6, $7)",
        seq,
        [forged],
        hashes,
        batch,
        r["c"],
        bytes(head["mac"]),
        mac,
    )
    report = await chain.verify()
    assert report.counts == {"bad_mac": 1}
    assert report.findings[0].seq == seq


async def test_reordered_digests_break_the_chain(chain: Target) -> None:
    await chain.sql("UPDATE {d} SET seq = -seq WHERE seq IN (2, 3)")
    await chain.sql("UPDATE {d} SET seq = CASE seq WHEN -2 THEN 3 ELSE 2 END WHERE seq < 0")
    report = await chain.verify()
    assert report.counts["broken_link"] >= 1 and report.counts["bad_mac"] == 2
    assert report.findings[0].seq == 2


async def test_deleted_oldest_digest_is_caught(chain: Target) -> None:
    await chain.sql("DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 1)")
    await chain.sql("DELETE FROM {d} WHERE seq = 1")
    report = await chain.verify()
    assert report.counts == {"broken_link": 1}
    assert "starts at seq 2" in report.findings[0].detail


async def test_deleted_middle_digest_is_caught(chain: Target) -> None:
    await chain.sql("DELETE FROM {d} WHERE seq = 2")
    report = await chain.verify()
    # its rows are now in no digest, and the chain has a hole
    assert report.counts["broken_link"] == 2 and report.counts["unrecorded"] == SIZE


def test_zero_mac_and_names() -> None:
    assert digests_table("user_audit_logs") == "user_audit_log_digests"
    assert len(digests_table("x" * 63)) <= 63


# -- concurrency ----------------------------------------------------------------------------


async def test_concurrent_writers_build_one_chain(pg: PgTarget) -> None:
    target = Target(pg.dsn, pg.schema)
    await target.setup()
    batches = [make_rows(7, start=i * 7) for i in range(24)]
    await asyncio.gather(*(target.write(batches[w::4]) for w in range(4)))
    report = await target.verify()
    assert report.ok, report.findings
    assert (report.digests, report.rows, report.head_seq) == (24, 24 * 7, 24)


async def test_session_datestyle_does_not_change_the_hashes(pg: PgTarget) -> None:
    target = Target(pg.dsn, pg.schema)
    await target.setup()
    conn = await asyncpg.connect(pg.dsn, server_settings={"DateStyle": "SQL, DMY"})
    try:
        await target.writer.write(conn, make_rows(4), retry=False, timeout=10)
        assert await conn.fetchval("SHOW DateStyle") == "SQL, DMY"  # SET LOCAL ended with the transaction
        report = await verify(conn, key=KEY, schema=pg.schema)
    finally:
        await conn.close()
    assert report.ok and report.rows == 4
    assert (await target.verify()).ok  # and a default (ISO) session agrees


async def test_small_groups_give_the_same_positions(chain: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    # verify fetches rows for groups of digests; group edges must not shift positions
    monkeypatch.setattr("audit_middleware.store.verify.GROUP_IDS", 3)
    victim = await nth_id(chain, 3, 4)
    await chain.sql("UPDATE {t} SET action = 'moved' WHERE id = $1", victim)
    report = await chain.verify()
    assert report.counts == {"altered": 1} and report.rows == BATCHES * SIZE
    assert (report.findings[0].seq, report.findings[0].id) == (3, str(victim))


async def test_canonical_texts_of_look_alike_rows_differ(pg: PgTarget) -> None:
    rid = uuid.uuid4()
    variants = [
        ("NULL", "NULL"),
        ("''", "NULL"),
        ("'-'", "NULL"),
        ("'0:'", "NULL"),
        ("NULL", "'{}'"),
        ("''", "'{}'"),
        ("NULL", "'\"-\"'"),
        ("'1:a'", "'1'"),
        ("'1:a1'", "NULL"),
    ]
    texts = set()
    for action, metadata in variants:
        [row] = await pg.fetch(
            f"SELECT {row_text_sql('r')} AS text FROM (SELECT $1::uuid AS id, NULL::uuid AS user_id, "
            f"{action}::varchar AS action, {metadata}::jsonb AS metadata, "
            "'2026-11-25 10:00:00'::timestamp AS created_at) r",
            rid,
        )
        texts.add(row["text"])
    assert len(texts) == len(variants)
