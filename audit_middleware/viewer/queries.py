"""The viewer's reads: the filters of a URL, the list page, the chart's buckets and the investigations.

Every query is bounded the way ``store.query`` bounds it: a keyset page on ``(created_at, id)``
(newest first, ``LIMIT``, never ``OFFSET``, never ``COUNT(*)`` over the table), or an aggregate
over an explicit time range served by the ``(created_at, id)`` index. The filters of the page are
a :class:`ViewFilter`, an ``EventFilter`` with the conditions only the viewer needs (outcome, CIDR,
free text; a user by UUID or ``user_ref`` is ``EventFilter.user``), so ``store.query.fetch_page`` and
``store.stats.collect_stats`` read with them unchanged.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..errors import ConfigurationError
from ..store.query import SELECT_COLUMNS, AuditRow, Cursor, EventFilter, _target, to_utc_naive

__all__ = ["FAILED_SUFFIX", "Bucket", "ViewFilter", "chart_buckets", "fetch_event", "first_seen_ips", "parse_filter"]

FAILED_SUFFIX = "_failed"  # the middleware's failed_suffix: login_failed, password_reset_failed, ...
# The SQL test of a failed outcome (the chart splits on it; "failed only" filters on it).
FAILED_SQL = "action LIKE '%\\_failed'"
# A value is cast to inet only when it looks like an address: a malformed metadata.ip (a row written
# by hand) must not make the whole query fail. IPv4 octets are range-checked; IPv6 is the hex:colon shape.
_IPV4 = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"
_IPV6 = (
    r"^([0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}$"
    r"|^(([0-9a-fA-F]{1,4}:){0,6}[0-9a-fA-F]{1,4})?::(([0-9a-fA-F]{1,4}:){0,6}[0-9a-fA-F]{1,4})?$"
)
MAX_TEXT = 200  # longest free-text search accepted
# Bucket widths the chart picks from: the smallest giving at most MAX_BUCKETS bars over the range.
BUCKET_SECONDS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400, 30 * 86400)
MAX_BUCKETS = 60
DEFAULT_CHART_RANGE = dt.timedelta(days=1)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True, slots=True, kw_only=True)
class ViewFilter(EventFilter):
    """An ``EventFilter`` plus the viewer's own conditions.

    Attributes:
        failed: only rows whose action ends in ``_failed``.
        network: rows whose ``metadata.ip`` is inside this network (a CIDR).
        text: rows whose metadata text contains this, case-insensitively.
    """

    failed: bool = False
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    text: str | None = None

    def where(self, args: list[Any]) -> list[str]:
        """The ``EventFilter`` conditions and the viewer's, appending parameters to ``args``."""
        # EventFilter.where called by name: zero-argument super() fails in a slots dataclass subclass.
        conditions = EventFilter.where(self, args)

        def param(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.failed:
            conditions.append(FAILED_SQL)
        if self.network is not None:
            pattern = _IPV4 if self.network.version == 4 else _IPV6
            address = f"CASE WHEN metadata->>'ip' ~ {param(pattern)} THEN (metadata->>'ip')::inet END"
            conditions.append(f"({address}) <<= {param(str(self.network))}::cidr")
        if self.text is not None:
            conditions.append(f"metadata::text ILIKE {param('%' + _like_escape(self.text) + '%')}")
        return conditions

    def unbounded(self) -> ViewFilter:
        """The same conditions without the time range (for "this user's events" over all time)."""
        return _replace(self, since=None, until=None)


FIELDS = (
    "user_id",
    "action",
    "action_prefix",
    "since",
    "until",
    "ip",
    "metadata",
    "user",
    "failed",
    "network",
    "text",
)


def fields(f: ViewFilter) -> dict[str, Any]:
    """The filter's fields as keyword arguments (to build a changed copy)."""
    return {name: getattr(f, name) for name in FIELDS}


def _replace(f: ViewFilter, **changes: Any) -> ViewFilter:
    fields = {name: getattr(f, name) for name in FIELDS}
    fields.update(changes)
    return ViewFilter(**fields)


def _parse_time(name: str, text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise ConfigurationError(f"{name} must be a date and time like 2026-03-01T12:00, got {text!r}") from None
    return to_utc_naive(value)


def parse_filter(params: Mapping[str, str]) -> ViewFilter:
    """Read the filters of a URL's query parameters (the list, chart, export and live view share them).

    ``user`` is a UUID (``user_id``) or any other text (``metadata.user_ref``); ``action`` ending in
    ``*`` is a prefix; ``ip`` is an address or a CIDR; ``since``/``until`` are ISO times (UTC);
    ``failed=1`` keeps failed outcomes; ``q`` searches the metadata text.

    Raises:
        ConfigurationError: a value that cannot be read (the page shows the message).
    """
    values: dict[str, Any] = {}
    user = params.get("user", "").strip()
    if user:
        values["user"] = user  # EventFilter reads a UUID as user_id, anything else as metadata.user_ref
    action = params.get("action", "").strip()
    if action.endswith("*"):
        if action.rstrip("*"):
            values["action_prefix"] = action.rstrip("*")
    elif action:
        values["action"] = action
    ip = params.get("ip", "").strip()
    if ip:
        if "/" in ip:
            try:
                values["network"] = ipaddress.ip_network(ip, strict=False)
            except ValueError:
                raise ConfigurationError(f"ip must be an address or a CIDR like 10.0.0.0/8, got {ip!r}") from None
        else:
            values["ip"] = ip
    for name in ("since", "until"):
        text = params.get(name, "").strip()
        if text:
            values[name] = _parse_time(name, text)
    if params.get("failed") in ("1", "on", "true"):
        values["failed"] = True
    text = params.get("q", "").strip()
    if text:
        if len(text) > MAX_TEXT:
            raise ConfigurationError(f"q is limited to {MAX_TEXT} characters")
        values["text"] = text
    return ViewFilter(**values)


def filter_params(f: ViewFilter) -> dict[str, str]:
    """The query parameters that :func:`parse_filter` reads back into ``f`` (for links)."""
    params: dict[str, str] = {}
    if f.user is not None:  # EventFilter's: a UUID (user_id) or the user_ref text
        params["user"] = str(f.user)
    elif f.user_id is not None:
        params["user"] = str(f.user_id)
    if f.action is not None:
        params["action"] = f.action
    elif f.action_prefix is not None:
        params["action"] = f.action_prefix + "*"
    if f.ip is not None:
        params["ip"] = f.ip
    elif f.network is not None:
        params["ip"] = str(f.network)
    if f.since is not None:
        params["since"] = format_time(f.since)
    if f.until is not None:
        params["until"] = format_time(f.until)
    if f.failed:
        params["failed"] = "1"
    if f.text is not None:
        params["q"] = f.text
    return params


def format_time(value: dt.datetime) -> str:
    """A time as the filters write it (minutes, or seconds when they are not zero)."""
    return value.isoformat(timespec="seconds" if value.second or value.microsecond else "minutes")


async def fetch_event(pool: asyncpg.Pool, event_id: uuid.UUID, *, schema: str, table: str) -> AuditRow | None:
    """One row by id (the primary key), or None."""
    record = await pool.fetchrow(f"SELECT {SELECT_COLUMNS} FROM {_target(schema, table)} WHERE id = $1", event_id)
    return None if record is None else AuditRow(*record)


async def fetch_newer(
    pool: asyncpg.Pool, f: ViewFilter, before: Cursor, *, schema: str, table: str, limit: int
) -> tuple[list[AuditRow], bool]:
    """The ``limit`` rows just newer than ``before``, newest first, and whether still newer rows exist
    (the "newer" link of the list: one row more is read to know)."""
    args: list[Any] = []
    conditions = f.where(args)
    args.extend((before.created_at, before.id))
    conditions.append(f"(created_at, id) > (${len(args) - 1}, ${len(args)})")
    args.append(limit + 1)
    sql = (
        f"SELECT {SELECT_COLUMNS} FROM {_target(schema, table)} WHERE {' AND '.join(conditions)} "
        f"ORDER BY created_at, id LIMIT ${len(args)}"
    )
    rows = [AuditRow(*r) for r in await pool.fetch(sql, *args)]
    more = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    return rows, more


@dataclass(frozen=True, slots=True)
class Bucket:
    """One bar of the chart: ``[start, end)`` and its counts."""

    start: dt.datetime
    end: dt.datetime
    failed: int
    succeeded: int

    @property
    def total(self) -> int:
        return self.failed + self.succeeded


def chart_range(f: ViewFilter, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The range the chart covers: the filter's, else the day before ``until`` (or now)."""
    until = f.until or now
    since = f.since or until - DEFAULT_CHART_RANGE
    return since, until


def bucket_width(since: dt.datetime, until: dt.datetime) -> int:
    """Seconds per bar: the smallest width giving at most ``MAX_BUCKETS`` bars."""
    span = (until - since).total_seconds()
    for width in BUCKET_SECONDS:
        if span / width <= MAX_BUCKETS:
            return width
    return int(span // MAX_BUCKETS) + 1


async def chart_buckets(
    pool: asyncpg.Pool, f: ViewFilter, *, schema: str, table: str, now: dt.datetime
) -> tuple[list[Bucket], int]:
    """Counts of failed and other rows per bucket over the chart's range; returns them and the width."""
    since, until = chart_range(f, now)
    width = bucket_width(since, until)
    bounded = _replace(f, since=since, until=until)
    target = _target(schema, table)

    async def count(view: ViewFilter) -> dict[dt.datetime, int]:
        args: list[Any] = []
        conditions = view.where(args)
        args.extend((dt.timedelta(seconds=width), since))
        # date_bin (PostgreSQL 14+): buckets counted from the range's start, any width; plain timestamp
        # arithmetic, several times faster than grouping on extract(epoch ...) (numeric).
        sql = (
            f"SELECT date_bin(${len(args) - 1}, created_at, ${len(args)}) AS b, count(*) AS n "
            f"FROM {target} WHERE {' AND '.join(conditions)} GROUP BY 1"
        )
        return {r["b"]: r["n"] for r in await pool.fetch(sql, *args)}

    # Two counts rather than one with FILTER: each is an index-only scan (totals on (created_at, id),
    # failures on the partial index of failed rows) when no other filter needs the row itself.
    totals = await count(bounded)
    failures = totals if f.failed else await count(_replace(bounded, failed=True))
    buckets = []
    step = dt.timedelta(seconds=width)
    start = since
    while start < until:
        total, failed = totals.get(start, 0), failures.get(start, 0)
        buckets.append(Bucket(start, min(start + step, until), failed, total - failed))
        start += step
    return buckets, width


@dataclass(frozen=True, slots=True)
class SeenIp:
    """An address a user's rows came from: when first and last, and how many rows."""

    ip: str | None
    first: dt.datetime
    last: dt.datetime
    count: int


async def first_seen_ips(
    pool: asyncpg.Pool, f: ViewFilter, *, schema: str, table: str, limit: int = 50
) -> list[SeenIp]:
    """The addresses of the filter's rows (one user's, usually), in the order they were first seen."""
    args: list[Any] = []
    conditions = f.where(args)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    args.append(limit)
    records = await pool.fetch(
        f"SELECT metadata->>'ip', min(created_at), max(created_at), count(*) FROM {_target(schema, table)} "
        f"{where} GROUP BY 1 ORDER BY 2 DESC LIMIT ${len(args)}",
        *args,
    )
    return [SeenIp(*r) for r in records]
