"""The writer: a bounded in-memory buffer and one background task writing batches to a sink.

``record_nowait()`` appends to a deque and returns at once: the request path never awaits the
database. The background task wakes when a batch is full, when ``flush_interval`` has passed, or on
``flush()``; it turns events into rows (``records.to_row``, off the request path) and hands whole
batches to the sink. A failed attempt is retried with capped exponential backoff and jitter, as a
*retry* (idempotent on the event ids), until it lands: events are never dropped on a database error.
The only losses are counted ones: a full buffer (``dropped``) or a close whose deadline passed
(``lost_on_close``), each also logged (rate-limited).

Events may be recorded from other threads (WSGI); the writer's loop is woken thread-safely.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ._types import Row, Sink
from .config import WriterConfig
from .errors import ConfigurationError, WriterClosedError
from .records import AuditEvent, to_row

__all__ = ["AuditWriter", "WriterStats"]

logger = logging.getLogger("audit_middleware.writer")

MSG_DROPPED = "audit buffer full (%s events): dropped %s events so far"
MSG_RETRY = "audit write failed (%s), retrying %s events in %.2fs: %s"
MSG_REJECTED = "database rejected audit row id=%s action=%s: %s"
MSG_CLOSE_TIMEOUT = "audit writer closed with %s events not written (close deadline %.1fs passed)"
MSG_LOOP_ERROR = "audit writer loop failed unexpectedly; restarting it"
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
        if sink is None:
            if config.dsn is None:
                raise ConfigurationError("dsn is required (or set AUDIT_DSN, or pass a sink)")
            from .sinks.postgres import PostgresSink

            sink = PostgresSink(
                config.dsn,
                schema=config.schema,
                table=config.table,
                min_size=config.pool_min_size,
                max_size=config.pool_max_size,
                timeout=config.write_timeout,
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

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        """True while the background task runs."""
        return self._task is not None and not self._task.done()

    def start_soon(self) -> None:
        """Start the background task on the running loop if it is not running (idempotent, sync)."""
        if self._closed:
            raise WriterClosedError("the audit writer is closed")
        if self.started:
            return
        self._loop = asyncio.get_running_loop()
        self._thread_id = threading.get_ident()
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task = self._loop.create_task(self._run(), name="audit_middleware.writer")

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

        Events still unwritten when the deadline passes are counted in ``lost_on_close`` and logged.
        """
        if self._closed:
            return
        if self._queue and not self.started:
            self.start_soon()  # events recorded before the writer ever ran still get written
        self._closed = True
        deadline = self.config.close_timeout if timeout is None else timeout
        if self._task is not None:
            try:
                await asyncio.wait_for(self._wait_for(self._enqueued), deadline)
            except TimeoutError:
                pending = self._enqueued - self._done
                self._lost_on_close += pending
                logger.error(MSG_CLOSE_TIMEOUT, pending, deadline)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._queue.clear()
        terminate = getattr(self.sink, "terminate", None)
        try:
            await asyncio.wait_for(self.sink.aclose(), min(deadline, 5.0))
        except Exception:
            if terminate is not None:
                terminate()

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
            self._dropped += 1
            self._log.warning("dropped", MSG_DROPPED, self._max_buffer, self._dropped)
            return False
        queue.append(event)
        self._enqueued += 1
        if len(queue) % self._batch_size == 0:
            self._notify()
        return True

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
        target = self._enqueued
        self._flush_requests += 1
        try:
            self._notify()
            await asyncio.wait_for(self._wait_for(target), timeout)
        finally:
            self._flush_requests -= 1

    async def _wait_for(self, target: int) -> None:
        assert self._progress is not None  # set by start_soon
        while self._done < target:
            self._progress.clear()
            if self._wake is not None:
                self._wake.set()
            await self._progress.wait()

    def stats(self) -> WriterStats:
        """A snapshot of the counters."""
        return WriterStats(
            enqueued=self._enqueued,
            written=self._written,
            rejected=self._rejected,
            dropped=self._dropped,
            retried=self._retried,
            batches=self._batches,
            queue_depth=len(self._queue),
            lost_on_close=self._lost_on_close,
            last_flush_latency=self._last_latency,
            last_error=self._last_error,
        )

    # -- background task -----------------------------------------------------------------------

    async def _run(self) -> None:
        assert self._wake is not None and self._progress is not None
        wake, interval, queue = self._wake, self.config.flush_interval, self._queue
        while True:
            if not queue or (len(queue) < self._batch_size and not self._flush_requests and not self._closed):
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
            # Pipeline: convert the next batch to rows while the previous one is on the wire, so the
            # CPU work here overlaps the server's COPY. Writes stay sequential (one at a time, in order).
            in_flight: asyncio.Task[None] | None = None
            try:
                while queue:
                    take = min(len(queue), self._batch_size)
                    rows = await self._rows([queue.popleft() for _ in range(take)], yielding=in_flight is not None)
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

    async def _rows(self, batch: list[AuditEvent], *, yielding: bool) -> list[Row]:
        """Convert events to rows; while a write is in flight, yield every few rows so it progresses."""
        max_bytes, max_string = self.config.max_metadata_bytes, self.config.max_string_length
        rows: list[Row] = []
        for start in range(0, len(batch), CONVERT_CHUNK):
            rows.extend(
                to_row(e, max_metadata_bytes=max_bytes, max_string_length=max_string)
                for e in batch[start : start + CONVERT_CHUNK]
            )
            if yielding:
                await asyncio.sleep(0)
        return rows

    async def _write(self, rows: list[Row]) -> None:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                rejected = await self.sink.write(rows, retry=attempt > 0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                self._retried += 1
                self._last_error = f"{type(exc).__name__}: {exc}"[:500]
                delay = min(self.config.retry_max, self.config.retry_initial * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)  # jitter: many workers must not retry in lockstep
                self._log.warning("retry", MSG_RETRY, type(exc).__name__, len(rows), delay, self._last_error)
                await asyncio.sleep(delay)
                continue
            self._last_latency = time.perf_counter() - started
            self._batches += 1
            self._rejected += len(rejected)
            self._written += len(rows) - len(rejected)
            for item in rejected:
                logger.error(MSG_REJECTED, item.row[0], item.row[2], item.reason)
            self._done += len(rows)
            assert self._progress is not None  # set by start_soon
            self._progress.set()
            return
