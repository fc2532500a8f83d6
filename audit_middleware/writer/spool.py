"""An append-only local disk spool for rows the database cannot take right now.

Layout: one directory per writer process, ``<spool_dir>/<target>/<hostname>-<pid>-<start>/``, holding
a ``lock`` file (``fcntl.flock``-ed for the life of the process) and segment files ``000001.jsonl``,
``000002.jsonl``... of JSON lines, one row each::

    ["<id>", "<user_id>" | null, "<action>", "<metadata as JSON text>", "<created_at ISO 8601, UTC>"]

``<target>`` is a hash of the database and table, so a spool is only ever replayed into the table it
was meant for; its ``target.json`` names them (host, port, database, schema, table: never a user or
a password) for ``audit-middleware spool list``. Rows are spooled *after* redaction and conversion
(they are exactly the rows the sink would have written); files and directories are created
owner-only (0600 / 0700).

Writes are buffered and fsynced in batches (:meth:`Spool.sync`). The spool is size-capped: an append
past ``max_bytes`` is refused and the caller counts the rows as dropped. Replay reads segments
oldest first; a segment is deleted only after all of its rows are committed, and replay always
goes through the sink's idempotent retry path, so replaying a segment twice (after a crash in the
middle) stores each id once. A torn last line (a crash mid-write) is skipped and counted.

A directory whose ``lock`` can be taken belongs to a dead process: :meth:`Spool.claim_orphans`
takes it (non-blocking ``flock``), so of several workers starting at once exactly one replays it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import socket
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .._types import Row

__all__ = [
    "ClaimedSpool",
    "PendingSpool",
    "Spool",
    "count_rows",
    "database_identity",
    "former_spool_targets",
    "pending_spools",
    "spool_target",
]

logger = logging.getLogger("audit_middleware.spool")

MSG_TORN = "audit spool %s: skipped %s unreadable line(s) (torn write after a crash)"
MSG_CLAIMED = "audit spool: replaying %s events left by a stopped process, from %s"
MSG_NOT_PRIVATE = (
    "audit spool directory %s is not private to this user (owner uid %s, mode %o): refusing to spool into it or "
    "replay from it; set spool_dir to a directory only this user can write"
)
MSG_FOREIGN_SPOOL = "audit spool %s belongs to uid %s, not this user: not replayed"
SEGMENT_BYTES = 4 * 1024 * 1024
LOCK_NAME = "lock"
TARGET_FILE = "target.json"
SUFFIX = ".jsonl"
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def spool_target(dsn: str | None, schema: str, table: str) -> str:
    """The directory name that ties a spool to one database table (a hash: no DSN on disk).

    It hashes the database the DSN names (hosts, ports, database name), not its user, password or
    options: rotating a credential must not strand what an outage spooled.
    """
    return _target(database_identity(dsn), schema, table)


def former_spool_targets(dsn: str | None, schema: str, table: str) -> list[str]:
    """Directory names earlier releases used for the same table (they hashed the whole DSN): still claimed."""
    former = _target(dsn or "", schema, table)
    return [] if former == spool_target(dsn, schema, table) else [former]


def _target(identity: str, schema: str, table: str) -> str:
    text = f"{identity}|{schema}|{table}"
    return f"{table[:40]}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def database_identity(dsn: str | None) -> str:
    """``host:port[,host:port...]/database`` of a ``postgresql://`` DSN (the whole text if it is not one)."""
    if not dsn:
        return ""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return dsn
    if parts.scheme not in ("postgres", "postgresql"):
        return dsn
    query = dict(parse_qsl(parts.query))
    hosts = query.get("host") or parts.netloc.rpartition("@")[2] or "localhost"
    port = query.get("port") or "5432"
    database = query.get("dbname") or query.get("database") or unquote(parts.path.lstrip("/"))
    if not database:  # the server takes the user's name for it: the user then names the database
        userinfo = parts.netloc.rpartition("@")[0]
        database = "<user " + (query.get("user") or unquote(userinfo.partition(":")[0])) + ">"
    return ",".join(_with_port(host.strip().lower(), port) for host in hosts.split(",")) + "/" + database


def _with_port(host: str, port: str) -> str:
    bracketed = host.startswith("[")
    has_port = "]:" in host if bracketed else host.count(":") == 1
    return host if has_port else f"{host}:{port}"


def encode_row(row: Row) -> bytes:
    event_id, user_id, action, metadata, created = row
    user = None if user_id is None else str(user_id)
    return (_dumps([str(event_id), user, action, metadata, created.isoformat()]) + "\n").encode()


def _uuid(text: str) -> Any:
    try:
        return uuid.UUID(text)
    except ValueError:
        return text


