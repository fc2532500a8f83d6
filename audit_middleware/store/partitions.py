"""Monthly partitions of the audit table (``init-db --partitioned``, ``audit-middleware partitions``).

A partitioned audit table is range-partitioned on ``created_at``, one partition per calendar month
(UTC) named ``<table>_pYYYYMM``, plus ``<table>_default`` for anything outside them, so an insert
never fails for lack of a partition. :func:`create_partitions` creates the months from ``start``
(default: the current month) up to ``ahead`` months after the current one; run it from a monthly
job (or let ``prune`` do it) so rows keep landing in their month rather than in the default.

If the default partition already holds rows of a month being created (the job did not run in
time), they are moved into the new partition in the same transaction: PostgreSQL would otherwise
refuse to create it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import asyncpg

from ..errors import ConfigurationError, SchemaError
from ..writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE, check_identifier

__all__ = ["Partition", "create_partitions", "is_partitioned", "list_partitions", "partition_name"]

PRUNE_SETTING = "audit_middleware.prune"  # lets the append-only triggers accept a sanctioned delete
_BOUND = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def month_start(value: dt.datetime | dt.date) -> dt.datetime:
    """The first instant of ``value``'s month (naive)."""
    return dt.datetime(value.year, value.month, 1)


def add_months(month: dt.datetime, count: int) -> dt.datetime:
    """``month`` (a month start) moved by ``count`` months."""
    index = month.year * 12 + month.month - 1 + count
    return dt.datetime(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: dt.datetime) -> str:
    """``<table>_pYYYYMM`` (the table part shortened so the name fits PostgreSQL's 63 bytes)."""
    return f"{table[:55]}_p{month:%Y%m}"


def default_partition_name(table: str) -> str:
    return f"{table[:55]}_default"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its name and ``[start, end)`` range; both None for the default partition."""

    name: str
    start: dt.datetime | None
    end: dt.datetime | None


async def is_partitioned(conn: asyncpg.Connection, schema: str = DEFAULT_SCHEMA, table: str = DEFAULT_TABLE) -> bool:
    """Whether ``schema.table`` is a partitioned table."""
    target = f"{_q(schema)}.{_q(table)}"
    kind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", target)
    return bool(kind == "p")


async def list_partitions(
    conn: asyncpg.Connection, schema: str = DEFAULT_SCHEMA, table: str = DEFAULT_TABLE
) -> list[Partition]:
    """The partitions of ``schema.table``, by start (the default partition last)."""
    records = await conn.fetch(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass($1)",
        f"{_q(schema)}.{_q(table)}",
    )
    found = []
    for name, bound in records:
        match = _BOUND.search(bound or "")
        if match:
            found.append(Partition(name, *(dt.datetime.fromisoformat(text) for text in match.groups())))
        else:
            found.append(Partition(name, None, None))
    return sorted(found, key=lambda p: (p.start is None, p.start or dt.datetime.min))


async def create_partitions(
    conn: asyncpg.Connection,
    *,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    ahead: int = 3,
    start: dt.datetime | dt.date | None = None,
    now: dt.datetime | None = None,
) -> list[str]:
    """Create the monthly partitions from ``start``'s month to ``ahead`` months after ``now``'s; return new names.

    Existing partitions are kept. Raises ``SchemaError`` if the table is not partitioned.

    Example:
        >>> await create_partitions(conn, ahead=3)   # doctest: +SKIP
        ['user_audit_logs_p202612', 'user_audit_logs_p202701', 'user_audit_logs_p202702']
    """
    check_identifier("schema", schema)
    check_identifier("table", table)
    if isinstance(ahead, bool) or not isinstance(ahead, int) or not 0 <= ahead <= 120:
        raise ConfigurationError(f"ahead must be an integer from 0 to 120, got {ahead!r}")
    if not await is_partitioned(conn, schema, table):
        raise SchemaError(f"{schema}.{table} is not a partitioned table (create it with init-db --partitioned)")
    current = month_start(now or dt.datetime.now(dt.UTC))
    month = month_start(start) if start is not None else current
    last = add_months(current, ahead)
    existing = {(p.start, p.end) for p in await list_partitions(conn, schema, table)}
    created = []
    while month <= last:
        end = add_months(month, 1)
        if (month, end) not in existing:
            await _create_one(conn, schema, table, month, end)
            created.append(partition_name(table, month))
        month = end
    return created


async def _create_one(conn: asyncpg.Connection, schema: str, table: str, start: dt.datetime, end: dt.datetime) -> None:
    parent = f"{_q(schema)}.{_q(table)}"
    default = f"{_q(schema)}.{_q(default_partition_name(table))}"
    name = f"{_q(schema)}.{_q(partition_name(table, start))}"
    bounds = f"FROM ('{start:%Y-%m-%d}') TO ('{end:%Y-%m-%d}')"  # generated dates, safe to inline in DDL
    async with conn.transaction():
        has_default = await conn.fetchval("SELECT to_regclass($1)", default) is not None
        stray = has_default and await conn.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {default} WHERE created_at >= $1 AND created_at < $2)", start, end
        )
        if stray:
            await conn.execute(f"SELECT set_config('{PRUNE_SETTING}', 'on', true)")
            await conn.execute(f"CREATE TEMP TABLE _audit_moving (LIKE {parent}) ON COMMIT DROP")
            await conn.execute(
                f"WITH moved AS (DELETE FROM {default} WHERE created_at >= $1 AND created_at < $2 RETURNING *) "
                "INSERT INTO _audit_moving SELECT * FROM moved",
                start,
                end,
            )
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {parent} FOR VALUES {bounds}")
        if stray:
            await conn.execute(f"INSERT INTO {parent} SELECT * FROM _audit_moving")
            await conn.execute("DROP TABLE _audit_moving")
