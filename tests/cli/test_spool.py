"""``audit-middleware spool``: list the spools waiting on this machine, replay one into a given database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from audit_middleware import AuditWriter
from audit_middleware.cli.main import main
from tests.conftest import PgTarget
from tests.faults import free_port
from tests.writer.delivery.conftest import eventually

pytestmark = pytest.mark.anyio
FAST: dict[str, Any] = {"flush_interval": 0.05, "retry_initial": 0.02, "retry_max": 0.2, "connect_timeout": 1.0}


async def strand(pg: PgTarget, spool_dir: Path, count: int, *, close: bool = True) -> tuple[AuditWriter, list[str]]:
    """Spool ``count`` events for a DSN nothing listens on (a port that changed since); the writer."""
    gone = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    writer = AuditWriter(gone, schema=pg.schema, spool_dir=str(spool_dir), **FAST)
    await writer.start()
    ids = [str(e.id) for e in [writer.record_nowait("login", metadata={"n": i}) for i in range(count)] if e]

    async def spooled() -> bool:
        return writer.stats().spooled >= count

    await eventually(spooled)
    if close:
        await writer.aclose(timeout=0.1)
    return writer, ids


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_list_shows_each_pending_spool_with_its_rows_state_and_target(
    pg: PgTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer, _ = await strand(pg, tmp_path, 12)
    directory = writer._delivery.spool.directory
    assert await cli("spool", "list", "--spool-dir", str(tmp_path)) == 0
    out = capsys.readouterr().out
    port = writer.config.dsn.rsplit(":", 1)[1].split("/")[0] if writer.config.dsn else ""
    assert f"{directory}\n    12 rows, " in out
    assert f"stopped, for 127.0.0.1:{port}/postgres {pg.schema}.user_audit_logs" in out


async def test_list_without_spools_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("spool", "list", "--spool-dir", str(tmp_path)) == 0
    assert capsys.readouterr().out == f"no pending spools under {tmp_path}\n"


async def test_replay_writes_a_stranded_spool_into_the_given_database_and_removes_it(
    pg: PgTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer, ids = await strand(pg, tmp_path, 25)
    directory = writer._delivery.spool.directory
    assert await cli("spool", "replay", str(directory), "--dsn", pg.dsn) == 0
    assert f"replayed 25 rows from {directory}" in capsys.readouterr().out
    assert sorted(str(r["id"]) for r in await pg.rows()) == sorted(ids)
    assert not directory.exists()
    assert await cli("spool", "list", "--spool-dir", str(tmp_path)) == 0
    assert "no pending spools" in capsys.readouterr().out


async def test_replay_refuses_a_spool_whose_process_still_runs(
    pg: PgTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    writer, _ = await strand(pg, tmp_path, 3, close=False)
    try:
        directory = writer._delivery.spool.directory
        assert await cli("spool", "replay", str(directory), "--dsn", pg.dsn) == 1
        assert "is locked: its process is still running" in capsys.readouterr().err
        assert await pg.rows() == []
    finally:
        await writer.aclose(timeout=0.1)


async def test_replay_of_something_that_is_not_a_spool_is_a_usage_error(
    pg: PgTarget, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("spool", "replay", str(tmp_path), "--dsn", pg.dsn) == 2
    assert "is not a process spool directory" in capsys.readouterr().err
