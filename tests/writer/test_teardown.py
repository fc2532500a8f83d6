"""Events being moved to the spool when the event loop is torn down (asyncio.run's end) are not lost.

asyncio.run cancels every task left: the task that runs the spool's file work in a thread could be
cancelled before it ever started, after the writer had let go of the events: they were neither in
memory nor on disk, and the exit hook could not spool them (measured: 100 of 300 events lost in 1 of
10 runs of the interpreter-exit worker, ``tests/writer/delivery/worker.py ... exit``).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from audit_middleware import AuditWriter
from audit_middleware.testing import MemorySink


def spooled_ids(spool_dir: Path) -> list[str]:
    return [json.loads(line)[0] for p in sorted(spool_dir.rglob("*.jsonl")) for line in p.read_bytes().splitlines()]


def test_a_spill_cancelled_by_the_loops_teardown_is_spooled_at_exit(tmp_path: Path) -> None:
    sink = MemorySink()
    sink.fail_next = 10**6  # the database is down for the whole test
    writer = AuditWriter(sink=sink, spool_dir=str(tmp_path), flush_interval=60.0, retry_initial=60.0, retry_max=60.0)
    ids: list[str] = []

    async def app() -> None:
        writer.start_soon()
        ids.extend(str(e.id) for e in [writer.record_nowait("login", metadata={"n": i}) for i in range(50)] if e)
        spill = asyncio.ensure_future(writer._spill())
        while writer._spilling is None:
            await asyncio.sleep(0)
        # The spool's thread task exists and has not run yet. asyncio.run's teardown cancels every task
        # left, and one created in the loop's last iteration never got to run: do that here, at once.
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
        assert spill.cancelled() or not spill.done()

    asyncio.run(app())
    writer._closed = True  # what the exit hook (_spool_at_exit) does for a writer nobody closed
    writer._spool_remainder(0.0)
    assert sorted(spooled_ids(tmp_path)) == sorted(ids)
