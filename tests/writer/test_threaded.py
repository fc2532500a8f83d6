"""BackgroundWriter: the writer on its own thread and loop, one per process, flushed on close."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import anyio
import pytest

from audit_middleware import AuditWriter, WriterClosedError
from audit_middleware.testing import MemorySink
from audit_middleware.writer.threaded import BackgroundWriter, close_all
from tests.conftest import PgTarget


def test_starts_lazily_on_first_event_and_writes_from_its_own_thread() -> None:
    sink = MemorySink()
    built: list[str] = []

    def make() -> AuditWriter:
        built.append(threading.current_thread().name)
        return AuditWriter(sink=sink)

    background = BackgroundWriter(make)
    try:
        assert not background.started and background.stats() is None
        background.flush(1)  # nothing started: nothing to wait for
        for n in range(3):
            assert background.record_nowait("export_data", metadata={"n": n}) is not None
        assert background.started and len(built) == 1
        background.flush(5)
        assert sink.actions() == ["export_data"] * 3
        stats = background.stats()
        assert stats is not None and stats.written == 3
    finally:
        background.close(5)
    assert not background.started and background.closed


def test_record_from_many_threads_loses_nothing() -> None:
    sink = MemorySink()
    background = BackgroundWriter(lambda: AuditWriter(sink=sink, batch_size=16))

    def worker(k: int) -> None:
        for n in range(200):
            background.record_nowait("tick", metadata={"k": k, "n": n})

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    background.close(5)  # close flushes
    assert len(sink.rows) == 800 and sink.closed


def test_close_is_idempotent_and_later_events_are_refused() -> None:
    background = BackgroundWriter(lambda: AuditWriter(sink=MemorySink()))
    background.record_nowait("login")
    background.close(5)
    background.close(5)
    with pytest.raises(WriterClosedError):
        background.record_nowait("login")


def test_close_all_closes_every_instance() -> None:
    sinks = [MemorySink(), MemorySink()]
    backgrounds = [BackgroundWriter(lambda s=s: AuditWriter(sink=s)) for s in sinks]  # type: ignore[misc]
    for b in backgrounds:
        b.record_nowait("logout")
    close_all(5)
    assert all(b.closed for b in backgrounds)
    assert [s.actions() for s in sinks] == [["logout"], ["logout"]]


def test_a_forked_child_starts_its_own_thread_and_inherits_no_events() -> None:
    sink = MemorySink()
    background = BackgroundWriter(lambda: AuditWriter(sink=sink, flush_interval=30))
    background.record_nowait("parent_event")  # started and buffered (long flush interval) in the parent
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            report: dict[str, object] = {
                "started_after_fork": background.started,
                "stats": background.stats() is not None,
            }
            background.record_nowait("child_event")
            report["started_in_child"] = background.started
            background.flush(5)
            report["actions"] = sink.actions()
            background.close(5)
            os.write(write_fd, json.dumps(report).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    _, status = os.waitpid(pid, 0)
    with os.fdopen(read_fd) as pipe:
        report = json.loads(pipe.read() or "{}")
    try:
        assert os.waitstatus_to_exitcode(status) == 0
        assert report == {
            "started_after_fork": False,
            "stats": False,
            "started_in_child": True,
            "actions": ["child_event"],  # the parent's buffered event was not inherited (nor written twice)
        }
        background.flush(5)
        assert sink.actions() == ["parent_event"]  # the parent's thread is unaffected
    finally:
        background.close(5)


EXIT_SCRIPT = """
import sys
from audit_middleware import AuditWriter
from audit_middleware.writer.threaded import BackgroundWriter

dsn, schema = sys.argv[1], sys.argv[2]
background = BackgroundWriter(lambda: AuditWriter(dsn, schema=schema, flush_interval=600.0))
background.record_nowait("written_at_exit")
# no close(): the interpreter's exit flushes, connecting only now
"""


def test_interpreter_exit_flushes_even_when_the_pool_first_connects_then(pg: PgTarget) -> None:
    # A host name (not an IP) makes asyncpg resolve it in the loop's executor, which a plain
    # executor refuses while the interpreter exits.
    dsn = pg.dsn.replace("@127.0.0.1:", "@localhost:")
    done = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, dsn, pg.schema], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    rows = anyio.run(pg.rows)
    assert [r["action"] for r in rows] == ["written_at_exit"], done.stderr
