"""The writer's delivery machinery: spool, dead letters and gap accounting, kept out of ``buffer.py``.

:class:`Delivery` owns this process's :class:`~audit_middleware.spool.Spool`, the spools it claimed
from stopped processes, the dead-letter file and the record of dropped events. The writer calls it
from its background task (replay, spill, gap events) and, for ``overflow="spool"``, from
``submit()`` on the caller's thread. Everything here is thread-safe.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._types import Row, Sink
from .config import WriterConfig
from .deadletter import DeadLetterFile
from .records import AuditEvent, to_row
from .spool import (
    LOCK_NAME,
    MSG_TORN,
    ClaimedSpool,
    Spool,
    _lock,
    database_identity,
    decode_row,
    encode_row,
    former_spool_targets,
    pending_spools,
    read_segment,
    segments,
    spool_target,
)

__all__ = ["GAP_ACTION", "Delivery", "Gap", "SpoolInUseError", "default_spool_dir", "encode_rows", "replay_directory"]

logger = logging.getLogger("audit_middleware.writer")

GAP_ACTION = "audit_gap"
MSG_SPOOL_ERROR = "audit spool write failed (%s): %s events dropped"
MSG_STRANDED = (
    "audit spool: %s events in %s wait for %s, which this writer does not write to; unless a writer for it "
    "starts, replay them with: audit-middleware spool replay %s --dsn DSN"
)
MSG_CLAIM_REPLAYED = "audit spool: replayed %s events left by a stopped process, from %s"
MSG_SEGMENT_UNREADABLE = "audit spool segment %s cannot be read, skipped: %s"
SLICE = 200  # rows encoded or decoded on the loop between yields
REPLAY_BATCH = 500  # rows per replayed write: small enough that encoding one never stalls the loop for long


async def encode_rows(rows: list[Row]) -> list[bytes]:
    """Spool lines for ``rows``, encoded on the loop in slices: a thread doing this CPU work would hold
    the GIL for whole switch intervals and delay requests more than these short slices do."""
    lines: list[bytes] = []
    for start in range(0, len(rows), SLICE):
        lines.extend(encode_row(row) for row in rows[start : start + SLICE])
        await asyncio.sleep(0)
    return lines


def default_spool_dir() -> str:
    """This user's state directory's ``audit_middleware/spool`` (the platform's convention).

    ``$XDG_STATE_HOME/audit_middleware/spool``, else ``~/.local/state/audit_middleware/spool`` (Linux,
    BSD; the XDG base directory spec, as ``platformdirs.user_state_dir`` has it); on macOS
    ``~/Library/Application Support/audit_middleware/spool``. Not the shared temp directory, where
    other users and tmp cleaners can remove what an outage spooled. Without a home directory (a
    service user with none): ``<tempdir>/audit_middleware-spool-<uid>``, checked like any spool.
    """
    state = os.environ.get("XDG_STATE_HOME", "")
    home = "~/Library/Application Support" if sys.platform == "darwin" else "~/.local/state"
    try:
        base = Path(state) if os.path.isabs(state) and sys.platform != "darwin" else Path(home).expanduser()
    except RuntimeError:  # no home directory to expand "~" to
        base = Path(home)
    if not base.is_absolute():  # "~" did not expand: no home directory
        return os.path.join(tempfile.gettempdir(), f"audit_middleware-spool-{os.geteuid()}")
    return str(base / "audit_middleware" / "spool")


@dataclass(frozen=True, slots=True)
class Gap:
    """Events lost between ``first_at`` and ``last_at`` (UTC), and why (the first reason seen)."""

    dropped: int
    first_at: dt.datetime
    last_at: dt.datetime
    reason: str

    def event(self) -> AuditEvent:
        """The ``audit_gap`` event that records this hole in the table itself."""
        metadata = {
            "dropped": self.dropped,
            "first_at": self.first_at.isoformat(),
            "last_at": self.last_at.isoformat(),
            "reason": self.reason,
        }
        return AuditEvent(GAP_ACTION, None, metadata)


@dataclass(slots=True)
class Segment:
    """A spool segment to replay; ``own`` segments belong to this process's counters."""

    path: Path
    own: bool
    claim: ClaimedSpool | None = None


class Delivery:
    """Spool, claimed spools, dead letters and the gap record of one writer."""

    def __init__(self, config: WriterConfig, *, enabled: bool = True) -> None:
        self.config = config
        self.enabled = enabled  # False: no disk spool (a custom sink without spool_dir), losses are counted
        root = config.spool_dir or default_spool_dir()
        self.root = Path(root)
        self.spool = Spool(
            root,
            spool_target(config.dsn, config.schema, config.table),
            max_bytes=config.spool_max_bytes,
            formerly=former_spool_targets(config.dsn, config.schema, config.table),
            describe={"database": database_identity(config.dsn), "schema": config.schema, "table": config.table},
        )
        self.dead_letters = DeadLetterFile(config.dead_letter_path or os.path.join(root, "dead-letter.jsonl"))
        self._lock = threading.Lock()
        self._gap: Gap | None = None
        self._claims: list[ClaimedSpool] = []
        self._orphans: list[Segment] = []
        self.spooled = 0
        self.dropped = 0
        self.replayed = 0
        self.dead_lettered = 0

    # -- gaps ----------------------------------------------------------------------------------

    def lost(self, count: int, reason: str) -> None:
        """Record ``count`` dropped events (for the next ``audit_gap`` row)."""
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            self.dropped += count
            gap = self._gap
            if gap is None:
                self._gap = Gap(count, now, now, reason)
            else:
                self._gap = Gap(gap.dropped + count, gap.first_at, now, gap.reason)

    @property
    def has_gap(self) -> bool:
        """True while dropped events wait to be recorded as an ``audit_gap`` row."""
        return self._gap is not None

    def take_gap(self) -> Gap | None:
        with self._lock:
            gap, self._gap = self._gap, None
            return gap

    def restore_gap(self, gap: Gap) -> None:
        """Put back a gap whose event could not be written (merged with any newer one)."""
        with self._lock:
            newer = self._gap
            if newer is None:
                self._gap = gap
            else:
                self._gap = Gap(gap.dropped + newer.dropped, gap.first_at, newer.last_at, gap.reason)

    # -- spooling ------------------------------------------------------------------------------

    def spool_rows(self, rows: list[Row], *, sync: bool, lines: list[bytes] | None = None) -> int:
        """Append rows to this process's spool; return how many were taken (the rest is a counted gap)."""
        if not self.enabled:
            self.lost(len(rows), "buffer_full")
            return 0
        try:
            taken = self.spool.append(rows, lines=lines)
            if sync:
                self.spool.sync()
        except OSError as exc:
            logger.error(MSG_SPOOL_ERROR, type(exc).__name__, len(rows))
            self.lost(len(rows), "spool_error")
            return 0
        self.spooled += taken
        if taken < len(rows):
            self.lost(len(rows) - taken, "spool_full")
        return taken

    def spool_batch(self, rows: list[Row], lines: list[bytes] | None = None) -> bool:
        """Append a whole batch and fsync; False (nothing appended, nothing counted lost) if it does not fit."""
        if not self.enabled:
            return False
        try:
            taken = self.spool.append(rows, partial=False, lines=lines)
            if taken:
                self.spool.sync()
        except OSError as exc:
            logger.error(MSG_SPOOL_ERROR, type(exc).__name__, 0)
            return False
        self.spooled += taken
        return taken == len(rows) > 0

    def spool_events(self, events: Iterable[AuditEvent], *, sync: bool) -> int:
        limits = self.config.max_metadata_bytes, self.config.max_string_length
        rows = [to_row(e, max_metadata_bytes=limits[0], max_string_length=limits[1]) for e in events]
        return self.spool_rows(rows, sync=sync) if rows else 0

    async def hand_over(self, rows: list[Row], *, taken: Callable[[], object] | None = None) -> bool:
        """Move a batch whose first attempt failed to the spool (fsynced); False if the spool cannot take it.

        ``taken`` runs in the spooling thread once the batch is on disk, even if the caller was
        cancelled meanwhile (the caller's copy is then dropped exactly once).
        """
        lines = await encode_rows(rows)

        def spool() -> bool:
            done = self.spool_batch(rows, lines)
            if done and taken is not None:
                taken()
            return done

        return await asyncio.to_thread(spool)

    def sync(self) -> None:
        try:
            self.spool.sync()
        except OSError as exc:  # pragma: no cover - a failing disk; the rows stay buffered in the file object
            logger.error(MSG_SPOOL_ERROR, type(exc).__name__, 0)

    # -- replay --------------------------------------------------------------------------------

    def claim(self) -> None:
        """Take the spools of stopped processes (run once at start, in a thread)."""
        if not self.enabled:
            return
        claims = self.spool.claim_orphans()
        with self._lock:
            self._claims.extend(claims)
            self._orphans.extend(Segment(p, False, c) for c in claims for p in c.segments)
            for claim in claims:
                if not claim.segments:
                    claim.release(remove=True)
                    self._claims.remove(claim)
        self.report_stranded()

    def report_stranded(self) -> None:
        """Log the spools of stopped processes under this root that this writer will never replay.

        They were spooled for another database or table (a DSN whose port changed, a renamed table):
        unless a writer for that target starts, they wait forever, so each is named with its count
        and the command that replays it elsewhere.
        """
        mine = set(self.spool.bases)
        for pending in pending_spools(self.root):
            if pending.live or pending.directory.parent in mine:
                continue
            target = pending.target
            where = (
                f"{target.get('database')} {target.get('schema')}.{target.get('table')}"
                if target
                else "an unknown target"
            )
            logger.warning(MSG_STRANDED, pending.rows, pending.directory, where, pending.directory)

    @property
    def backlog(self) -> bool:
        """True if a spool (this process's or a claimed one) holds rows not yet replayed."""
        return bool(self._orphans) or self.spool.pending > 0

    def next_segment(self) -> Segment | None:
        """The oldest segment to replay: claimed spools first, then this process's sealed segments."""
        with self._lock:
            if self._orphans:
                return self._orphans[0]
        if self.spool.pending > 0:
            own = self.spool.seal()
            if own:
                return Segment(own[0], True)
        return None

    async def replay_next(self, write: Callable[[list[Row]], Awaitable[None]]) -> tuple[int, bool] | None:
        """Replay the oldest segment with ``write`` (which retries until the rows land), then delete it.

        Returns (rows replayed, whether the segment was this process's own), or None if there was none.
        Decoding happens on the loop in slices: replaying a backlog must not stall requests.
        """
        segment = await asyncio.to_thread(self.next_segment)
        if segment is None:
            return None
        try:
            data = await asyncio.to_thread(segment.path.read_bytes)
        except OSError as exc:  # removed or unreadable behind our back: nothing to replay from it
            logger.error(MSG_SEGMENT_UNREADABLE, segment.path, exc)
            data = b""
        lines = data.splitlines()
        total = torn = 0
        for start in range(0, len(lines), REPLAY_BATCH):
            rows: list[Row] = []
            for offset in range(start, min(start + REPLAY_BATCH, len(lines)), SLICE):
                for line in lines[offset : min(offset + SLICE, start + REPLAY_BATCH)]:
                    try:
                        rows.append(decode_row(line))
                    except (ValueError, TypeError):
                        torn += 1  # a torn last line (crash mid-write)
                await asyncio.sleep(0)
            if rows:
                await write(rows)
                total += len(rows)
        if torn:
            logger.warning(MSG_TORN, segment.path, torn)
        await asyncio.to_thread(self.replayed_segment, segment, total)
        return total, segment.own

    def replayed_segment(self, segment: Segment, rows: int) -> None:
        """Every row of ``segment`` is committed: delete it (and a claimed spool once it is empty)."""
        self.replayed += rows
        if segment.own:
            self.spool.replayed(segment.path, rows)
            return
        segment.path.unlink(missing_ok=True)
        with self._lock:
            self._orphans.remove(segment)
            claim = segment.claim
            if claim is not None:
                claim.replayed += rows
            if claim is not None and not any(s.claim is claim for s in self._orphans):
                claim.release(remove=True)
                self._claims.remove(claim)
                logger.info(MSG_CLAIM_REPLAYED, claim.replayed, claim.directory)

    # -- dead letters --------------------------------------------------------------------------

    def dead_letter(self, row: Row, reason: str) -> None:
        try:
            self.dead_letters.append(row, reason)
        except OSError as exc:
            logger.error(MSG_SPOOL_ERROR, type(exc).__name__, 1)
            self.lost(1, "dead_letter_error")
            return
        self.dead_lettered += 1

    # -- shutdown ------------------------------------------------------------------------------

    def close(self) -> None:
        """fsync and unlock this spool; release claimed spools not yet replayed (kept for the next start)."""
        gap = self.take_gap()
        if (
            gap is not None and self.enabled
        ):  # keep the record of the hole with the spooled rows; it lands on the next start
            limits = self.config.max_metadata_bytes, self.config.max_string_length
            row = to_row(gap.event(), max_metadata_bytes=limits[0], max_string_length=limits[1])
            self.spool.max_bytes += 4096  # a gap record must fit even in a full spool
            self.spool_rows([row], sync=False)
        self.spool.close()
        with self._lock:
            for claim in self._claims:
                claim.release(remove=False)
            self._claims.clear()
            self._orphans.clear()

    def stats(self) -> dict[str, Any]:
        return {
            "spooled": self.spooled,
            "replayed": self.replayed,
            "dead_lettered": self.dead_lettered,
            "spool_bytes": self.spool.bytes,
        }


class SpoolInUseError(OSError):
    """The spool directory is locked: its process still runs, or a writer is replaying it."""


async def replay_directory(
    directory: Path, sink: Sink, dead_letters: DeadLetterFile, *, batch_size: int = REPLAY_BATCH
) -> tuple[int, int]:
    """Replay one stopped process's spool directory into ``sink``, then delete it.

    For a spool no writer will claim (it was spooled for another database or table). Rows go
    through the sink's idempotent retry path, so a replay interrupted and run again stores each
    row once; rows the database refuses go to ``dead_letters``. Each segment is deleted once its
    rows are committed. Returns (rows written or dead-lettered, rows dead-lettered).

    Raises:
        SpoolInUseError: the directory's lock is held (its process is alive, or it is being replayed).
        OSError: the directory is not a spool directory of this user.
    """
    lock = directory / LOCK_NAME
    if not lock.exists():
        raise OSError(f"{directory} is not a process spool directory (no {LOCK_NAME} file)")
    fd = _lock(lock)
    if fd is None:
        raise SpoolInUseError(f"{directory} is locked: its process is still running, or it is being replayed")
    done = refused = 0
    try:
        for path in segments(directory):
            batches: list[list[Row]] = await asyncio.to_thread(_read_all, path, batch_size)
            for rows in batches:
                rejected = await sink.write(rows, retry=True)
                for item in rejected:
                    await asyncio.to_thread(dead_letters.append, item.row, item.reason)
                done += len(rows)
                refused += len(rejected)
            path.unlink()
    except BaseException:
        os.close(fd)
        raise
    ClaimedSpool(directory, fd).release(remove=True)
    return done, refused


def _read_all(path: Path, batch_size: int) -> list[list[Row]]:
    return list(read_segment(path, batch_size))
