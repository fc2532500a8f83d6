"""Spools never vanish or wait unreported: a per-user default directory, and a log line (counts, path) for
events left in the spool at shutdown, for their replay at the next start, and for spools no writer claims."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

from audit_middleware import AuditWriter
from audit_middleware.writer.delivery import default_spool_dir
from tests.conftest import PgTarget
from tests.faults import FaultProxy
from tests.writer.delivery.conftest import eventually
from tests.writer.delivery.test_faults import FAST as FAST_OPTIONS
from tests.writer.delivery.test_faults import assert_exactly

pytestmark = pytest.mark.anyio
FAST: dict[str, Any] = dict(FAST_OPTIONS)


# -- the default directory ---------------------------------------------------------------------


def test_the_default_spool_is_in_xdg_state_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_spool_dir() == str(tmp_path / "state" / "audit_middleware" / "spool")


@pytest.mark.parametrize("xdg", [None, "", "relative/state"])  # unset, empty and relative are ignored (XDG spec)
def test_without_xdg_state_home_the_default_spool_is_in_the_home_state_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xdg: str | None
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if xdg is None:
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_STATE_HOME", xdg)
    assert default_spool_dir() == str(tmp_path / ".local" / "state" / "audit_middleware" / "spool")


async def test_a_writer_without_spool_dir_spools_into_the_users_state_directory(
    fpg: PgTarget, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    proxy.set_mode("reset")
    async with AuditWriter(proxy.dsn(fpg.dsn), schema=fpg.schema, **FAST) as writer:
        writer.record_nowait("login")
        await eventually(lambda: _spooled(writer, 1))
        directory = writer._delivery.spool.directory
    assert directory.is_relative_to(tmp_path / "audit_middleware" / "spool")
    assert [p.name for p in directory.glob("*.jsonl")]  # still there after close, for the next start
    assert oct((tmp_path / "audit_middleware" / "spool").stat().st_mode & 0o777) == oct(0o700)


# -- log lines -------------------------------------------------------------------------------


async def test_shutdown_and_the_next_start_say_how_many_events_wait_and_where(
    fpg: PgTarget, proxy: FaultProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    spool_dir = tmp_path / "spool"
    proxy.set_mode("reset")
    writer = AuditWriter(proxy.dsn(fpg.dsn), schema=fpg.schema, spool_dir=str(spool_dir), **FAST)
    await writer.start()
    ids = [str(e.id) for e in [writer.record_nowait("login", metadata={"n": i}) for i in range(30)] if e]
    await eventually(lambda: _spooled(writer, 30))  # spooled during the outage, before shutdown
    directory = writer._delivery.spool.directory
    await writer.aclose(timeout=0.2)
    assert re.search(
        rf"audit writer closing: 30 unwritten events wait in the spool {re.escape(str(directory))}", caplog.text
    )
    caplog.clear()
    proxy.set_mode("pass")

    async def replayed() -> bool:
        return f"replayed 30 events left by a stopped process, from {directory}" in caplog.text

    async with AuditWriter(proxy.dsn(fpg.dsn), schema=fpg.schema, spool_dir=str(spool_dir), **FAST):
        await eventually(replayed)
    assert f"replaying 30 events left by a stopped process, from {directory}" in caplog.text
    await assert_exactly(fpg, ids)


async def test_a_spool_for_a_dsn_no_writer_uses_any_more_is_reported_with_the_replay_command(
    fpg: PgTarget, proxy: FaultProxy, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool_dir = tmp_path / "spool"
    proxy.set_mode("reset")  # the old DSN (the proxy's port): its events are spooled and never claimed again
    async with AuditWriter(proxy.dsn(fpg.dsn), schema=fpg.schema, spool_dir=str(spool_dir), **FAST) as old:
        old.record_nowait("login")
        await eventually(lambda: _spooled(old, 1))
        stranded = old._delivery.spool.directory
    caplog.clear()
    caplog.set_level(logging.INFO)

    def lines() -> list[str]:
        return [
            r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(stranded) in r.getMessage()
        ]

    async def reported() -> bool:
        return bool(lines())

    async with AuditWriter(fpg.dsn, schema=fpg.schema, spool_dir=str(spool_dir), **FAST):
        await eventually(reported)  # the start-up scan runs beside the writer
    assert len(lines()) == 1, caplog.text
    line = lines()[0]
    port = proxy.dsn(fpg.dsn).rsplit(":", 1)[1].split("/")[0]
    assert f"1 events in {stranded} wait for 127.0.0.1:{port}/postgres {fpg.schema}.user_audit_logs" in line
    assert f"audit-middleware spool replay {stranded} --dsn DSN" in line
    assert os.listdir(stranded)  # reported, not touched


async def _spooled(writer: AuditWriter, n: int) -> bool:
    return writer.stats().spooled >= n


async def _replayed(writer: AuditWriter, n: int) -> bool:
    return writer.stats().replayed >= n


def test_a_user_without_a_home_directory_gets_a_spool_of_their_own_in_the_temp_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr("pwd.getpwuid", _no_such_user)
    assert default_spool_dir() == os.path.join(tempfile.gettempdir(), f"audit_middleware-spool-{os.geteuid()}")


def _no_such_user(uid: int) -> object:
    raise KeyError(uid)
