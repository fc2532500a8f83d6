"""Tamper-evidence status for the integrity page: the digest chain's head, and the last verify result.

Reading the head needs only SELECT on the digests table. Verifying needs the HMAC key the writer
used (``create_app(digest_key=...)``; ``serve --digest-key-env``): without it the page shows the head
and how far the digests cover the table, and says that verification needs the key. The last
result of "verify now" is kept in memory (per process) and shown with its time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import cast

import asyncpg

from ..store.digests import digests_table
from ..store.verify import Checkpoint, verify

__all__ = ["Integrity", "IntegrityStatus", "VerifyResult"]

VERIFY_TIMEOUT = "1h"  # a verify of a large table takes minutes; the pages' own queries keep 30 s


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """One verify run as the page shows it."""

    at: dt.datetime
    ok: bool
    digests: int
    rows: int
    counts: dict[str, int]
    findings: list[str]
    checkpoint: str | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class IntegrityStatus:
    """The chain head and coverage (``enabled`` False: no digests table)."""

    enabled: bool
    head_seq: int | None = None
    head_written_at: dt.datetime | None = None
    head_covers_until: dt.datetime | None = None
    first_seq: int | None = None
    newest_row: dt.datetime | None = None
    last: VerifyResult | None = None
    notes: list[str] = field(default_factory=list)


class Integrity:
    """Reads the chain head; runs ``store.verify.verify`` on request when it has the key."""

    def __init__(self, *, digest_key: str | None, checkpoint: str | None) -> None:
        self._key, self._checkpoint = digest_key, checkpoint
        self._last: VerifyResult | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"Integrity(key={'set' if self._key else 'none'}, checkpoint={self._checkpoint!r})"

    @property
    def can_verify(self) -> bool:
        return self._key is not None

    async def status(self, pool: asyncpg.Pool, *, schema: str, table: str) -> IntegrityStatus:
        """The head of the chain and the newest row (two index lookups)."""
        digests = f"{_q(schema)}.{_q(digests_table(table))}"
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT to_regclass($1)", digests) is None:
                return IntegrityStatus(enabled=False, last=self._last)
            head = await conn.fetchrow(
                f"SELECT seq, written_at, max_created_at FROM {digests} ORDER BY seq DESC LIMIT 1"
            )
            first = await conn.fetchval(f"SELECT seq FROM {digests} ORDER BY seq LIMIT 1")
            newest = await conn.fetchval(
                f"SELECT created_at FROM {_q(schema)}.{_q(table)} ORDER BY created_at DESC, id DESC LIMIT 1"
            )
        notes = []
        if head is None:
            notes.append("the digests table is empty: no batch has been digested yet")
            return IntegrityStatus(enabled=True, newest_row=newest, last=self._last, notes=notes)
        written = head["written_at"].astimezone(dt.UTC).replace(tzinfo=None)
        if newest is not None and head["max_created_at"] is not None and newest > head["max_created_at"]:
            notes.append("rows newer than the newest digest exist (the writer digests each batch as it writes)")
        return IntegrityStatus(
            enabled=True,
            head_seq=head["seq"],
            head_written_at=written,
            head_covers_until=head["max_created_at"],
            first_seq=first,
            newest_row=newest,
            last=self._last,
            notes=notes,
        )

    async def run_verify(self, pool: asyncpg.Pool, *, schema: str, table: str) -> VerifyResult | None:
        """Verify the whole chain now (one run at a time); keep and return the result."""
        if self._key is None:
            return None
        async with self._lock:
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
            try:
                point, claimed = Checkpoint.load(self._checkpoint) if self._checkpoint else (None, None)
                async with pool.acquire() as conn:
                    # verify reads every row: lift the pool's 30 s statement_timeout for this session (the
                    # pool resets session settings when the connection goes back)
                    await conn.execute(f"SET statement_timeout = '{VERIFY_TIMEOUT}'")
                    report = await verify(
                        cast(asyncpg.Connection, conn),
                        key=self._key,
                        schema=schema,
                        table=table,
                        checkpoint=point,
                        checkpoint_hmac=claimed,
                    )
                self._last = VerifyResult(
                    at=now,
                    ok=report.ok,
                    digests=report.digests,
                    rows=report.rows,
                    counts=dict(report.counts),
                    findings=[str(f) for f in report.findings[:20]],
                    checkpoint=report.checkpoint,
                )
            except Exception as exc:  # shown on the page; the viewer keeps serving
                self._last = VerifyResult(
                    at=now,
                    ok=False,
                    digests=0,
                    rows=0,
                    counts={},
                    findings=[],
                    checkpoint=None,
                    error=f"{type(exc).__name__}: {exc}",
                )
            return self._last
