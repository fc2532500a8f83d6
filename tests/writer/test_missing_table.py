"""A missing audit table is said loudly, once, at writer start, with the command that fixes it."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from audit_middleware import AuditWriter, init_db
from audit_middleware.writer.config import mask_dsn
from tests.conftest import PgTarget
from tests.writer.delivery.conftest import eventually

pytestmark = pytest.mark.anyio


def _fix_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "init-db" in r.getMessage()]


async def test_a_missing_table_is_reported_once_with_the_fix_and_events_wait_in_the_spool(
    empty_schema: PgTarget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    writer = AuditWriter(
        empty_schema.dsn, schema=empty_schema.schema, spool_dir=str(tmp_path / "spool"),
        flush_interval=0.05, retry_initial=0.02, retry_max=0.1,
    )  # fmt: skip
    await writer.start()  # never raises: the app starts
    ids = [str(e.id) for e in [writer.record_nowait("login", metadata={"n": i}) for i in range(20)] if e]
    await eventually(lambda: _retried(writer, 5))
    lines = _fix_lines(caplog)
    assert len(lines) == 1, lines
    assert f"{empty_schema.schema}.user_audit_logs does not exist" in lines[0]
    assert f"audit-middleware init-db --dsn '{mask_dsn(empty_schema.dsn)}' --schema {empty_schema.schema}" in lines[0]
    assert writer.stats().spooled == 20 and writer.stats().dead_lettered == 0
    conn = await empty_schema.connect()
    try:
        await init_db(conn, schema=empty_schema.schema, users_table=None)
    finally:
        await conn.close()
    await writer.flush(timeout=20)
    await writer.aclose()
    assert sorted(str(r["id"]) for r in await empty_schema.rows()) == sorted(ids)


async def test_a_missing_table_is_reported_at_start_before_any_event(
    empty_schema: PgTarget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with AuditWriter(empty_schema.dsn, schema=empty_schema.schema, spool_dir=str(tmp_path)) as writer:
        await eventually(lambda: _logged(caplog))
        assert writer.stats().retried == 0  # no write was attempted: the start-up check found it


async def test_the_fix_line_masks_the_password(
    empty_schema: PgTarget, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The user in the DSN has a password the server ignores (trust auth): the line must show *** instead.
    dsn = re.sub(r"^postgresql://postgres:?@", "postgresql://postgres:s3cr3t-pw@", empty_schema.dsn)  # (both servers)
    assert "s3cr3t-pw" in dsn
    async with AuditWriter(dsn, schema=empty_schema.schema, spool_dir=str(tmp_path)):
        await eventually(lambda: _logged(caplog))
    assert "s3cr3t-pw" not in caplog.text and "postgres:***@" in _fix_lines(caplog)[0]


async def _retried(writer: AuditWriter, n: int) -> bool:
    return writer.stats().retried >= n


async def _logged(caplog: pytest.LogCaptureFixture) -> bool:
    return bool(_fix_lines(caplog))


async def test_an_unreachable_database_is_reported_once_at_start_with_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, the only trace was a rate-limited "audit write failed (ConnectionRefusedError), retrying" warning.
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dsn = f"postgresql://auditor:s3cret-pw@127.0.0.1:{port}/app"
    caplog.set_level(logging.INFO)
    writer = AuditWriter(dsn, spool_dir=str(tmp_path / "spool"), flush_interval=0.05, retry_initial=0.02, retry_max=0.1)
    await writer.start()  # never raises: the app starts
    writer.record_nowait("login")

    async def reported() -> bool:
        return any("UNREACHABLE" in r.getMessage() for r in caplog.records)

    await eventually(reported)
    await writer.aclose(timeout=0.5)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and "UNREACHABLE" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0] and "audit-middleware init-db --dsn" in lines[0]
    assert str(tmp_path / "spool") in lines[0]
    assert "s3cret-pw" not in caplog.text  # the DSN is masked
