"""Aggregates over a time range (``audit-middleware stats``): counts by action and by day or hour, and
the brute-force view: failed logins grouped by client IP and by attempted identifier.

The middleware stores the client IP as ``metadata.ip`` and the identifier a failed login tried
(username or email) under ``metadata.identifier``; both keys are parameters. Every query is bounded
by the time range, served by the ``(created_at, id)`` index, so a day of a large table answers fast
without an index on ``metadata->>'ip'`` (see docs/cli.md, "Indexes added by init-db").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ..errors import ConfigurationError
from ..writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE
from .query import EventFilter, _target

__all__ = ["FAILED_LOGIN_ACTIONS", "AuditStats", "SourceCount", "collect_stats"]

FAILED_LOGIN_ACTIONS = ("login_failed",)
BUCKETS = ("day", "hour")


@dataclass(frozen=True, slots=True)
class SourceCount:
    """Failed logins from one source (an IP or an identifier) in the range."""

    key: str | None
    failures: int
    distinct: int  # distinct identifiers tried from this IP, or distinct IPs trying this identifier
    first: dt.datetime
    last: dt.datetime


@dataclass(frozen=True, slots=True)
class AuditStats:
    """Counts over ``[since, until)`` (either bound may be None: open)."""

    since: dt.datetime | None
    until: dt.datetime | None
    total: int
    by_action: list[tuple[str | None, int]] = field(default_factory=list)
    by_bucket: list[tuple[dt.datetime, int]] = field(default_factory=list)
    failed_by_ip: list[SourceCount] = field(default_factory=list)
    failed_by_identifier: list[SourceCount] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO 8601 UTC with ``Z``)."""

        def iso(value: dt.datetime | None) -> str | None:
            return None if value is None else value.isoformat() + "Z"

        def sources(items: list[SourceCount]) -> list[dict[str, Any]]:
            return [
                {"key": s.key, "failures": s.failures, "distinct": s.distinct, "first": iso(s.first)}
                | {"last": iso(s.last)}
                for s in items
            ]

        return {
            "since": iso(self.since),
            "until": iso(self.until),
            "total": self.total,
            "by_action": [{"action": a, "count": n} for a, n in self.by_action],
            "by_bucket": [{"bucket": iso(b), "count": n} for b, n in self.by_bucket],
            "failed_by_ip": sources(self.failed_by_ip),
            "failed_by_identifier": sources(self.failed_by_identifier),
        }


async def collect_stats(
    conn: asyncpg.Connection | asyncpg.Pool,
    filters: EventFilter | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    bucket: str = "day",
    failed_actions: Sequence[str] = FAILED_LOGIN_ACTIONS,
    ip_key: str = "ip",
    identifier_key: str = "identifier",
    top: int = 20,
) -> AuditStats:
    """Count the rows matching ``filters`` by action and by ``bucket``, and the top failed-login sources.

    Args:
        conn: an asyncpg connection or pool.
        filters: which rows (usually ``since``/``until``); all rows if None.
        schema / table: the audit table.
        bucket: ``"day"`` or ``"hour"`` (UTC).
        failed_actions: the actions that mean a failed login.
        ip_key / identifier_key: metadata keys of the client IP and the attempted identifier.
        top: how many IPs and identifiers to list, most failures first.
    """
    if bucket not in BUCKETS:
        raise ConfigurationError(f"bucket must be one of {', '.join(BUCKETS)}, got {bucket!r}")
    if isinstance(top, bool) or not isinstance(top, int) or top <= 0:
        raise ConfigurationError(f"top must be a positive integer, got {top!r}")
    filters = filters or EventFilter()
    target = _target(schema, table)
    args: list[Any] = []
    conditions = filters.where(args)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    by_action = await conn.fetch(
        f"SELECT action, count(*) FROM {target} {where} GROUP BY action ORDER BY 2 DESC, 1", *args
    )
    by_bucket = await conn.fetch(
        f"SELECT date_trunc('{bucket}', created_at), count(*) FROM {target} {where} GROUP BY 1 ORDER BY 1", *args
    )
    failed = [*conditions, f"action = ANY(${len(args) + 1}::varchar[])"]
    failed_args = [*args, list(failed_actions), ip_key, identifier_key, top]
    n = len(args)
    sources = []
    for key, other in ((f"${n + 2}", f"${n + 3}"), (f"${n + 3}", f"${n + 2}")):
        records = await conn.fetch(
            f"SELECT metadata->>{key}::text, count(*), count(DISTINCT metadata->>{other}::text), "
            f"min(created_at), max(created_at) FROM {target} WHERE {' AND '.join(failed)} "
            f"GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ${n + 4}",
            *failed_args,
        )
        sources.append([SourceCount(*r) for r in records])
    return AuditStats(
        since=filters.since,
        until=filters.until,
        total=sum(r[1] for r in by_action),
        by_action=[(r[0], r[1]) for r in by_action],
        by_bucket=[(r[0], r[1]) for r in by_bucket],
        failed_by_ip=sources[0],
        failed_by_identifier=sources[1],
    )
