"""Many worker processes writing at once, one of them killed with a spool left behind: nothing lost."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from audit_middleware import AuditWriter
from tests.conftest import PgTarget
from tests.faults import FaultProxy, ThrowawayPostgres
from tests.writer.delivery.conftest import eventually

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[3]


async def run_worker(dsn: str, pg: PgTarget, spool_dir: Path, count: int, mode: str) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.writer.delivery.worker", dsn, pg.schema, str(spool_dir), str(count), mode,
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    assert out, err.decode()[-2000:]
    return proc.returncode, json.loads(out.decode().strip().splitlines()[-1])


async def test_three_workers_and_a_killed_one_lose_nothing(fpg: PgTarget, proxy: FaultProxy, spool_dir: Path) -> None:
    proxy.set_mode("reset")  # the fourth worker's database is unreachable: it spools, then is SIGKILLed
    results = await asyncio.gather(
        run_worker(fpg.dsn, fpg, spool_dir, 1500, "write"),
        run_worker(fpg.dsn, fpg, spool_dir, 1500, "write"),
        run_worker(fpg.dsn, fpg, spool_dir, 1500, "write"),
        run_worker(proxy.dsn(fpg.dsn), fpg, spool_dir, 700, "crash"),
    )
    assert [code for code, _ in results] == [0, 0, 0, -9]
    written = [i for _, ids in results[:3] for i in ids]
    crashed = results[3][1]
    stored = {str(r["id"]) for r in await fpg.fetch("SELECT id FROM {t}")}
    assert stored == set(written)  # the killed worker's events are in its spool, not (yet) in the table
    assert [p.name for p in spool_dir.rglob("*.jsonl")]  # left behind
    proxy.set_mode("pass")
    # The next process for the same table claims the dead worker's spool and replays it.
    async with AuditWriter(proxy.dsn(fpg.dsn), schema=fpg.schema, spool_dir=str(spool_dir)) as heir:
        try:
            await eventually(lambda: _replayed(heir, 700))
        except AssertionError:
            print(heir.stats(), sorted(str(p) for p in spool_dir.rglob("*")))
            raise
    rows = await fpg.fetch("SELECT id FROM {t}")
    assert len(rows) == len({r["id"] for r in rows}) == 5200
    assert {str(r["id"]) for r in rows} == set(written) | set(crashed)
    assert not list(spool_dir.rglob("*.jsonl"))


async def _replayed(writer: AuditWriter, n: int) -> bool:
    return writer.stats().replayed >= n


@pytest.mark.parametrize("mode", ["exit", "unstarted"])
async def test_interpreter_exit_without_aclose_spools_and_the_next_start_replays(
    fpg: PgTarget, proxy: FaultProxy, spool_dir: Path, mode: str
) -> None:
    proxy.set_mode("reset")
    code, ids = await run_worker(proxy.dsn(fpg.dsn), fpg, spool_dir, 300, mode)
    assert code == 0 and len(ids) == 300
    assert await fpg.fetch("SELECT id FROM {t}") == []
    proxy.set_mode("pass")
    async with AuditWriter(proxy.dsn(fpg.dsn), schema=fpg.schema, spool_dir=str(spool_dir)) as heir:
        await eventually(lambda: _replayed(heir, 300))
    rows = await fpg.fetch("SELECT id FROM {t}")
    assert sorted(str(r["id"]) for r in rows) == sorted(ids)


async def test_sigkill_during_an_outage_loses_nothing_spooled_within_the_backoff(
    fpg: PgTarget, fault_server: ThrowawayPostgres, spool_dir: Path
) -> None:
    # The bound "at most one flush interval of events" must hold while the database is down: events recorded
    # after a failed write reach the disk within a few flush intervals, not when the backoff (60 s) ends.
    await asyncio.to_thread(fault_server.stop, "immediate")
    try:
        code, ids = await run_worker(fpg.dsn, fpg, spool_dir, 300, "outage")
    finally:
        await asyncio.to_thread(fault_server.start)
    assert code == -9 and len(ids) == 301
    async with AuditWriter(fpg.dsn, schema=fpg.schema, spool_dir=str(spool_dir)) as heir:
        await eventually(lambda: _replayed(heir, 301))
    rows = await fpg.fetch("SELECT id FROM {t}")
    assert sorted(str(r["id"]) for r in rows) == sorted(ids)


async def test_a_trio_app_that_exits_without_closing_its_writer_loses_nothing(fpg: PgTarget, spool_dir: Path) -> None:
    # Under trio the writer runs on a loop of its own thread; the exit hook closes it there (a flush first).
    code, ids = await run_worker(fpg.dsn, fpg, spool_dir, 120, "trio_exit")
    assert code == 0 and len(ids) == 120
    rows = await fpg.fetch("SELECT id FROM {t}")
    assert sorted(str(r["id"]) for r in rows) == sorted(ids)
