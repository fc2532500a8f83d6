"""An ``AuditWriter`` for threaded (WSGI) code: its own event loop and asyncpg pool on a daemon thread.

:class:`BackgroundWriter` starts the writer lazily, on the first event, in the process that records
it. Pre-fork servers (gunicorn, uWSGI without ``lazy-apps``) build the app in the master and fork
workers: nothing started in the master is inherited. An ``os.register_at_fork`` hook forgets the
parent's thread, loop and writer in the child, and a pid check on the slow path catches any other
way of forking, so each worker process starts its own thread, loop and pool on its first request.

Request threads only call ``submit``/``record_nowait``: a deque append and, once per batch, a
thread-safe wake-up of the writer's loop. They never wait on the database.

Flushing: ``close()`` (or ``flush()``) explicitly; at interpreter exit (``atexit``), which is where a
gunicorn worker ends after its SIGTERM/graceful-shutdown handling (it leaves through ``sys.exit``).
A server that ends workers without running ``atexit`` can call :func:`close_all` from its own exit
hook, e.g. in ``gunicorn.conf.py``::

    from audit_middleware.threaded import close_all

    def worker_exit(server, worker):
        close_all()
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor  # imported now: importing it at exit would fail
from typing import Any, TypeVar

from ..errors import WriterClosedError
from .records import AuditEvent
from .writer import AuditWriter, WriterStats

__all__ = ["BackgroundWriter", "LoopThread", "close_all"]

logger = logging.getLogger("audit_middleware.writer")

MSG_CLOSE_FAILED = "closing the audit writer thread failed (%s: %s)"
MSG_THREAD_STUCK = "the audit writer thread did not stop within %.1fs"
THREAD_NAME = "audit_middleware.writer"

_instances: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()
T = TypeVar("T")


class _ExitSafeExecutor(ThreadPoolExecutor):
    """The writer loop's default executor (asyncpg resolves host names in it).

    While the interpreter exits no new thread may start, so a plain executor refuses work and the
    final flush could not connect to a host given by name: then the work runs inline instead.
    """

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            future: Future[T] = Future()
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)
            return future


class BackgroundWriter:
    """Run an :class:`~audit_middleware.AuditWriter` on a background daemon thread, one per process.

    Args:
        make_writer: builds the writer; called once per process, in that process, on first use. The
            writer lives on this object's thread: :meth:`close` closes it.

    Example:
        >>> background = BackgroundWriter(lambda: AuditWriter("postgresql://localhost/app"))  # doctest: +SKIP
        >>> background.record_nowait("export_data", user_id=user_id)  # from any thread, never blocks
    """

    def __init__(self, make_writer: Callable[[], AuditWriter]) -> None:
        self._make = make_writer
        self._closed = False
        self._forget()
        _instances.add(self)

    def _forget(self) -> None:
        """Drop per-process state (after a fork the parent's thread and loop do not exist here)."""
        self._lock = threading.Lock()  # a lock held by another thread at fork time would never be released
        self._pid: int | None = None
        self._writer: AuditWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- the writer, started on demand -----------------------------------------------------------

    @property
    def writer(self) -> AuditWriter:
        """This process's writer, started on its thread (started now if needed)."""
        writer = self._writer
        if writer is not None and self._pid == os.getpid():
            return writer
        return self._start()

    @property
    def started(self) -> bool:
        """True while this process's writer thread runs."""
        thread = self._thread
        return self._pid == os.getpid() and thread is not None and thread.is_alive()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _start(self) -> AuditWriter:
        with self._lock:
            if self._pid != os.getpid():
                self._forget_in_lock()
            if self._writer is not None:
                return self._writer
            if self._closed:
                raise WriterClosedError("the audit writer is closed")
            writer = self._make()
            loop = asyncio.new_event_loop()
            loop.set_default_executor(_ExitSafeExecutor(max_workers=2, thread_name_prefix=THREAD_NAME))
            # Queued before the thread exists, so it runs before anything another thread schedules later
            # (close() and flush() use call_soon_threadsafe, which is FIFO behind this).
            loop.call_soon(writer.start_soon)
            thread = threading.Thread(target=_serve, args=(loop,), name=THREAD_NAME, daemon=True)
            thread.start()
            self._loop, self._thread, self._pid = loop, thread, os.getpid()
            self._writer = writer  # last: the lock-free fast path in `writer` reads only this and the pid
            return writer

    def _forget_in_lock(self) -> None:
        self._pid, self._writer, self._loop, self._thread = None, None, None, None

    # -- recording (any thread, never blocks) ------------------------------------------------------

    def submit(self, event: AuditEvent) -> bool:
        """Buffer an event (see ``AuditWriter.submit``); starts the writer thread on first use."""
        return self.writer.submit(event)

    def record_nowait(
        self, action: str, *, user_id: Any = None, metadata: Mapping[str, Any] | None = None
    ) -> AuditEvent | None:
        """Buffer one event and return it (None if the buffer was full). Never waits on the database."""
        return self.writer.record_nowait(action, user_id=user_id, metadata=metadata)

    def commit_event(self, event: AuditEvent, timeout: float) -> bool:
        """Buffer ``event`` and block this thread until it is committed (see ``AuditWriter.commit_event``).

        Starts the writer thread if needed. False if the commit did not happen within ``timeout``; the
        event then stays buffered and may land later. For strict routes only: it waits on the database.
        """
        writer = self.writer
        # The commit is queued behind the writer's start_soon, which _start queued first on this loop.
        return writer.commit_event_threadsafe(event, timeout, loop=self._loop)

    def stats(self) -> WriterStats | None:
        """This process's writer counters, or None if it has not started here."""
        writer = self._writer
        return writer.stats() if writer is not None and self._pid == os.getpid() else None

    # -- flushing and closing (blocking: never call them on the request path) ----------------------

    def flush(self, timeout: float | None = None) -> None:
        """Block until every event recorded so far in this process is written (or ``timeout`` passes).

        Raises:
            TimeoutError: the events were not all written within ``timeout`` seconds.
        """
        writer, loop = self._writer, self._loop
        if writer is None or loop is None or self._pid != os.getpid():
            return
        future = asyncio.run_coroutine_threadsafe(writer.flush(timeout), loop)
        try:
            future.result(None if timeout is None else timeout + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError("audit events were not written in time") from None

    def close(self, timeout: float | None = None) -> None:
        """Flush (at most ``timeout``, default the writer's ``close_timeout``), then stop the thread.

        Idempotent; afterwards ``submit`` raises ``WriterClosedError``. Unwritten events left when the
        deadline passes are counted in ``lost_on_close`` and logged by the writer.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writer, loop, thread = self._writer, self._loop, self._thread
            if writer is None or loop is None or thread is None or self._pid != os.getpid():
                return
        deadline = writer.config.close_timeout if timeout is None else timeout
        try:
            asyncio.run_coroutine_threadsafe(writer.aclose(deadline), loop).result(deadline + 6.0)
        except Exception as exc:
            logger.error(MSG_CLOSE_FAILED, type(exc).__name__, exc)
        finally:
            if loop.is_running():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(5.0)
            if thread.is_alive():
                logger.error(MSG_THREAD_STUCK, 5.0)
            else:
                loop.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "started" if self.started else "idle"
        return f"<BackgroundWriter {state} pid={self._pid}>"


class LoopThread:
    """An asyncio loop running on a daemon thread of its own.

    For an :class:`~audit_middleware.AuditWriter` started where asyncio does not run (trio): its
    task, its pool and its waits live here; the caller only appends to its deque.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_default_executor(_ExitSafeExecutor(max_workers=2, thread_name_prefix=THREAD_NAME))
        self.thread = threading.Thread(target=_serve, args=(self.loop,), name=THREAD_NAME, daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop and wait for the thread (blocking: from a worker thread or at exit)."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if self.thread.is_alive():
            logger.error(MSG_THREAD_STUCK, timeout)
        elif not self.loop.is_closed():
            self.loop.close()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def close_all(timeout: float | None = None) -> None:
    """Flush and stop every :class:`BackgroundWriter` of this process (registered with ``atexit``)."""
    for background in list(_instances):
        background.close(timeout)


def _after_fork_in_child() -> None:
    for background in list(_instances):
        background._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_all)
