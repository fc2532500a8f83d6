"""Type aliases and Protocols shared across the package."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol, TypeAlias

JSONValue: TypeAlias = Any
"""Anything the writer can turn into JSON; non-native values are converted (see records.py)."""

Row: TypeAlias = tuple[Any, Any, str, str, dt.datetime]
"""One row in COLUMNS order: id, user_id (a UUID or None), action, metadata (JSON text), created_at (naive UTC)."""


class RejectedRow(Protocol):
    """What a sink reports about a row the database refused."""

    @property
    def row(self) -> Row: ...

    @property
    def reason(self) -> str: ...


class Sink(Protocol):
    """Where batches of rows go. ``PostgresSink`` is the real one; ``testing.MemorySink`` keeps them in memory.

    ``write`` must be atomic per call as far as the caller can tell: either it raises (nothing is
    known to have landed, and the caller retries the same rows with ``retry=True``) or it returns the
    rows it could not store because the database rejected them (everything else landed).
    With ``retry=True`` the sink must not create duplicates of rows an earlier attempt stored.
    """

    async def open(self) -> None: ...

    async def write(self, rows: Sequence[Row], *, retry: bool) -> Sequence[RejectedRow]: ...

    async def aclose(self) -> None: ...
