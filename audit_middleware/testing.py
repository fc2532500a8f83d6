"""Helpers for users' own tests.

``MemorySink`` keeps written rows in memory so a test can assert what would have been stored,
with the same row conversion (``records.to_row``) the PostgreSQL sink receives.

Example:
    >>> sink = MemorySink()
    >>> writer = AuditWriter(sink=sink)          # doctest: +SKIP
    >>> ...                                       # exercise the app
    >>> await writer.flush()                      # doctest: +SKIP
    >>> [e.action for e in sink.events]           # doctest: +SKIP
    ['login']
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._types import Row
from .writer.sink import Rejected

__all__ = ["MemorySink", "StoredEvent"]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A row as it would be stored, with metadata parsed back from JSON."""

    id: Any
    user_id: Any
    action: str
    metadata: dict[str, Any]
    created_at: dt.datetime


class MemorySink:
    """A sink that keeps rows in a list. ``fail_next`` makes the next N writes raise ``ConnectionError``."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.fail_next = 0
        self.opened = False
        self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def write(self, rows: Sequence[Row], *, retry: bool) -> list[Rejected]:
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("MemorySink.fail_next")
        known = {row[0] for row in self.rows} if retry else set()
        self.rows.extend(row for row in rows if row[0] not in known)
        return []

    async def aclose(self) -> None:
        self.closed = True

    @property
    def events(self) -> list[StoredEvent]:
        """The stored rows, metadata decoded."""
        return [StoredEvent(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in self.rows]

    def actions(self) -> list[str]:
        """The stored actions, in order."""
        return [row[2] for row in self.rows]

    def assert_no_secret(self, *secrets: str) -> None:
        """Raise ``AssertionError`` if any of ``secrets`` occurs anywhere in a stored row."""
        for row in self.rows:
            text = " ".join(str(value) for value in row)
            for secret in secrets:
                if secret and secret in text:
                    raise AssertionError(f"secret found in audit row {row[0]} (action {row[2]!r})")
