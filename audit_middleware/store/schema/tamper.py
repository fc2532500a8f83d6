"""Tamper-evidence schema steps: the digests table and the append-only triggers.

Separate from the numbered migrations on purpose: both are opt-in (``init-db --digests``,
``init-db --append-only``), and both are idempotent (running them again changes nothing).
"""

from __future__ import annotations

from importlib import resources

import asyncpg

from ...errors import SchemaError
from ...writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE, check_identifier
from ..digests import digests_table
from . import quote_ident

__all__ = ["apply_append_only", "apply_digests", "writer_grants"]

LOCK = "SELECT pg_advisory_xact_lock(hashtext('audit_middleware.init_db'))"


def _sql(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


async def apply_digests(conn: asyncpg.Connection, *, schema: str = DEFAULT_SCHEMA, table: str = DEFAULT_TABLE) -> str:
    """Create the digests table for ``schema.table`` (idempotent); return its name."""
    check_identifier("schema", schema)
    name = digests_table(table)
    sql = _sql("digests.sql").format(
        schema=quote_ident(schema), digests=quote_ident(name), digests_pkey=quote_ident(f"{name}_pkey")
    )
    try:
        async with conn.transaction():
            await conn.execute(LOCK)
            await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        raise SchemaError(f"could not create {schema}.{name}: {exc}") from exc
    return name


async def apply_append_only(
    conn: asyncpg.Connection, *, schema: str = DEFAULT_SCHEMA, table: str = DEFAULT_TABLE
) -> list[str]:
    """Install the append-only triggers on the audit table and (if it exists) its digests table.

    Returns the tables protected. UPDATE, DELETE and TRUNCATE then fail unless the transaction ran
    ``SET LOCAL audit_middleware.prune = 'on'`` (the prune path).
    """
    check_identifier("schema", schema)
    check_identifier("table", table)
    targets = [(table, "audit")]
    digests = digests_table(table)
    protected = []
    try:
        async with conn.transaction():
            await conn.execute(LOCK)
            if await conn.fetchval("SELECT to_regclass($1)", f"{quote_ident(schema)}.{quote_ident(digests)}"):
                targets.append((digests, "digests"))
            for name, kind in targets:
                await conn.execute(
                    _sql("append_only.sql").format(
                        schema=quote_ident(schema),
                        table=quote_ident(name),
                        kind=kind,
                        trigger_update=quote_ident(f"{name}_append_only_update"),
                        trigger_delete=quote_ident(f"{name}_append_only"),
                    )
                )
                protected.append(f"{schema}.{name}")
    except asyncpg.PostgresError as exc:
        raise SchemaError(f"could not install the append-only triggers on {schema}.{table}: {exc}") from exc
    return protected


def writer_grants(*, schema: str = DEFAULT_SCHEMA, table: str = DEFAULT_TABLE, role: str = "audit_writer") -> str:
    """The SQL giving ``role`` what the writer needs: INSERT, and SELECT to digest what it wrote.

    Example:
        >>> print(writer_grants(role="app_audit").splitlines()[1])
        GRANT USAGE ON SCHEMA "public" TO "app_audit";
    """
    check_identifier("schema", schema)
    check_identifier("table", table)
    check_identifier("role", role)
    s, r = quote_ident(schema), quote_ident(role)
    audit = f"{s}.{quote_ident(table)}"
    digests = f"{s}.{quote_ident(digests_table(table))}"
    return "\n".join(
        (
            f"-- {role}: the application's audit writer may add rows and never change or remove them.",
            f"GRANT USAGE ON SCHEMA {s} TO {r};",
            f"GRANT INSERT ON {audit} TO {r};",
            # SELECT: the digest of a batch is computed by the server from the rows just written
            # (and the retry path's ON CONFLICT (id) ... RETURNING id); it cannot change anything.
            f"GRANT SELECT ON {audit} TO {r};",
            f"GRANT INSERT ON {digests} TO {r};",
            f"GRANT SELECT (seq, mac) ON {digests} TO {r};  -- reading the chain head",
            f"REVOKE UPDATE, DELETE, TRUNCATE ON {audit}, {digests} FROM {r};",
        )
    )
