"""The writer: a bounded in-memory buffer and one background task writing batches to a sink.

``record_nowait()`` appends to a deque and returns at once: the request path never awaits the
database. The background task wakes when a batch is full, when ``flush_interval`` has passed, or on
``flush()``; it turns events into rows (``records.to_row``, off the request path) and hands whole
batches to the sink. A failed attempt is retried with capped exponential backoff and jitter, as a
*retry* (idempotent on the event ids), until it lands: events are never dropped on a database error.
Each attempt is bounded by ``write_timeout``; a failed attempt discards the sink's connections.

While the database is failing, the writer moves what waits in memory to the disk spool
(``spool.py``), so memory stays bounded; a full buffer applies ``config.overflow`` (spool, drop or
block). Spooled rows (this process's and those of stopped processes, claimed at start) are replayed
once writes succeed again. Rows the database refuses go to the dead-letter file. Every loss (policy
``drop``, a full spool) is counted and recorded in the table as an ``audit_gap`` event. ``aclose()``
flushes until its deadline, then spools the remainder; an interpreter exit without ``aclose()``
spools too (``atexit``). See docs/delivery.md.

Events may be recorded from other threads (WSGI); the writer's loop is woken thread-safely.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import functools
import logging
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .._types import RejectedRow, Row, Sink
from ..errors import ConfigurationError, WriterClosedError, describe_failure
from .config import DEFAULT_SCHEMA, DEFAULT_TABLE, WriterConfig, mask_dsn
from .deadletter import loggable_reason
from .delivery import Delivery, encode_rows
from .records import AuditEvent, to_row

if TYPE_CHECKING:
    from .threaded import LoopThread

__all__ = ["AuditWriter", "WriterStats"]

logger = logging.getLogger("audit_middleware.writer")

MSG_DROPPED = "audit buffer full (%s events, overflow=%s): dropped %s events so far"
MSG_RETRY = "audit write failed (%s), retrying %s events in %.2fs: %s"
MSG_REJECTED = "database rejected audit row id=%s action=%s (%s): written to the dead-letter file"
MSG_CLOSE_TIMEOUT = "audit writer closed with %s events not written (close deadline %.1fs passed)"
MSG_CLOSE_SPOOLED = "audit writer closing: %s unwritten events wait in the spool %s for the next start (%s spooled now)"
MSG_SPOOLING = "audit database unavailable or slow: %s events spooled to disk so far (%s)"
MSG_STRICT_TIMEOUT = "audit event %s (action %s) not committed within %.2fs"
MSG_NO_TABLE = (
    "AUDIT TABLE MISSING: %s does not exist; no audit event can be stored until it does (events are spooled "
    "meanwhile, to %s). Create it with: audit-middleware init-db --dsn '%s'%s"
)
MSG_OWN_THREAD = "audit writer: the running async library is %s, not asyncio: the writer runs on a thread of its own"
MSG_CLAIM_FAILED = "audit spool: could not claim spools of stopped processes: %s"
BLOCK_POLL = 0.002  # seconds between checks of a blocked caller (overflow="block")
MSG_LOOP_ERROR = "audit writer loop failed unexpectedly (%s); restarting it"
RESTART_DELAY = 1.0  # seconds before a failed writer task is started again (never a hot loop)
T = TypeVar("T")
WARN_EVERY = 10.0  # seconds between repeated warnings of one kind
CONVERT_CHUNK = 200  # rows converted between yields to an in-flight write


@dataclass(frozen=True, slots=True)
class WriterStats:
    """A snapshot of the writer's counters."""

    enqueued: int
    written: int
    rejected: int
    dropped: int
    retried: int
    batches: int
    queue_depth: int
    lost_on_close: int
    last_flush_latency: float | None
    last_error: str | None
    spooled: int = 0
    replayed: int = 0
    dead_lettered: int = 0
    spool_bytes: int = 0
    healthy: bool = False


class _RateLimitedLog:
    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -WARN_EVERY) >= WARN_EVERY:
            self._last[key] = now
            logger.warning(msg, *args)


