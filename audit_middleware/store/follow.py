"""Following new rows as they land (``audit-middleware tail``), by polling in ``(created_at, id)`` order.

``created_at`` is the capture time, not the commit time: a batch the writer flushes (or retries)
a little later commits rows whose ``created_at`` is already behind rows other writers committed. A
plain keyset on ``(created_at, id)`` would skip them. So each poll looks back ``lag`` seconds behind
the newest row seen, reads only the keys ``(created_at, id)`` there, and fetches the full rows whose
ids it has not yielded yet; ids older than the window are forgotten. A row committed more than
``lag`` after its capture time is still missed: raise ``lag`` when writers retry for long.
Memory is bounded by the number of rows in one ``lag`` window.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import asyncpg

from ..errors import ConfigurationError
from ..writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE
from .query import SELECT_COLUMNS, AuditRow, EventFilter, _target, iter_events

__all__ = ["follow"]


async def follow(
    conn: asyncpg.Connection,
    filters: EventFilter | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    last: int = 0,
    poll_interval: float = 1.0,
    lag: float = 10.0,
    page_size: int = 1000,
) -> AsyncGenerator[AuditRow, None]:
    """Yield the last ``last`` matching rows, then every matching row that lands afterwards, forever.

    Args:
        conn: an asyncpg connection (one query at a time).
        filters: which rows (``since``/``until`` are ignored: following starts now).
        schema / table: the audit table.
        last: how many existing rows to yield first (oldest first), like ``tail -n``.
        poll_interval: seconds between polls when nothing new arrived.
        lag: seconds to look back for rows committed after newer ones (see the module docstring).
        page_size: most rows fetched per query.

    Stop it by breaking out of the loop or cancelling the task.
    """
    if poll_interval <= 0 or lag < 0 or last < 0:
        raise ConfigurationError("poll_interval must be positive; lag and last must not be negative")
    base = dataclasses.replace(filters or EventFilter(), since=None, until=None)
    window = dt.timedelta(seconds=lag)
    target = _target(schema, table)
    newest: dt.datetime | None = await conn.fetchval(f"SELECT max(created_at) FROM {target}")
    if newest is None:
        newest = dt.datetime.now(dt.UTC).replace(tzinfo=None) - window
    # Everything already in the window counts as seen: only rows landing from now on are new.
    seen: dict[uuid.UUID, dt.datetime] = dict(await _keys(conn, base, target, newest - window))
    if last:
        recent = [row async for row in iter_events(conn, base, schema=schema, table=table, descending=True, limit=last)]
        for row in reversed(recent):
            seen[row.id] = row.created_at  # a row landing between the two reads is shown once, here
            newest = max(newest, row.created_at)
            yield row
    while True:
        start = newest - window
        fresh = [(key, when) for key, when in await _keys(conn, base, target, start) if key not in seen]
        for offset in range(0, len(fresh), page_size):
            chunk = fresh[offset : offset + page_size]
            for row in await _rows(conn, target, [key for key, _ in chunk], start):
                yield row
            for key, when in chunk:
                seen[key] = when
                if when > newest:
                    newest = when
        cutoff = newest - window
        for key in [key for key, when in seen.items() if when < cutoff]:
            del seen[key]
        if not fresh:
            await asyncio.sleep(poll_interval)


async def _keys(
    conn: asyncpg.Connection, filters: EventFilter, target: str, start: dt.datetime
) -> list[tuple[uuid.UUID, dt.datetime]]:
    args: list[Any] = []
    conditions = filters.where(args)
    args.append(start)
    conditions.append(f"created_at >= ${len(args)}")
    records = await conn.fetch(
        f"SELECT id, created_at FROM {target} WHERE {' AND '.join(conditions)} ORDER BY created_at, id", *args
    )
    return [(r[0], r[1]) for r in records]


async def _rows(conn: asyncpg.Connection, target: str, ids: list[uuid.UUID], start: dt.datetime) -> list[AuditRow]:
    records = await conn.fetch(
        f"SELECT {SELECT_COLUMNS} FROM {target} WHERE id = ANY($1::uuid[]) AND created_at >= $2 "
        "ORDER BY created_at, id",
        ids,
        start,
    )
    return [AuditRow(*record) for record in records]
