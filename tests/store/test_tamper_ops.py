"""Digest retries, the append-only triggers, prune and the verify / init-db command line."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path

import asyncpg
import pytest

from audit_middleware.cli.main import EXIT_FAILURE, EXIT_OK, EXIT_TAMPERED, EXIT_UNREACHABLE, EXIT_USAGE, main
from audit_middleware.errors import ConfigurationError, SchemaError
from audit_middleware.store.digests import DigestWriter, prune_batch
from audit_middleware.store.schema.tamper import apply_append_only, writer_grants
from audit_middleware.writer.config import SecretKey, WriterConfig
from tests.conftest import PgTarget
from tests.tamper_helpers import KEY, Target, make_rows, partitioned_target

pytestmark = pytest.mark.anyio


# -- retries --------------------------------------------------------------------------------


async def test_retry_of_a_committed_batch_adds_no_digest(target: Target) -> None:
    rows = make_rows(6)
    assert await target.write([rows]) == [6]
    assert await target.write([rows], retry=True) == [0]  # the ambiguous commit had landed
    [count] = await target.sql("SELECT count(*) AS n FROM {d}")
    assert count["n"] == 1
    assert (await target.verify()).ok


async def test_retry_after_a_partial_write_digests_only_the_new_rows(target: Target) -> None:
    rows = make_rows(8)
    await target.write([rows[:3]])  # an earlier attempt stored these (with their digest)
    assert await target.write([rows], retry=True) == [5]
    digests = await target.sql("SELECT seq, ids FROM {d} ORDER BY seq")
    assert [[str(i) for i in d["ids"]] for d in digests] == [
        [str(r[0]) for r in rows[:3]],
        [str(r[0]) for r in rows[3:]],
    ]
    report = await target.verify()
    assert report.ok and report.rows == 8


async def test_failed_batch_leaves_neither_rows_nor_digest(target: Target) -> None:
    rows = make_rows(3, users=[uuid.uuid4()])  # unknown user: foreign key violation
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await target.write([rows])
    assert await target.sql("SELECT 1 FROM {t}") == []
    assert await target.sql("SELECT 1 FROM {d}") == []


async def test_writer_refuses_a_missing_digests_table(pg: PgTarget) -> None:
    conn = await pg.connect()
    try:
        with pytest.raises(SchemaError, match="init-db --digests"):
            await DigestWriter(schema=pg.schema, table="user_audit_logs", key=KEY).check(conn)
    finally:
        await conn.close()


# -- append-only ----------------------------------------------------------------------------


@pytest.fixture
async def locked(target: Target) -> Target:
    await target.write([make_rows(4)])
    conn = await asyncpg.connect(target.dsn)
    try:
        assert await apply_append_only(conn, schema=target.schema) == [
            f"{target.schema}.user_audit_logs",
            f"{target.schema}.user_audit_log_digests",
        ]
        await apply_append_only(conn, schema=target.schema)  # idempotent
    finally:
        await conn.close()
    return target


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {t} SET action = 'x'",
        "DELETE FROM {t}",
        "TRUNCATE {t}",
        "UPDATE {d} SET mac = ''",
        "DELETE FROM {d}",
        "TRUNCATE {d}",
        "UPDATE {t} SET user_id = NULL",  # only the foreign key's own SET NULL may do this
    ],
)
async def test_append_only_rejects_changes(locked: Target, statement: str) -> None:
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await locked.sql(statement)
    assert (await locked.verify()).ok


async def test_append_only_still_accepts_writes(locked: Target) -> None:
    await locked.write([make_rows(3, start=10)])
    report = await locked.verify()
    assert report.ok and report.rows == 7


async def test_prune_path_may_delete(locked: Target) -> None:
    conn = await asyncpg.connect(locked.dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL audit_middleware.prune = 'on'")
            await conn.execute(f"DELETE FROM {locked.audit} WHERE action = 'action.0'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # SET LOCAL ended with its transaction
            await conn.execute(f"DELETE FROM {locked.audit}")
    finally:
        await conn.close()


async def test_deleting_a_user_still_works_and_verify_names_it(pg: PgTarget, users: list[uuid.UUID]) -> None:
    target = Target(pg.dsn, pg.schema)
    await target.setup()
    await target.write([make_rows(3, users=users[:1])])
    conn = await asyncpg.connect(target.dsn)
    try:
        await apply_append_only(conn, schema=target.schema)
        await conn.execute(f'DELETE FROM "{pg.schema}".users WHERE id = $1', users[0])  # ON DELETE SET NULL
    finally:
        await conn.close()
    report = await target.verify()
    assert report.counts == {"altered": 3}
    assert "deleting the user" in report.findings[0].detail


async def test_writer_role_grants_are_enough_and_no_more(locked: Target) -> None:
    role = f"aw_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(locked.dsn)
    try:
        await conn.execute(f'CREATE ROLE "{role}" NOLOGIN')
        try:
            await conn.execute(writer_grants(schema=locked.schema, role=role))
            async with conn.transaction():
                await conn.execute(f'SET LOCAL ROLE "{role}"')
                writer = DigestWriter(schema=locked.schema, table="user_audit_logs", key=KEY)
                rows = make_rows(4, start=50)
                async with conn.transaction():  # savepoint: the writer's own transaction nests
                    assert await writer.write(conn, rows, retry=False, timeout=10) == 4
                    assert await writer.write(conn, rows, retry=True, timeout=10) == 0
                for statement in (f"DELETE FROM {locked.audit}", f"UPDATE {locked.digests} SET mac = ''"):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                        async with conn.transaction():  # refused by the GRANTs before any trigger runs
                            await conn.execute(statement)
        finally:
            await conn.execute(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')
    finally:
        await conn.close()
    report = await locked.verify()
    assert report.ok and report.rows == 8


# -- prune ----------------------------------------------------------------------------------


async def test_prune_stubs_old_digests_and_verify_still_passes(locked: Target) -> None:
    await locked.write([make_rows(4, start=i * 4) for i in range(1, 5)])  # 5 batches, 20 rows, 1 s apart
    cutoff = dt.datetime(2026, 11, 1, 0, 0, 10)  # rows 0..9 are older: batches 1-2 entirely, batch 3 half
    conn = await asyncpg.connect(locked.dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL audit_middleware.prune = 'on'")
            assert await prune_batch(conn, schema=locked.schema, table="user_audit_logs", before=cutoff, key=KEY) == (
                2,
                8,
            )
            # the ops prune then deletes what is left by created_at (or drops a partition)
            await conn.execute(f"DELETE FROM {locked.audit} WHERE created_at < $1", cutoff)
        async with conn.transaction():
            await conn.execute("SET LOCAL audit_middleware.prune = 'on'")
            assert await prune_batch(conn, schema=locked.schema, table="user_audit_logs", before=cutoff, key=KEY) == (
                0,
                0,
            )
    finally:
        await conn.close()
    report = await locked.verify()
    assert report.ok, report.findings
    assert (report.pruned_digests, report.pruned_missing, report.rows) == (2, 2, 10)


async def test_disguising_a_recent_batch_as_pruned_is_caught(target: Target) -> None:
    await target.write([make_rows(3), make_rows(3, start=3)])
    await target.sql("DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 2)")
    await target.sql("UPDATE {d} SET ids = '{}', row_hashes = '', pruned_before = '2026-11-01 00:00:04' WHERE seq = 2")
    report = await target.verify()
    assert report.counts == {"pruned": 1}


async def test_prune_without_digests_table_is_a_no_op(pg: PgTarget) -> None:
    conn = await pg.connect()
    try:
        assert await prune_batch(
            conn, schema=pg.schema, table="user_audit_logs", before=dt.datetime.now(), key=KEY
        ) == (0, 0)
    finally:
        await conn.close()


# -- configuration --------------------------------------------------------------------------


def test_digest_key_is_masked_and_validated() -> None:
    config = WriterConfig(digest_key=SecretKey(KEY))
    assert KEY not in repr(config) and KEY not in f"{config.digest_key}" and KEY not in str(config.digest_key)
    assert config.digest_key is not None and config.digest_key.reveal() == KEY.encode()
    assert KEY not in repr(DigestWriter(schema="public", table="user_audit_logs", key=KEY))
    with pytest.raises(ConfigurationError, match="digest_key must be at least 16"):
        WriterConfig(digest_key=SecretKey("short"))


def test_digest_key_comes_from_the_environment() -> None:
    config = WriterConfig.from_env({"AUDIT_DIGEST_KEY": KEY})
    assert isinstance(config.digest_key, SecretKey) and config.digest_key.reveal() == KEY.encode()


# -- command line ---------------------------------------------------------------------------


def test_init_db_digests_and_append_only(empty_schema: PgTarget, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["init-db", "--dsn", empty_schema.dsn, "--schema", empty_schema.schema, "--no-users-fk"]
    assert main([*args, "--digests", "--append-only", "--writer-role", "app_audit"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"{empty_schema.schema}.user_audit_log_digests: ready" in out
    assert f"append-only: {empty_schema.schema}.user_audit_logs, {empty_schema.schema}.user_audit_log_digests" in out
    assert f'GRANT INSERT ON "{empty_schema.schema}"."user_audit_logs" TO "app_audit";' in out
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        asyncio.run(empty_schema.fetch("DELETE FROM {t}"))


def test_verify_command_clean_then_tampered(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(target.write([make_rows(3), make_rows(3, start=3)]))
    monkeypatch.setenv("AUDIT_DIGEST_KEY", KEY)
    base = ["verify", "--dsn", target.dsn, "--schema", target.schema]
    cp = tmp_path / "head.json"
    assert main([*base, "--write-checkpoint", str(cp)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "OK: chain intact" in out and "2 digests (seq 1..2), 6 rows checked" in out
    assert json.loads(cp.read_text())["seq"] == 2 and KEY not in cp.read_text()
    asyncio.run(target.sql("DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 2)"))
    asyncio.run(target.sql("DELETE FROM {d} WHERE seq = 2"))
    assert main([*base, "--checkpoint", str(cp)]) == EXIT_TAMPERED
    out = capsys.readouterr().out
    assert "TAMPERING FOUND: checkpoint 1" in out and "behind the checkpoint" in out


def test_verify_command_usage_and_unreachable(
    target: Target, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AUDIT_DIGEST_KEY", raising=False)
    assert main(["verify", "--dsn", target.dsn, "--schema", target.schema]) == EXIT_USAGE
    monkeypatch.setenv("AUDIT_DIGEST_KEY", KEY)
    assert main(["verify", "--dsn", "postgresql://nobody@127.0.0.1:1/none"]) == EXIT_UNREACHABLE
    assert main(["verify", "--dsn", target.dsn, "--schema", target.schema, "--table", "other"]) == EXIT_FAILURE
    assert "does not exist" in capsys.readouterr().err


async def test_digests_on_a_partitioned_table(empty_schema: PgTarget) -> None:
    target = await partitioned_target(empty_schema)
    rows = make_rows(6)
    assert await target.write([rows[:4]]) == [4]
    assert await target.write([rows], retry=True) == [2]
    report = await target.verify()
    assert report.ok and (report.digests, report.rows) == (2, 6)


def test_verify_with_the_wrong_key_says_so(
    target: Target, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(target.write([make_rows(3), make_rows(3, start=3)]))
    monkeypatch.setenv("AUDIT_DIGEST_KEY", "not-the-writers-key-at-all")
    assert main(["verify", "--dsn", target.dsn, "--schema", target.schema]) == EXIT_TAMPERED
    assert "key in $AUDIT_DIGEST_KEY is probably not the one the writer used" in capsys.readouterr().out


def test_verify_with_one_bad_mac_does_not_blame_the_key(
    target: Target, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(target.write([make_rows(3), make_rows(3, start=3)]))
    asyncio.run(target.sql("UPDATE {d} SET max_created_at = '2000-01-01' WHERE seq = 2"))
    monkeypatch.setenv("AUDIT_DIGEST_KEY", KEY)
    assert main(["verify", "--dsn", target.dsn, "--schema", target.schema]) == EXIT_TAMPERED
    out = capsys.readouterr().out
    assert "bad_mac 1" in out and "probably not the one" not in out


def test_verify_without_a_digests_table_names_init_db(
    pg: PgTarget, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUDIT_DIGEST_KEY", KEY)
    assert main(["verify", "--dsn", pg.dsn, "--schema", pg.schema]) == EXIT_FAILURE
    assert "init-db --digests" in capsys.readouterr().err


def test_prune_command_signs_with_the_key_and_verify_passes(
    target: Target, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(target.write([make_rows(3), make_rows(3, start=3)]))
    base = ["prune", "--dsn", target.dsn, "--schema", target.schema, "--before", "2026-11-01T00:00:04"]
    monkeypatch.delenv("AUDIT_DIGEST_KEY", raising=False)
    assert main(base) == EXIT_USAGE
    assert "needs the digest key" in capsys.readouterr().err
    monkeypatch.setenv("AUDIT_DIGEST_KEY", KEY)
    assert main(base) == EXIT_OK
    assert "deleted 4 rows" in capsys.readouterr().out  # batch 1 whole, then row 3 of the straddling batch
    assert main(["verify", "--dsn", target.dsn, "--schema", target.schema]) == EXIT_OK


def test_prune_sign_stubs_adopts_the_stubs_of_an_earlier_version(
    target: Target, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(target.write([make_rows(3), make_rows(3, start=3)]))
    # An earlier version's prune: rows deleted, digest emptied, no signature.
    asyncio.run(target.sql("DELETE FROM {t} WHERE id IN (SELECT unnest(ids) FROM {d} WHERE seq = 1)"))
    asyncio.run(
        target.sql("UPDATE {d} SET ids = '{}', row_hashes = '', pruned_before = '2026-11-01T00:00:03' WHERE seq = 1")
    )
    monkeypatch.setenv("AUDIT_DIGEST_KEY", KEY)
    verify_args = ["verify", "--dsn", target.dsn, "--schema", target.schema]
    assert main(verify_args) == EXIT_TAMPERED
    assert main(["prune", "--dsn", target.dsn, "--schema", target.schema, "--sign-stubs"]) == EXIT_OK
    assert "signed 1 stubs" in capsys.readouterr().out
    assert main(verify_args) == EXIT_OK
