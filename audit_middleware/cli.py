"""The ``audit-middleware`` command. Each command is a thin wrapper over a library call.

The operator commands (tail, query, export, stats, prune, partitions) live in ``cli_ops.py`` and
add ``EXIT_INTERRUPTED`` (130: Ctrl-C during query/export/prune; ``tail`` exits 0 on Ctrl-C).

Exit codes: ``EXIT_OK`` (0), ``EXIT_FAILURE`` (1: the operation failed, e.g. the database refused),
``EXIT_USAGE`` (2: bad arguments, as argparse), ``EXIT_UNREACHABLE`` (3: could not connect).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import asyncpg

from .config import DEFAULT_SCHEMA, DEFAULT_TABLE, mask_dsn
from .errors import AuditError

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", default=None, help="PostgreSQL connection string (default: $AUDIT_DSN)")
    parser.add_argument("--schema", default=DEFAULT_SCHEMA, help="schema of the audit table (default: %(default)s)")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="audit table name (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audit-middleware", description="Audit trail tools for PostgreSQL.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init = commands.add_parser(
        "init-db",
        help="create the audit table and its indexes (idempotent)",
        description="Create the audit table, its indexes and the foreign key to users(id). "
        "Safe to run again: never drops or rewrites data.",
    )
    _add_dsn(init)
    init.add_argument(
        "--partitioned",
        action="store_true",
        help="range-partition the table by month on created_at (primary key (id, created_at)), "
        "with a DEFAULT partition and partitions created ahead",
    )
    init.add_argument("--ahead", type=int, default=3, help="with --partitioned: months created ahead (default: 3)")
    from .cli_ops import add_commands

    add_commands(commands, _add_dsn)
    fk = init.add_mutually_exclusive_group()
    fk.add_argument(
        "--users-table",
        default="users",
        help="[schema.]table whose id user_id references, ON DELETE SET NULL (default: %(default)s; "
        "skipped with a message if it does not exist)",
    )
    fk.add_argument("--no-users-fk", action="store_true", help="do not add the foreign key")
    return parser


def _dsn(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    dsn: str | None = args.dsn or os.environ.get("AUDIT_DSN")
    if not dsn:
        parser.error("--dsn or AUDIT_DSN is required")
    return dsn


async def _init_db(args: argparse.Namespace, dsn: str) -> int:
    from .schema import apply

    users_schema, _, users_table = args.users_table.rpartition(".")
    try:
        conn = await asyncpg.connect(dsn)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"error: cannot connect to {mask_dsn(dsn)}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        report = await apply(
            conn,
            schema=args.schema,
            table=args.table,
            users_table=None if args.no_users_fk else users_table,
            users_schema=users_schema or None,
            partitioned=args.partitioned,
            ahead=args.ahead,
        )
    finally:
        await conn.close()
    print(f"{args.schema}.{args.table}: ready (migrations: {', '.join(report.migrations)})")
    if args.partitioned:
        print(f"partitioned by month; partitions created: {', '.join(report.partitions) or 'none needed'}")
    print(f"foreign key to users: {report.foreign_key}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    dsn = _dsn(args, parser)
    try:
        if getattr(args, "run", None) is not None:  # operator commands (cli_ops.py)
            return int(args.run(args, dsn))
        if args.command == "init-db":
            return asyncio.run(_init_db(args, dsn))
    except AuditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    parser.error(f"unknown command {args.command}")  # pragma: no cover - argparse rejects it first
    return EXIT_USAGE  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