def decode_row(line: bytes) -> Row:
    event_id, user_id, action, metadata, created = json.loads(line)
    return (
        _uuid(event_id),
        None if user_id is None else uuid.UUID(user_id),
        str(action),
        str(metadata),
        dt.datetime.fromisoformat(created),
    )


def _lock(path: Path, *, create: bool = False) -> int | None:
    """Open and ``flock`` ``path`` without blocking; the fd, or None if another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def segments(directory: Path) -> list[Path]:
    """The segment files of one spool directory, oldest first."""
    try:
        return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX))
    except FileNotFoundError:
        return []


def read_segment(path: Path, batch_size: int) -> Iterator[list[Row]]:
    """Rows of ``path`` in order, ``batch_size`` at a time; unreadable (torn) lines are skipped and logged."""
    batch: list[Row] = []
    torn = 0
    with path.open("rb") as f:
        for line in f:
            try:
                batch.append(decode_row(line))
            except (ValueError, TypeError):
                torn += 1
                continue
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch
    if torn:
        logger.warning(MSG_TORN, path, torn)


def _remove_dir(directory: Path) -> None:
    for path in segments(directory):
        path.unlink(missing_ok=True)
    (directory / LOCK_NAME).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()


def count_rows(paths: Sequence[Path]) -> int:
    """Rows (lines) in spool segments; a segment removed meanwhile counts 0."""
    total = 0
    for path in paths:
        try:
            with path.open("rb") as f:
                while chunk := f.read(1 << 20):
                    total += chunk.count(b"\n")
        except OSError:
            continue
    return total


def _is_live(directory: Path) -> bool:
    """True if the process that owns ``directory`` (or a writer replaying it) holds its lock."""
    fd = _lock(directory / LOCK_NAME)
    if fd is None:
        return (directory / LOCK_NAME).exists()
    os.close(fd)
    return False


def read_target(base: Path) -> dict[str, str]:
    """What a target directory's ``target.json`` says it is for (empty if it has none)."""
    try:
        data = json.loads((base / TARGET_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


@dataclass(frozen=True, slots=True)
class PendingSpool:
    """One process's spool directory holding rows not yet written."""

    directory: Path
    target: dict[str, str]  # database, schema, table (from target.json; empty for older spools)
    live: bool  # its process (or a writer replaying it) still holds the lock
    segments: int
    rows: int
    bytes: int


def pending_spools(root: str | os.PathLike[str], *, count: bool = True) -> list[PendingSpool]:
    """Every process spool under ``root`` with segments left, oldest name first (this user's only)."""
    found: list[PendingSpool] = []
    try:
        bases = sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return found
    for base in bases:
        try:
            _check_private(base)
            directories = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
        target = read_target(base)
        for directory in directories:
            paths = segments(directory)
            if not paths:
                continue
            size = sum(p.stat().st_size for p in paths if p.exists())
            rows = count_rows(paths) if count else 0
            found.append(PendingSpool(directory, target, _is_live(directory), len(paths), rows, size))
    return found


@dataclass
class ClaimedSpool:
    """The spool directory of a stopped process, locked by this one until :meth:`release`."""

    directory: Path
    fd: int
    segments: list[Path] = field(default_factory=list)
    replayed: int = 0  # rows of it committed so far

    def release(self, *, remove: bool) -> None:
        """Drop the lock; with ``remove`` delete the (replayed) directory first."""
        if remove:
            _remove_dir(self.directory)
        os.close(self.fd)


def _write_target(path: Path, describe: Mapping[str, str]) -> None:
    """Create ``target.json`` once (owner-only, never through a link); an existing one is kept."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(dict(describe), f)


def _check_private(path: Path) -> None:
    """Raise ``OSError`` unless ``path`` is a real directory owned by this user that nobody else can write.

    The default spool lives under the shared temp directory: whoever creates it first, open to all,
    could delete what is spooled there or plant a "stopped process" whose made-up rows would be replayed.
    """
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise OSError(MSG_NOT_PRIVATE % (path, info.st_uid, stat.S_IMODE(info.st_mode)))


class Spool:
    """This process's spool directory (created on first use) and the claiming of orphaned ones.

    Args:
        root: the spool directory shared by every process of the application.
        target: from :func:`spool_target`.
        max_bytes: cap of this process's spool; appends past it are refused.
        segment_bytes: size at which a new segment file is started.
        formerly: other names of the same target (:func:`former_spool_targets`): their spools of
            stopped processes are claimed too.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        target: str,
        *,
        max_bytes: int,
        segment_bytes: int = SEGMENT_BYTES,
        formerly: Sequence[str] = (),
        describe: Mapping[str, str] | None = None,
    ):
        self.base = Path(root) / target
        self._describe = dict(describe or {})
        self._bases = [self.base, *(Path(root) / name for name in formerly)]
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        self.name = f"{socket.gethostname()}-{os.getpid()}-{stamp}-{uuid.uuid4().hex[:6]}"
        self.directory = self.base / self.name
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        self._file: IO[bytes] | None = None
        self._file_bytes = 0
        self._seq = 0
        self._dirty = False
        self.bytes = 0  # bytes in unreplayed segments of this process
        self.pending = 0  # rows appended and not yet replayed

    @property
    def bases(self) -> list[Path]:
        """The target directories this spool claims from (its own name and former ones)."""
        return list(self._bases)

    # -- writing -------------------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        if self._lock_fd is not None:
            return
        self.base.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the spool root: owner-only too
        self.base.mkdir(mode=0o700, exist_ok=True)
        _check_private(self.base)
        if self._describe:
            _write_target(self.base / TARGET_FILE, self._describe)
        # Build under a hidden name, lock, then rename: a scanning worker never sees an unlocked directory.
        hidden = self.base / f".{self.name}"
        hidden.mkdir(mode=0o700)
        fd = _lock(hidden / LOCK_NAME, create=True)
        if fd is None:  # pragma: no cover - a fresh directory of our own cannot be locked by anyone else
            raise OSError(f"cannot lock {hidden}")
        hidden.rename(self.directory)
        self._lock_fd = fd

    def append(self, rows: list[Row], *, partial: bool = True, lines: list[bytes] | None = None) -> int:
        """Append ``rows`` (buffered, not yet fsynced); return how many fit under the cap (a prefix).

        With ``partial=False`` either every row is appended or none. ``lines`` are the rows already
        encoded with :func:`encode_row` (the writer encodes on its loop, in slices, and only the file
        work runs in a thread).
        """
        data = [encode_row(row) for row in rows] if lines is None else lines
        with self._lock:
            if not partial and self.bytes + sum(map(len, data)) > self.max_bytes:
                return 0
            self._ensure_dir()
            taken = 0
            for line in data:
                if self.bytes + len(line) > self.max_bytes:
                    break
                if self._file is None or self._file_bytes >= self.segment_bytes:
                    self._roll()
                assert self._file is not None  # opened by _roll
                self._file.write(line)
                self._file_bytes += len(line)
                self.bytes += len(line)
                taken += 1
            if taken:
                self._dirty = True
                self.pending += taken
            return taken

    def _roll(self) -> None:
        self._close_segment()
        self._seq += 1
        path = self.directory / f"{self._seq:06d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=256 * 1024)
        self._file_bytes = 0

    def _close_segment(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
            self._dirty = False

    def sync(self) -> None:
        """Flush and fsync what was appended since the last sync (one fsync per batch of appends)."""
        with self._lock:
            if self._dirty and self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._dirty = False

    @property
    def dirty(self) -> bool:
        """True if rows were appended since the last fsync."""
        return self._dirty

    def seal(self) -> list[Path]:
        """Close the segment being written and return every unreplayed segment of this process, oldest first."""
        with self._lock:
            self._close_segment()
            found = segments(self.directory) if self._lock_fd is not None else []
            if not found:  # torn lines were never counted as replayed: nothing is pending
                self.pending = self.bytes = 0
            return found

    def replayed(self, path: Path, rows: int) -> None:
        """Forget a segment whose rows are all committed."""
        with self._lock:
            with contextlib.suppress(FileNotFoundError):
                self.bytes = max(0, self.bytes - path.stat().st_size)
            path.unlink(missing_ok=True)
            self.pending = max(0, self.pending - rows)

    def close(self) -> None:
        """fsync and release the lock; an empty directory is removed, a non-empty one stays for the next start."""
        with self._lock:
            self._close_segment()
            if self._lock_fd is None:
                return
            if not segments(self.directory):
                _remove_dir(self.directory)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- orphans -------------------------------------------------------------------------------

    def claim_orphans(self) -> list[ClaimedSpool]:
        """Lock the spool directories of stopped processes of this target, oldest name order."""
        claimed: list[ClaimedSpool] = []
        entries: list[Path] = []
        for base in self._bases:
            try:
                _check_private(base)
                entries.extend(sorted(base.iterdir()))
            except FileNotFoundError:
                continue
        for directory in entries:
            if directory.name.startswith(".") or directory == self.directory or not directory.is_dir():
                continue
            owner = directory.lstat().st_uid
            if owner != os.geteuid():
                logger.warning(MSG_FOREIGN_SPOOL, directory, owner)
                continue
            lock = directory / LOCK_NAME
            if not lock.exists():
                continue
            fd = _lock(lock)
            if fd is None:
                continue  # its process is alive, or another worker is replaying it
            if not lock.exists():  # replayed and removed by another worker between our look and our lock
                os.close(fd)
                continue
            found = segments(directory)
            if found:
                logger.warning(MSG_CLAIMED, count_rows(found), directory)
            claimed.append(ClaimedSpool(directory, fd, found))
        return claimed