class AuditWriter:
    """Buffers audit events and writes them to PostgreSQL in batches from a background task.

    Args:
        dsn: PostgreSQL connection string; or give ``sink``.
        sink: where rows go (default: a ``PostgresSink`` on ``dsn``).
        config: a ``WriterConfig``; keyword ``options`` override its fields.

    Example:
        >>> async with AuditWriter("postgresql://localhost/app") as audit:   # doctest: +SKIP
        ...     audit.record_nowait("export_data", user_id=user.id, metadata={"rows": 120})
        ...     await audit.record("login", user_id=user.id)  # same, never waits on the database
    """

    def __init__(
        self, dsn: str | None = None, *, sink: Sink | None = None, config: WriterConfig | None = None, **options: Any
    ) -> None:
        if config is None:
            config = WriterConfig.from_env(dsn=dsn, **options)
        elif dsn is not None or options:
            config = config.with_options(**({"dsn": dsn} if dsn is not None else {}), **options)
        own_sink = sink is None
        if sink is None:
            if config.dsn is None:
                raise ConfigurationError("dsn is required (or set AUDIT_DSN, or pass a sink)")
            from .sink import PostgresSink

            sink = PostgresSink(
                config.dsn,
                schema=config.schema,
                table=config.table,
                min_size=config.pool_min_size,
                max_size=config.pool_max_size,
                timeout=config.write_timeout,
                connect_timeout=config.connect_timeout,
                digest_key=config.digest_key,
            )
        self.config = config
        self.sink = sink
        self._queue: collections.deque[AuditEvent] = collections.deque()
        self._batch_size = config.batch_size
        self._max_buffer = config.max_buffer
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None
        self._flush_requests = 0
        self._closed = False
        self._log = _RateLimitedLog()
        # counters (plain ints: the GIL makes the increments safe enough for statistics)
        self._enqueued = 0
        self._taken = 0  # events taken from the queue by the writer (done or in flight)
        self._done = 0  # events written, rejected or otherwise finished with
        self._written = 0
        self._rejected = 0
        self._dropped = 0
        self._retried = 0
        self._batches = 0
        self._lost_on_close = 0
        self._last_latency: float | None = None
        self._last_error: str | None = None
        # delivery state
        # A writer on its own PostgresSink spools by default; a custom sink (MemorySink in tests) only
        # with an explicit spool_dir, so test writers never replay each other's leftovers.
        self._delivery = Delivery(config, enabled=own_sink or config.spool_dir is not None)
        self._failing_since: float | None = None
        self._converting: list[AuditEvent] | None = None  # taken from the queue, not yet rows
        self._spill_events: list[AuditEvent] | None = None  # taken from the queue, not yet in the spool
        self._inflight: dict[int, list[Row]] = {}  # rows handed to the sink and not yet committed
        self._spilling: asyncio.Future[int] | None = None
        self._spill_lock: asyncio.Lock | None = None  # one spill at a time (the spiller and a failed attempt)
        self._spiller: asyncio.Task[None] | None = None  # moves memory to the spool while writes fail
        self._waiters: dict[str, asyncio.Future[bool]] = {}
        self._gap_writing = False
        self._checking: asyncio.Task[None] | None = None
        self._runner: LoopThread | None = None  # the writer's own loop and thread, under trio
        self._table_reported = False  # the missing table was logged (once, until a write succeeds)
        _open.add(self)  # from the start: events recorded before the writer ever ran are spooled at exit too

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True while the background task runs."""
        return self._task is not None and not self._task.done()

    def start_soon(self) -> None:
        """Start the background task on the running loop if it is not running (idempotent, sync).

        Under another async library (trio, e.g. Starlette on anyio's trio backend) the writer runs on
        an asyncio loop on a thread of its own instead (see :meth:`_start_on_thread`).
        """
        if self._closed:
            raise WriterClosedError("the audit writer is closed")
        if self.started:
            return
        if self._runner is not None or not _loop_running_here():
            self._start_on_thread()
            return
        self._start_here()

    def _start_on_thread(self) -> None:
        """Run the writer on its own asyncio loop and thread: the caller's async library is not asyncio.

        ``submit`` stays a deque append from the caller's thread; the async methods (``flush``,
        ``aclose``, ``commit_event``) run on the writer's loop and are awaited through anyio (or trio).
        """
        runner = self._runner
        if runner is None:
            library = _foreign_async_library()
            if library is None:
                asyncio.get_running_loop()  # raises the usual RuntimeError: no loop, and no other library
            from .threaded import LoopThread

            runner = self._runner = LoopThread()
            logger.info(MSG_OWN_THREAD, library)
        runner.loop.call_soon_threadsafe(self._start_here_if_open)

    def _start_here_if_open(self) -> None:
        if not self._closed and not self.started:
            self._start_here()

    def _start_here(self) -> None:
        loop = asyncio.get_running_loop()
        if self._wake is None or self._loop is not loop:  # a restart on the same loop keeps them: flush() waits on them
            self._wake = asyncio.Event()
            self._progress = asyncio.Event()
            self._spill_lock = asyncio.Lock()
        self._loop = loop
        self._thread_id = threading.get_ident()
        if self._converting:  # a task that died while converting them: they go first again, not lost
            self._queue.extendleft(reversed(self._converting))
            self._converting = None
        self._task = self._loop.create_task(self._run(), name="audit_middleware.writer")
        self._task.add_done_callback(self._task_ended)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """A writer task that fails (a bug: conversion and writes never raise) is logged and restarted."""
        if task.cancelled() or task.exception() is None or self._closed:
            return
        logger.error(MSG_LOOP_ERROR, describe_failure(task.exception()))  # type: ignore[arg-type]
        if self._loop is not None:
            self._loop.call_later(RESTART_DELAY, self._restart)

    def _restart(self) -> None:
        if not self._closed and not self.started:
            self.start_soon()

    async def start(self) -> None:
        """Start the background task. The database need not be up: writes are retried until it is."""
        self.start_soon()

    async def __aenter__(self) -> AuditWriter:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self, timeout: float | None = None) -> None:
        """Flush what is buffered (waiting at most ``timeout``, default ``config.close_timeout``), then stop.

        Events still unwritten when the deadline passes are appended to the disk spool (fsynced) and
        written by the next writer started on the same ``spool_dir`` and table. Only events the spool
        cannot take (cap, disk error) are lost; they are counted in ``lost_on_close`` and logged.
        Never hangs on an unreachable server: the sink's connections are terminated if they do not
        close in time.
        """
        if self._closed:
            return
        if self._queue and not self.started:
            self.start_soon()  # events recorded before the writer ever ran still get written
        if not _loop_running_here():  # trio: close on the writer's own loop (started now if it never ran)
            if self._runner is None:
                self._start_on_thread()
            runner = self._runner
            assert runner is not None  # set by _start_on_thread
            await _wait_threadsafe(asyncio.run_coroutine_threadsafe(self.aclose(timeout), runner.loop))
            await _in_worker_thread(runner.stop)
            return
        self._closed = True
        deadline = self.config.close_timeout if timeout is None else timeout
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline):
                    await self._wait_for(self._enqueued)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            for helper in (self._spiller, self._checking):
                if helper is not None:
                    helper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await helper
            if self._spilling is not None:
                with contextlib.suppress(Exception):
                    await self._spilling  # a spill in its thread finishes: those events are on disk
        _open.discard(self)
        await asyncio.to_thread(self._spool_remainder, deadline)
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_result(False)
        terminate = getattr(self.sink, "terminate", None)
        try:
            async with asyncio.timeout(min(deadline, 2.0)):
                await self.sink.aclose()
        except Exception:
            if terminate is not None:
                terminate()

    def _spool_remainder(self, deadline: float) -> None:
        """Spool every event not known to be committed (queue, conversion, in flight), then close the spool."""
        events = list(self._queue) + (self._converting or []) + (self._spill_events or [])
        self._spill_events = None
        self._queue.clear()
        self._converting = None
        rows = [row for batch in self._inflight.values() for row in batch]
        self._inflight.clear()
        pending = len(events) + len(rows)
        taken = 0
        if pending:
            if self._delivery.enabled:
                taken = self._delivery.spool_events(events, sync=False) + self._delivery.spool_rows(rows, sync=False)
            if taken < pending:
                self._lost_on_close += pending - taken
                logger.error(MSG_CLOSE_TIMEOUT, pending - taken, deadline)
        waiting = self._delivery.spool.pending if self._delivery.enabled else 0
        if waiting:  # spooled now or earlier in an outage: either way they wait for the next start
            logger.warning(MSG_CLOSE_SPOOLED, waiting, self._delivery.spool.directory, taken)
        self._delivery.close()

    # -- recording -----------------------------------------------------------------------------

    def record_nowait(
        self, action: str, *, user_id: Any = None, metadata: Mapping[str, Any] | None = None
    ) -> AuditEvent | None:
        """Buffer one event and return it, or return None if the buffer is full (counted as dropped).

        Never blocks and never touches the database. Safe to call from any thread.
        """
        event = AuditEvent(action, user_id, metadata)
        return event if self.submit(event) else None

    async def record(
        self, action: str, *, user_id: Any = None, metadata: Mapping[str, Any] | None = None
    ) -> AuditEvent | None:
        """Like ``record_nowait`` (starting the writer if needed); does not wait for the database."""
        if not self.started and not self._closed:
            self.start_soon()
        return self.record_nowait(action, user_id=user_id, metadata=metadata)

    def submit(self, event: AuditEvent) -> bool:
        """Buffer an already-built event. Returns False (and counts it) if it was dropped."""
        if self._closed:
            raise WriterClosedError("the audit writer is closed")
        queue = self._queue
        if len(queue) >= self._max_buffer:
            return self._overflow(event)
        queue.append(event)
        self._enqueued += 1
        if len(queue) % self._batch_size == 0:
            self._notify()
        return True

    def _overflow(self, event: AuditEvent) -> bool:
        """Apply ``config.overflow`` to an event that found the buffer full."""
        policy = self.config.overflow
        if policy == "block" and not _loop_running_here():
            deadline = time.monotonic() + self.config.block_timeout
            self._notify()
            while time.monotonic() < deadline:
                time.sleep(BLOCK_POLL)
                if self._closed:
                    raise WriterClosedError("the audit writer is closed")
                if len(self._queue) < self._max_buffer:
                    self._queue.append(event)
                    self._enqueued += 1
                    self._notify()
                    return True
            return self._drop("block_timeout")
        if policy == "drop":
            return self._drop("buffer_full")
        # "spool", and "block" on an event loop's thread (waiting there would stall the loop and the writer)
        if self._delivery.spool_events([event], sync=False):  # fsynced by the writer task within flush_interval
            self._enqueued += 1
            self._log.warning("spooled", MSG_SPOOLING, self._delivery.spooled, "buffer full")
            return True
        self._log.warning("dropped", MSG_DROPPED, self._max_buffer, policy, self._delivery.dropped)
        return False

    def _drop(self, reason: str) -> bool:
        self._delivery.lost(1, reason)
        self._log.warning("dropped", MSG_DROPPED, self._max_buffer, self.config.overflow, self._delivery.dropped)
        return False

    async def commit_event(self, event: AuditEvent, timeout: float) -> bool:
        """Buffer ``event`` and wait until its batch is committed; False if not within ``timeout`` seconds.

        For strict routes that must not proceed unaudited. The event bypasses the overflow policy (the
        caller is waiting for it anyway) and asks for an immediate write. On False the event is still
        buffered and may be committed later: the caller should refuse the action (e.g. answer 503),
        not re-record it.
        """
        if self._closed:
            raise WriterClosedError("the audit writer is closed")
        if not self.started:
            self.start_soon()
        if self._runner is not None and not _loop_running_here():  # trio: wait on the writer's own loop
            loop = self._runner.loop
            return await _wait_threadsafe(asyncio.run_coroutine_threadsafe(self.commit_event(event, timeout), loop))
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters[str(event.id)] = waiter
        self._queue.append(event)
        self._enqueued += 1
        self._flush_requests += 1
        try:
            self._notify()
            async with asyncio.timeout(timeout):
                return await asyncio.shield(waiter)
        except TimeoutError:
            self._log.warning("strict", MSG_STRICT_TIMEOUT, event.id, event.action, timeout)
            return False
        finally:
            self._flush_requests -= 1
            self._waiters.pop(str(event.id), None)

    def commit_event_threadsafe(
        self, event: AuditEvent, timeout: float, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> bool:
        """:meth:`commit_event` for a caller on another thread (WSGI): blocks that thread, never the loop.

        ``loop`` is the loop the writer runs on, for a caller that owns it and may call before the
        writer's task has started there (``BackgroundWriter``); by default, the loop it started on.
        False if the commit did not happen within ``timeout``, or the writer is not running on a loop
        (then the event is only buffered, for when it starts).
        """
        if loop is None and self.started:
            loop = self._loop
        if loop is None or loop.is_closed():
            self.submit(event)
            return False
        if threading.get_ident() == self._thread_id:
            raise RuntimeError("commit_event_threadsafe() would block the writer's own loop; await commit_event()")
        future = asyncio.run_coroutine_threadsafe(self.commit_event(event, timeout), loop)
        try:
            return future.result(timeout + 1.0)
        except Exception:  # timed out waiting for the loop, or the writer closed meanwhile
            future.cancel()
            return False

    async def record_strict(
        self, action: str, *, user_id: Any = None, metadata: Mapping[str, Any] | None = None, timeout: float = 5.0
    ) -> bool:
        """Record one event and wait for its commit (see :meth:`commit_event`). True once it is stored."""
        return await self.commit_event(AuditEvent(action, user_id, metadata), timeout)

    def _notify(self) -> None:
        wake, loop = self._wake, self._loop
        if wake is None or loop is None:
            return
        if threading.get_ident() == self._thread_id:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(wake.set)

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every event recorded before this call has been written (or rejected)."""
        if not self.started:
            self.start_soon()
        if self._runner is not None and not _loop_running_here():  # trio: wait on the writer's own loop
            await _wait_threadsafe(asyncio.run_coroutine_threadsafe(self.flush(timeout), self._runner.loop))
            return
        target = self._enqueued
        self._flush_requests += 1
        try:
            self._notify()
            async with asyncio.timeout(timeout):
                await self._wait_for(target)
        finally:
            self._flush_requests -= 1

    async def _wait_for(self, target: int) -> None:
        assert self._progress is not None  # set by start_soon
        while self._done < target or self._delivery.has_gap or self._gap_writing:
            self._progress.clear()
            if self._wake is not None:
                self._wake.set()
            await self._progress.wait()

    @property
    def healthy(self) -> bool:
        """True while the writer runs, its last write attempt succeeded and the buffer has room.

        For a readiness probe: False while the database is unreachable (events are then spooled, not
        lost, so an app may also choose to stay ready and only alert).
        """
        return self.started and not self._closed and self._failing_since is None and len(self._queue) < self._max_buffer

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        delivery = self._delivery
        return WriterStats(
            enqueued=self._enqueued,
            written=self._written,
            rejected=self._rejected,
            dropped=delivery.dropped,
            retried=self._retried,
            batches=self._batches,
            queue_depth=len(self._queue),
            lost_on_close=self._lost_on_close,
            last_flush_latency=self._last_latency,
            last_error=self._last_error,
            spooled=delivery.spooled,
            replayed=delivery.replayed,
            dead_lettered=delivery.dead_lettered,
            spool_bytes=delivery.spool.bytes,
            healthy=self.healthy,
        )

    # -- background task -----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None and self._progress is not None
        wake, interval, queue, delivery = self._wake, self.config.flush_interval, self._queue, self._delivery
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._check_table())
        try:
            await asyncio.to_thread(delivery.claim)  # spools of stopped processes of this table
        except OSError as exc:
            logger.error(MSG_CLAIM_FAILED, exc)
        while True:
            if not delivery.backlog and (
                not queue or (len(queue) < self._batch_size and not self._flush_requests and not self._closed)
            ):
                wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that lands just as
                # the wait ends, and this loop would then never stop (asyncio.run's teardown waits forever)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await wake.wait()
            if delivery.spool.dirty:
                await asyncio.to_thread(delivery.sync)  # events spooled by submit(): one fsync per interval
            if delivery.backlog:  # while the database is failing, this is where the writer waits (backoff)
                await self._replay_segment()
            # Pipeline: convert the next batch to rows while the previous one is on the wire, so the
            # CPU work here overlaps the server's COPY. Writes stay sequential (one at a time, in order).
            in_flight: asyncio.Task[None] | None = None
            try:
                while queue and self._failing_since is None:
                    take = min(len(queue), self._batch_size)
                    self._converting = [queue.popleft() for _ in range(take)]
                    rows = await self._rows(self._converting)
                    self._inflight[id(rows)] = rows
                    self._converting = None
                    self._taken += take
                    if in_flight is not None:
                        await in_flight
                    in_flight = asyncio.ensure_future(self._write(rows))
                    if len(queue) < self._batch_size and not self._flush_requests and not self._closed:
                        break
                if in_flight is not None:
                    await in_flight
            except asyncio.CancelledError:
                if in_flight is not None:
                    in_flight.cancel()
                raise
            await self._write_gap()

    async def _check_table(self) -> None:
        """At start, say loudly (once) if the table is missing, instead of a retry warning naming an error class.

        Runs beside the writer: writes and spooling go on meanwhile. An unreachable server is left to
        the writes' own warnings; a table dropped later is reported by the first write that misses it.
        """
        exists = getattr(self.sink, "table_exists", None)
        if exists is None:
            return
        bound = self.config.connect_timeout + self.config.write_timeout
        try:
            async with asyncio.timeout(bound):
                found = await exists()
        except Exception:
            return
        if not found:
            self._report_missing_table()

    def _report_missing_table(self) -> None:
        if self._table_reported:
            return
        self._table_reported = True
        config = self.config
        where = f"{config.schema}.{config.table}"
        options = "" if config.schema == DEFAULT_SCHEMA else f" --schema {config.schema}"
        options += "" if config.table == DEFAULT_TABLE else f" --table {config.table}"
        dsn = mask_dsn(config.dsn) if config.dsn else "<your DSN>"
        spool = self._delivery.spool.base if self._delivery.enabled else "nowhere: this writer has no spool"
        logger.error(MSG_NO_TABLE, where, spool, dsn, options)

    async def _rows(self, batch: list[AuditEvent]) -> list[Row]:
        """Convert events to rows, yielding to the loop every ``CONVERT_CHUNK`` rows.

        The app's requests (and an in-flight write) share this loop: a whole batch at once held them
        for milliseconds (raw ASGI app under uvicorn at 5,000 requests/s: p99 36 ms, 14 ms yielding).
        """
        max_bytes, max_string = self.config.max_metadata_bytes, self.config.max_string_length
        rows: list[Row] = []
        for start in range(0, len(batch), CONVERT_CHUNK):
            rows.extend(
                to_row(e, max_metadata_bytes=max_bytes, max_string_length=max_string)
                for e in batch[start : start + CONVERT_CHUNK]
            )
            await asyncio.sleep(0)
        return rows

    async def _replay_segment(self) -> None:
        """Replay the oldest spool segment through the idempotent path (retrying until it lands)."""
        replayed = await self._delivery.replay_next(functools.partial(self._write, replay=True))
        if replayed is not None and replayed[1]:  # this process's events: they count for flush() and aclose()
            self._done += replayed[0]
            assert self._progress is not None  # set by start_soon
            self._progress.set()

    async def _write_gap(self) -> None:
        """Once the database takes writes again, record what was dropped as an ``audit_gap`` row."""
        if self._failing_since is not None:
            return
        gap = self._delivery.take_gap()
        if gap is None:
            return
        row = to_row(gap.event())
        self._gap_writing = True
        try:
            await self._write([row], replay=True)
        except asyncio.CancelledError:
            self._delivery.restore_gap(gap)
            raise
        finally:
            self._gap_writing = False
        assert self._progress is not None  # set by start_soon
        self._progress.set()

    async def _spill_while_failing(self) -> None:
        """While writes fail, move what arrives to the disk spool every ``flush_interval``.

        Not only when an attempt ends: an attempt and the backoff after it last up to ``connect_timeout``
        plus ``retry_max`` seconds, and what waits in memory meanwhile is lost on SIGKILL. So the loss
        bound of a healthy writer (one flush interval of events) holds during an outage too.
        """
        interval = self.config.flush_interval
        while self._failing_since is not None and not self._closed:
            await self._spill()
            await asyncio.sleep(interval)

    async def _spill(self) -> None:
        """The database is failing: move what waits in memory to the disk spool (fsynced), freeing memory."""
        if self._closed or not self._queue or self._spilling is not None or not self._delivery.enabled:
            return
        assert self._spill_lock is not None  # set by start_soon
        async with self._spill_lock:
            await self._spill_locked()

    async def _spill_locked(self) -> None:
        if self._closed or not self._queue or self._spilling is not None:
            return
        events = [self._queue.popleft() for _ in range(len(self._queue))]
        self._spill_events = events  # until the thread has them: aclose() spools them if cancelled here
        rows = await self._rows(events)
        lines = await encode_rows(rows)

        def spool_taken() -> int:
            # Cleared by the thread, not before it starts: asyncio.run's teardown cancels the task around it,
            # maybe before it ever ran (events lost), while a thread once started always finishes.
            self._spill_events = None
            return self._delivery.spool_rows(rows, sync=True, lines=lines)

        spilling = asyncio.ensure_future(asyncio.to_thread(spool_taken))
        self._spilling = spilling
        try:
            taken = await asyncio.shield(spilling)
        finally:
            self._spilling = None if spilling.done() else spilling
        self._log.warning("spooled", MSG_SPOOLING, self._delivery.spooled, self._last_error)
        if taken < len(events):  # the spool is full: those are dropped (counted, recorded as a gap)
            self._done += len(events) - taken
            assert self._progress is not None  # set by start_soon
            self._progress.set()

    async def _write(self, rows: list[Row], *, replay: bool = False) -> None:
        """Write one batch until it lands. ``replay`` rows come from a spool: idempotent from the first try."""
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                rejected = await self.sink.write(rows, retry=replay or attempt > 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                self._retried += 1
                self._last_error = loggable_error(exc)
                if getattr(exc, "sqlstate", None) in ("42P01", "3F000"):  # undefined table or schema
                    self._report_missing_table()
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    if self._spiller is None or self._spiller.done():
                        self._spiller = asyncio.ensure_future(self._spill_while_failing())
                delay = min(self.config.retry_max, self.config.retry_initial * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)  # jitter: many workers must not retry in lockstep
                self._log.warning("retry", MSG_RETRY, type(exc).__name__, len(rows), delay, self._last_error)
                if not replay and not self._closed and await self._hand_over(rows):
                    await self._spill()
                    return  # the batch is on disk now; the replay retries it (with backoff) until it lands
                await self._spill()
                await asyncio.sleep(delay)
                continue
            self._failing_since = None
            self._table_reported = False
            self._last_latency = time.perf_counter() - started
            self._batches += 1
            self._rejected += len(rejected)
            self._written += len(rows) - len(rejected)
            for item in rejected:
                self._delivery.dead_letter(item.row, item.reason)
                # the server's message can quote the value: it goes to the dead-letter file, not the log
                logger.error(MSG_REJECTED, item.row[0], item.row[2], loggable_reason(item.reason))
            if self._waiters:
                self._resolve(rows, rejected)
            if not replay:
                self._inflight.pop(id(rows), None)
                self._done += len(rows)
                assert self._progress is not None  # set by start_soon
                self._progress.set()
            return

    async def _hand_over(self, rows: list[Row]) -> bool:
        """Move a batch whose first attempt failed to the spool (fsynced): memory is not where it waits."""
        # Forgotten by the thread that spooled it: a cancel while it runs must not spool the batch twice.
        return await self._delivery.hand_over(rows, taken=lambda: self._inflight.pop(id(rows), None))

    def _resolve(self, rows: list[Row], rejected: Sequence[RejectedRow]) -> None:
        refused = {str(item.row[0]) for item in rejected}
        for row in rows:
            key = str(row[0])
            waiter = self._waiters.get(key)
            if waiter is not None and not waiter.done():
                waiter.set_result(key not in refused)


def loggable_error(exc: BaseException) -> str:
    """A failed write, for the log and ``stats().last_error``: never the server's message.

    A server error's text can quote a row (``RAISE EXCEPTION 'refusing row %', NEW.metadata``, a
    DETAIL line): only its class and SQLSTATE are named. Network and timeout errors carry addresses,
    not rows, and say what is wrong: their text is kept.
    """
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return f"{type(exc).__name__} (SQLSTATE {sqlstate})"
    if isinstance(exc, OSError | TimeoutError) and not type(exc).__module__.startswith("asyncpg"):
        return f"{type(exc).__name__}: {exc}"[:300]
    return type(exc).__name__


def _foreign_async_library() -> str | None:
    """The async library running in this thread if it is not asyncio (``"trio"``), else None."""
    try:
        import sniffio

        name = sniffio.current_async_library()
    except Exception:  # not installed, or no library it knows of runs here
        name = None
    if name is None:
        trio = sys.modules.get("trio")
        try:
            name = "trio" if trio is not None and trio.lowlevel.current_trio_token() else None
        except RuntimeError:
            name = None
    return None if name == "asyncio" else name


async def _in_worker_thread(fn: Callable[[], T]) -> T:
    """Run blocking ``fn`` in a worker thread of the caller's async library (anyio, or trio without it)."""
    try:
        import anyio.to_thread
    except ImportError:  # pragma: no cover - trio without anyio (anyio comes with Starlette)
        import trio

        result: T = await trio.to_thread.run_sync(fn, abandon_on_cancel=True)
        return result
    try:
        return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
    except TypeError:  # pragma: no cover - anyio < 4.1 names it cancellable
        return await anyio.to_thread.run_sync(fn, cancellable=True)


async def _wait_threadsafe(future: concurrent.futures.Future[T]) -> T:
    """Await a future of the writer's own loop from another async library."""
    try:
        return await _in_worker_thread(future.result)
    finally:
        future.cancel()  # the caller was cancelled: so is the work on the writer's loop (a no-op once done)


def _loop_running_here() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# Writers not closed yet (started or not), held strongly: a writer dropped without aclose() keeps its
# events until they are spooled at exit instead of vanishing with it. One hook for all of them,
# registered when this module is imported: atexit runs hooks last-in first-out, so hooks registered
# later by code built on the writer (``threaded.close_all``, which flushes with the normal deadline)
# run before this last resort.
_open: set[AuditWriter] = set()


def _spool_at_exit() -> None:
    """Interpreter exit without ``aclose()``: spool what is still in memory so the next start writes it."""
    for writer in list(_open):
        if writer._closed:
            continue
        runner = writer._runner
        if runner is not None and runner.loop.is_running():  # its own loop still runs: close it there
            with contextlib.suppress(Exception):
                deadline = writer.config.close_timeout
                asyncio.run_coroutine_threadsafe(writer.aclose(deadline), runner.loop).result(deadline + 6.0)
                continue
        writer._closed = True
        with contextlib.suppress(Exception):
            writer._spool_remainder(0.0)


atexit.register(_spool_at_exit)
