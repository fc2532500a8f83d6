"""Creating the audit table: numbered SQL files applied idempotently.

``apply()`` runs every ``NNN_*.sql`` file in this folder in order, with the schema, table and index
names filled in as quoted identifiers, then optionally adds the foreign key to ``users(id)``.
Every statement is ``IF NOT EXISTS``: running it again changes nothing and never touches rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import asyncpg

from ...errors import SchemaError
from ...writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE, check_identifier
from ..partitions import create_partitions

__all__ = ["SchemaReport", "apply", "quote_ident"]

logger = logging.getLogger("audit_middleware.schema")

MSG_NO_USERS = "table %s does not exist: user_id is left without a foreign key (run init-db again once it does)"


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (doubling any embedded quote)."""
    return '"' + name.replace('"', '""') + '"'


def index_names(table: str) -> dict[str, str]:
    """The spec's index names for the default table, and ``idx_<table>_*`` for any other table."""
    return {
        "pkey": f"{table}_pkey",
        "idx_user_id": f"idx_{table}_user_id",
        "idx_action": f"idx_{table}_action",
        "idx_created_at": f"idx_{table}_created_at_id",
        "idx_user_created_at": f"idx_{table}_user_id_created_at",
        "idx_user_ref_created_at": f"idx_{table}_user_ref_created_at",
        "idx_failed": f"idx_{table}_failed_created_at",
        "default_partition": f"{table[:55]}_default",
        "fk_user": f"{table}_user_id_fkey",
    }


@dataclass(frozen=True, slots=True)
class SchemaReport:
    """What ``apply`` did: the migrations it ran and what became of the foreign key."""

    migrations: tuple[str, ...]
    foreign_key: str  # "created", "exists", "skipped: <why>" or "disabled"
    partitions: tuple[str, ...] = ()  # partitions created by this run (partitioned=True)


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files(__name__)
    files = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql") and p.name[:3].isdigit())
    return [(name, folder.joinpath(name).read_text(encoding="utf-8")) for name in files]


async def apply(
    conn: asyncpg.Connection,
    *,
    schema: str = DEFAULT_SCHEMA,
    table: str = DEFAULT_TABLE,
    users_table: str | None = "users",
    users_schema: str | None = None,
    partitioned: bool = False,
    ahead: int = 3,
) -> SchemaReport:
    """Create the audit table, its indexes and (if ``users_table`` exists) the foreign key.

    Args:
        conn: an open asyncpg connection.
        schema: schema of the audit table (created if missing).
        table: name of the audit table.
        users_table: table whose ``id`` ``user_id`` references, or None for no foreign key.
            The key is ``ON DELETE SET NULL``: deleting a user never deletes or blocks its trail.
        users_schema: schema of ``users_table``; defaults to ``schema``.
        partitioned: create the table range-partitioned by month on ``created_at``, with primary key
            ``(id, created_at)``, a DEFAULT partition and monthly partitions up to ``ahead`` months ahead
            (see ``partitions.py``). Raises ``SchemaError`` if the table exists unpartitioned.
        ahead: months of partitions created beyond the current one (``partitioned=True`` only).

    Example:
        >>> conn = await asyncpg.connect(dsn)                      # doctest: +SKIP
        >>> await apply(conn, schema="audit", users_table=None)    # doctest: +SKIP
    """
    check_identifier("schema", schema)
    check_identifier("table", table)
    names = {key: quote_ident(value) for key, value in index_names(table).items()}
    names.update(schema=quote_ident(schema), table=quote_ident(table))
    ran = []
    created: list[str] = []
    try:
        async with conn.transaction():
            # One init-db at a time per database: concurrent CREATE ... IF NOT EXISTS can still collide.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('audit_middleware.init_db'))")
            if partitioned:
                await _partitioned_table(conn, schema, table, names)
            for name, sql in _migrations():
                await conn.execute(sql.format(**names))
                ran.append(name)
            fk = await _foreign_key(conn, schema, table, users_table, users_schema or schema)
            if partitioned:
                created = await create_partitions(conn, schema=schema, table=table, ahead=ahead)
    except asyncpg.PostgresError as exc:
        raise SchemaError(f"could not create {schema}.{table}: {exc}") from exc
    return SchemaReport(tuple(ran), fk, tuple(created))


async def _partitioned_table(conn: asyncpg.Connection, schema: str, table: str, names: dict[str, str]) -> None:
    kind = await conn.fetchval(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", f"{quote_ident(schema)}.{quote_ident(table)}"
    )
    if kind is not None and kind != "p":
        raise SchemaError(
            f"{schema}.{table} already exists and is not partitioned; init-db never rewrites a table: "
            "create a partitioned one under another name and copy the rows over"
        )
    sql = resources.files(__name__).joinpath("partitioned.sql").read_text(encoding="utf-8")
    await conn.execute(sql.format(**names))


async def _foreign_key(
    conn: asyncpg.Connection, schema: str, table: str, users_table: str | None, users_schema: str
) -> str:
    if users_table is None:
        return "disabled"
    check_identifier("users_table", users_table)
    check_identifier("users_schema", users_schema)
    qualified = f"{quote_ident(users_schema)}.{quote_ident(users_table)}"
    if await conn.fetchval("SELECT to_regclass($1)", qualified) is None:
        logger.warning(MSG_NO_USERS, f"{users_schema}.{users_table}")
        return f"skipped: {users_schema}.{users_table} does not exist (run init-db again once it does)"
    constraint = index_names(table)["fk_user"]
    exists = await conn.fetchval(
        "SELECT 1 FROM pg_constraint WHERE conname = $1 AND conrelid = to_regclass($2)",
        constraint,
        f"{quote_ident(schema)}.{quote_ident(table)}",
    )
    if exists:
        return "exists"
    await conn.execute(
        f"ALTER TABLE {quote_ident(schema)}.{quote_ident(table)} ADD CONSTRAINT {quote_ident(constraint)} "
        f"FOREIGN KEY (user_id) REFERENCES {qualified} (id) ON DELETE SET NULL"
    )
    return "created"
