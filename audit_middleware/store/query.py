"""Reading the audit trail: filters, keyset pagination on ``(created_at, id)``, and following new rows.

Every read is a short query for one page, ``ORDER BY created_at, id`` (or both descending) with
``(created_at, id) > (last page's last key)``: memory stays constant however many rows are read, no
transaction stays open between pages (so a long export does not hold back VACUUM), and each page is
served by the ``(created_at, id)`` BTREE index that ``init-db`` creates (``(user_id, created_at, id)``
when filtering by user). Rows with equal ``created_at`` are ordered by ``id`` and never skipped or
repeated across pages.

Times are naive UTC like the column; an aware ``datetime`` is converted to UTC first. ``since`` is
inclusive, ``until`` exclusive.

Users: ``user_id`` is the uuid column; an app whose user ids are not UUIDs (Django's and most Flask
apps' integers) has them stored as text in ``metadata.user_ref``. ``EventFilter(user=...)`` takes
either and looks where the writer put it: ``user=42`` and ``user="42"`` find ``user_ref`` ``"42"``,
a UUID finds ``user_id``.

Example:
    >>> f = EventFilter(user_id=uid, since=dt.datetime(2026, 3, 1), until=dt.datetime(2026, 4, 1))  # doctest: +SKIP
    >>> async for row in iter_events(conn, f):                                              # doctest: +SKIP
    ...     print(row.created_at, row.action, row.metadata)
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..errors import ConfigurationError
from ..writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE, check_identifier
from ..writer.records import MAX_USER_REF, clean_str
from .schema import quote_ident

__all__ = ["AuditRow", "Cursor", "EventFilter", "Page", "fetch_page", "iter_events", "to_utc_naive"]

MIN_KEY = (dt.datetime.min, uuid.UUID(int=0))
SELECT_COLUMNS = "id, user_id, action, metadata::text AS metadata, created_at"


def to_utc_naive(value: dt.datetime) -> dt.datetime:
    """Return ``value`` as naive UTC (the column's convention); naive values are taken as UTC already."""
    if value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in ``(created_at, id)`` order; pass it back as ``after`` to read the next page.

    ``str(cursor)`` is a token (``<iso time>|<uuid>``) that :meth:`parse` reads back, for CLIs and URLs.
    """

    created_at: dt.datetime
    id: uuid.UUID

    def __str__(self) -> str:
        return f"{self.created_at.isoformat()}|{self.id}"

    @classmethod
    def parse(cls, token: str) -> Cursor:
        """Read a token made by ``str(cursor)``; raises ``ConfigurationError`` naming ``cursor`` if malformed."""
        time_text, _, id_text = token.partition("|")
        try:
            return cls(to_utc_naive(dt.datetime.fromisoformat(time_text)), uuid.UUID(id_text))
        except (ValueError, OverflowError):  # OverflowError: a time whose UTC falls outside years 1..9999
            raise ConfigurationError(f"cursor must look like '<iso time>|<uuid>', got {token!r}") from None


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One stored row. ``metadata_json`` is the jsonb value as text (None for SQL NULL)."""

    id: uuid.UUID
    user_id: uuid.UUID | None
    action: str | None
    metadata_json: str | None
    created_at: dt.datetime

    @property
    def metadata(self) -> Any:
        """The metadata decoded from JSON (None for SQL NULL)."""
        return None if self.metadata_json is None else json.loads(self.metadata_json)

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.created_at, self.id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: ids as strings, ``created_at`` as ISO 8601 UTC with ``Z``."""
        return {
            "id": str(self.id),
            "user_id": None if self.user_id is None else str(self.user_id),
            "action": self.action,
            "metadata": self.metadata,
            "created_at": self.created_at.isoformat() + "Z",
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFilter:
    """Which rows to read. Every given condition must hold (AND).

    Attributes:
        user_id: rows of this ``user_id`` (UUID or UUID string).
        user: rows of this user however the writer stored it: a UUID (or UUID string) matches
            ``user_id``, anything else (``42``, ``"alice"``) matches ``metadata.user_ref``, as text.
        action: rows with exactly this action.
        action_prefix: rows whose action starts with this (``"password_"``); uses the action index.
        since / until: ``since <= created_at < until``.
        ip: rows whose ``metadata->>'ip'`` equals this.
        metadata: rows whose metadata contains this JSON object (``metadata @> ...``).
    """

    user_id: uuid.UUID | str | None = None
    user: uuid.UUID | str | int | None = None
    action: str | None = None
    action_prefix: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    ip: str | None = None
    metadata: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.user_id, str):
            try:
                object.__setattr__(self, "user_id", uuid.UUID(self.user_id))
            except ValueError:
                raise ConfigurationError(f"user_id must be a UUID, got {self.user_id!r}") from None
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, dt.datetime):
                    raise ConfigurationError(f"{name} must be a datetime, got {type(value).__name__}")
                object.__setattr__(self, name, to_utc_naive(value))
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ConfigurationError("since must be earlier than until")
        if self.user is not None:
            object.__setattr__(self, "user", _user_key(self.user))
        for name in ("action", "action_prefix", "ip"):
            _check_text(name, getattr(self, name))
        if self.metadata is not None:
            if not isinstance(self.metadata, Mapping):
                raise ConfigurationError(f"metadata must be a mapping, got {type(self.metadata).__name__}")
            _metadata_json(self.metadata)

    @property
    def user_ref(self) -> str | None:
        """The ``metadata.user_ref`` text ``user`` matches (None when ``user`` is a UUID or not set)."""
        return self.user if isinstance(self.user, str) else None

    def where(self, args: list[Any]) -> list[str]:
        """SQL conditions for this filter, appending their parameters to ``args`` ($n numbering)."""
        conditions: list[str] = []

        def param(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.user_id is not None:
            conditions.append(f"user_id = {param(self.user_id)}")
        if isinstance(self.user, uuid.UUID):
            conditions.append(f"user_id = {param(self.user)}")
        elif self.user is not None:
            # ->> gives the text of a string or a number alike (the writer stores text; older rows may not).
            # The ? test lets the planner use the partial index of 003_user_ref_index.sql.
            conditions.append(f"metadata ? 'user_ref' AND metadata->>'user_ref' = {param(self.user)}")
        if self.action is not None:
            conditions.append(f"action = {param(self.action)}")
        if self.action_prefix is not None:
            # LIKE with the wildcards escaped: correct under any collation; it uses the action index when
            # the database collation is C (otherwise the time range or another filter narrows the scan).
            escaped = self.action_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conditions.append(f"action LIKE {param(escaped + '%')}")
        if self.since is not None:
            conditions.append(f"created_at >= {param(self.since)}")
        if self.until is not None:
            conditions.append(f"created_at < {param(self.until)}")
        if self.ip is not None:
            conditions.append(f"metadata->>'ip' = {param(self.ip)}")
        if self.metadata is not None:
            conditions.append(f"metadata @> {param(_metadata_json(self.metadata))}::jsonb")
        return conditions


def _user_key(value: object) -> uuid.UUID | str:
    """A UUID for the ``user_id`` column, else the text the writer stores as ``metadata.user_ref``."""
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigurationError(f"user must be a UUID, a string or an integer, got {type(value).__name__}")
    text = str(value)
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    return clean_str(text[:MAX_USER_REF])  # as the writer cleaned and shortened it (NUL, lone surrogates)


def _check_text(name: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigurationError(f"{name} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise ConfigurationError(f"{name} must not contain NUL (PostgreSQL text cannot hold it): {value!r}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(f"{name} is not valid Unicode text: {value!r}") from None


def _metadata_json(metadata: Mapping[str, Any]) -> str:
    """The JSON of a metadata filter, or ``ConfigurationError`` for what ``jsonb`` cannot hold."""
    try:
        text = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as exc:  # a set or object, NaN, a lone surrogate
        raise ConfigurationError(f"metadata filter is not JSON that PostgreSQL can store: {exc}") from None
    if _has_nul(metadata):
        raise ConfigurationError("metadata filter must not contain NUL (PostgreSQL jsonb cannot hold it)")
    return text


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


@dataclass(frozen=True, slots=True)
class Page:
    """One page of rows and the cursor of the next page (None when this was the last)."""

    rows: list[AuditRow]
    next: Cursor | None


def _target(schema: str, table: str) -> str:
    check_identifier("schema", schema)
    check_identifier("table", table)
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def page_sql(
    filters: EventFilter, *, schema: str, table: str, descending: bool, after: Cursor | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and parameters of one keyset page (exposed for ``EXPLAIN`` in tests and benchmarks)."""
    args: list[Any] = []
    conditions = filters.where(args)
    if after is not None:
        args.extend((after.created_at, after.id))
        op = "<" if descending else ">"
        conditions.append(f"(created_at, id) {op} (${len(args) - 1}, ${len(args)})")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    order = "DESC" if descending else "ASC"
    args.append(limit)
    sql = (
        f"SELECT {SELECT_COLUMNS} FROM {_target(schema, table)} {where} "
        f"ORDER BY created_at {order}, id {order} LIMIT ${len(args)}"
    )
    return sql, args


async def fetch_page(
    conn: asyncpg.Connection | asyncpg.Pool,
    filters: EventFilter | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    descending: bool = False,
    after: Cursor | None = None,
    page_size: int = 1000,
) -> Page:
    """Read one page of at most ``page_size`` rows after ``after`` (for APIs that page on request).

    Example:
        >>> page = await fetch_page(pool, EventFilter(action="login"), page_size=50)   # doctest: +SKIP
        >>> more = await fetch_page(pool, EventFilter(action="login"), after=page.next) # doctest: +SKIP
    """
    if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size <= 0:
        raise ConfigurationError(f"page_size must be a positive integer, got {page_size!r}")
    sql, args = page_sql(
        filters or EventFilter(), schema=schema, table=table, descending=descending, after=after, limit=page_size
    )
    records = await conn.fetch(sql, *args)
    rows = [AuditRow(*record) for record in records]
    return Page(rows, rows[-1].cursor if len(rows) == page_size else None)


async def iter_events(
    conn: asyncpg.Connection | asyncpg.Pool,
    filters: EventFilter | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    descending: bool = False,
    after: Cursor | None = None,
    page_size: int = 1000,
    limit: int | None = None,
) -> AsyncIterator[AuditRow]:
    """Yield every matching row in ``(created_at, id)`` order, one keyset page at a time.

    Args:
        conn: an asyncpg connection or pool.
        filters: which rows; all rows if None.
        schema: the audit table's schema.
        table: the audit table.
        descending: newest first.
        after: start after this position (exclusive), e.g. a cursor saved from an earlier read.
        page_size: rows fetched per query; memory is bounded by one page.
        limit: stop after this many rows.
    """
    remaining = limit
    while remaining is None or remaining > 0:
        size = page_size if remaining is None else min(page_size, remaining)
        page = await fetch_page(
            conn, filters, schema=schema, table=table, descending=descending, after=after, page_size=size
        )
        for row in page.rows:
            yield row
        if remaining is not None:
            remaining -= len(page.rows)
        if page.next is None:
            return
        after = page.next


async def count_events(
    conn: asyncpg.Connection | asyncpg.Pool,
    filters: EventFilter | None = None,
    *,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
) -> int:
    """Count matching rows (used for progress bars; on huge ranges this reads the whole range of the index)."""
    args: list[Any] = []
    conditions = (filters or EventFilter()).where(args)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    value = await conn.fetchval(f"SELECT count(*) FROM {_target(schema, table)} {where}", *args)
    return int(value)
