"""The writer's buffering, batching, flushing and retry behaviour (MemorySink: no database needed here;
tests/test_writer_postgres.py proves the same paths against a real server)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from audit_middleware import AuditWriter, WriterClosedError
from audit_middleware.errors import ConfigurationError
from audit_middleware.testing import MemorySink

pytestmark = pytest.mark.anyio


def make_writer(sink: MemorySink, **options: object) -> AuditWriter:
    options.setdefault("flush_interval", 60.0)  # only explicit triggers flush unless a test says otherwise
    return AuditWriter(sink=sink, **options)  # type: ignore[arg-type]


async def test_record_nowait_returns_the_event_and_does_not_write_yet() -> None:
    sink = MemorySink()
    async with make_writer(sink) as writer:
        event = writer.record_nowait("login", user_id=None, metadata={"ip": "10.0.0.1"})
        assert event is not None and event.action == "login"
        await asyncio.sleep(0.01)
        assert sink.rows == []
        await writer.flush()
        assert sink.actions() == ["login"]


async def test_full_batch_is_written_without_waiting_for_the_interval() -> None:
    sink = MemorySink()
    async with make_writer(sink, batch_size=10) as writer:
        for i in range(25):
            writer.record_nowait(f"a{i}")
        for _ in range(100):
            if len(sink.rows) >= 20:
                break
            await asyncio.sleep(0.01)
        assert len(sink.rows) == 20  # two full batches; the partial third waits for the interval
        assert writer.stats().batches == 2


async def test_partial_batch_is_written_after_the_interval() -> None:
    sink = MemorySink()
    async with make_writer(sink, flush_interval=0.05) as writer:
        writer.record_nowait("login")
        for _ in range(100):
            if sink.rows:
                break
            await asyncio.sleep(0.01)
        assert sink.actions() == ["login"]


async def test_flush_waits_for_everything_recorded_before_it() -> None:
    sink = MemorySink()
    async with make_writer(sink, batch_size=7) as writer:
        for i in range(100):
            writer.record_nowait(f"a{i}")
        await writer.flush()
        assert sink.actions() == [f"a{i}" for i in range(100)]


async def test_aclose_flushes_and_closes_the_sink() -> None:
    sink = MemorySink()
    writer = make_writer(sink)
    await writer.start()
    for i in range(5):
        writer.record_nowait(f"a{i}")
    await writer.aclose()
    assert len(sink.rows) == 5
    assert sink.closed
    with pytest.raises(WriterClosedError):
        writer.record_nowait("late")


async def test_record_starts_the_writer_lazily() -> None:
    sink = MemorySink()
    writer = make_writer(sink)
    assert not writer.started
    await writer.record("login")
    assert writer.started
    await writer.aclose()
    assert sink.actions() == ["login"]


async def test_full_buffer_drops_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    writer = make_writer(sink, max_buffer=3)
    results = [writer.record_nowait(f"a{i}") for i in range(5)]
    assert [r is not None for r in results] == [True, True, True, False, False]
    assert writer.stats().dropped == 2
    assert caplog.text.count("audit buffer full") == 1  # rate-limited: one line, not one per event
    await writer.aclose()
    assert sink.actions() == ["a0", "a1", "a2", "audit_gap"]  # the hole is recorded where auditors look


async def test_failed_writes_are_retried_until_they_land(caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    sink.fail_next = 3
    async with make_writer(sink, retry_initial=0.001, retry_max=0.005) as writer:
        writer.record_nowait("login")
        await writer.flush(timeout=5)
        stats = writer.stats()
    assert sink.actions() == ["login"]
    assert stats.retried == 3
    assert stats.written == 1
    assert stats.last_error == "ConnectionError: MemorySink.fail_next"
    assert caplog.text.count("audit write failed") == 1


async def test_close_deadline_counts_what_could_not_be_written(caplog: pytest.LogCaptureFixture) -> None:
    sink = MemorySink()
    sink.fail_next = 10**9
    writer = make_writer(sink, retry_initial=0.01, retry_max=0.01)
    await writer.start()
    writer.record_nowait("login")
    writer.record_nowait("logout")
    await writer.aclose(timeout=0.1)
    assert writer.stats().lost_on_close == 2
    assert "2 events not written" in caplog.text


async def test_events_from_other_threads_are_written() -> None:
    sink = MemorySink()
    async with make_writer(sink, batch_size=50) as writer:

        def produce(prefix: str) -> None:
            for i in range(200):
                writer.record_nowait(f"{prefix}{i}")

        threads = [threading.Thread(target=produce, args=(p,)) for p in "abc"]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        await writer.flush(timeout=5)
    assert sorted(sink.actions()) == sorted(f"{p}{i}" for p in "abc" for i in range(200))


async def test_stats_snapshot_counts() -> None:
    sink = MemorySink()
    async with make_writer(sink) as writer:
        for _ in range(3):
            writer.record_nowait("x")
        assert writer.stats().queue_depth == 3
        await writer.flush()
        stats = writer.stats()
    assert (stats.enqueued, stats.written, stats.queue_depth, stats.dropped) == (3, 3, 0, 0)
    assert stats.last_flush_latency is not None


def test_writer_without_dsn_or_sink_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIT_DSN", raising=False)
    with pytest.raises(ConfigurationError, match="dsn"):
        AuditWriter()


def test_writer_takes_options_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIT_DSN", "postgresql://app:secret@db/prod")
    monkeypatch.setenv("AUDIT_BATCH_SIZE", "123")
    writer = AuditWriter(table="explicit")
    assert writer.config.batch_size == 123
    assert writer.config.table == "explicit"
    assert "secret" not in repr(writer.sink)


def test_commit_event_threadsafe_on_a_writer_not_started_buffers_the_event() -> None:
    from audit_middleware.writer.records import AuditEvent

    sink = MemorySink()
    writer = AuditWriter(sink=sink)
    assert writer.commit_event_threadsafe(AuditEvent("reset"), 0.1) is False  # cannot commit: no loop yet

    async def start_and_close() -> None:
        await writer.start()
        await writer.aclose()

    asyncio.run(start_and_close())
    assert sink.actions() == ["reset"]  # buffered, not lost: written once the writer ran


async def test_a_writer_task_that_fails_is_logged_restarted_and_loses_nothing(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Conversion and writes never raise, so this stands for a bug: the task used to die silently, and a
    # restarted one dropped the batch it had been converting.
    from audit_middleware.writer import writer as buffer

    monkeypatch.setattr(buffer, "RESTART_DELAY", 0.01)
    sink = MemorySink()
    writer = make_writer(sink)
    convert = writer._rows
    calls = 0

    async def fails_once(batch: list[Any]) -> list[Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in conversion")
        return await convert(batch)

    writer._rows = fails_once  # type: ignore[method-assign]
    await writer.start()
    for n in range(5):
        writer.record_nowait(f"event{n}")
    await writer.flush(5)
    await writer.aclose()
    assert sink.actions() == [f"event{n}" for n in range(5)]
    assert "audit writer loop failed unexpectedly (RuntimeError at test_writer.py:" in caplog.text


async def test_the_writer_task_ends_when_cancelled_right_after_a_wake_up() -> None:
    # On Python 3.11 asyncio.wait_for drops a cancel that lands just after its inner wait finished: the
    # writer's loop went on, and asyncio.run()'s teardown (or a task group) waited for it forever.
    writer = make_writer(MemorySink())
    await writer.start()
    await asyncio.sleep(0.01)
    await writer.flush()  # wakes the task (without a timeout: no extra turn of the loop before the cancel)
    assert writer._task is not None
    writer._task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(writer._task), 5)
