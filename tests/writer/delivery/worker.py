"""A worker for the many-workers tests: ``python -m tests.writer.delivery.worker DSN SCHEMA SPOOL COUNT MODE``.

Prints the ids it recorded (one JSON list on stdout). MODE ``write`` records, closes and exits.
MODE ``exit`` records and returns without closing (the interpreter's exit hook must spool the
buffer); ``unstarted`` the same with a writer that was never started. MODE ``crash`` records
against an unreachable database, waits until everything is spooled (fsynced), then kills itself
with SIGKILL, leaving its spool behind for another process to replay. ``outage`` (see ``outage()``)
records during an outage with a long backoff, then kills itself the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

from audit_middleware import AuditWriter


async def main(dsn: str, schema: str, spool_dir: str, count: int, mode: str) -> None:
    if mode == "outage":
        await outage(dsn, schema, spool_dir, count)
        return
    writer = AuditWriter(
        dsn, schema=schema, spool_dir=spool_dir, batch_size=100, flush_interval=0.05, retry_initial=0.05,
        retry_max=0.2, connect_timeout=1.0, write_timeout=2.0, close_timeout=20.0,
    )  # fmt: skip
    if mode != "unstarted":
        await writer.start()
    ids = []
    for i in range(count):
        event = writer.record_nowait("worker_event", metadata={"pid": os.getpid(), "n": i})
        assert event is not None
        ids.append(str(event.id))
        if i % 100 == 99:
            await asyncio.sleep(0.01)  # a steady stream, interleaving with the other workers
    if mode in ("exit", "unstarted"):
        print(json.dumps(ids), flush=True)
        return  # no aclose(): asyncio.run cancels the writer, atexit spools what it held
    if mode == "crash":
        for _ in range(400):
            if writer.stats().spooled >= count:
                break
            await asyncio.sleep(0.05)
        print(json.dumps(ids), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    await writer.aclose()
    print(json.dumps(ids), flush=True)


async def outage(dsn: str, schema: str, spool_dir: str, count: int) -> None:
    """MODE ``outage``: the database is unreachable and the backoff is long (30 s or more). After the first
    failed write, record ``count`` more events, give the writer up to 10 s (many flush intervals, a
    fraction of the backoff) to get them to disk, print every id and SIGKILL this process."""
    writer = AuditWriter(
        dsn, schema=schema, spool_dir=spool_dir, flush_interval=0.05, retry_initial=60.0, retry_max=60.0,
        connect_timeout=1.0, write_timeout=2.0,
    )  # fmt: skip
    await writer.start()
    ids = [str(e.id) for e in [writer.record_nowait("before_failure")] if e is not None]
    for _ in range(400):
        if writer.stats().retried:
            break
        await asyncio.sleep(0.05)
    for i in range(count):
        event = writer.record_nowait("during_outage", metadata={"n": i})
        assert event is not None
        ids.append(str(event.id))
        if i % 20 == 19:
            await asyncio.sleep(0.01)
    for _ in range(200):
        if writer.stats().spooled >= len(ids):
            break
        await asyncio.sleep(0.05)
    print(json.dumps(ids), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def trio_exit(dsn: str, schema: str, spool_dir: str, count: int) -> None:
    """MODE ``trio_exit``: record under trio and return without closing the writer (the exit hook closes it)."""
    import trio

    async def app() -> None:
        writer = AuditWriter(dsn, schema=schema, spool_dir=spool_dir, flush_interval=60.0, close_timeout=20.0)
        await writer.start()
        ids = []
        for i in range(count):
            event = writer.record_nowait("trio_event", metadata={"n": i})
            assert event is not None
            ids.append(str(event.id))
        print(json.dumps(ids), flush=True)

    trio.run(app)


if __name__ == "__main__" and sys.argv[5] == "trio_exit":
    trio_exit(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
elif __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
