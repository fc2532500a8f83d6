"""The ``audit-middleware`` command. Each command is a thin wrapper over a library call.

The operator commands (tail, query, export, stats, prune, partitions) live in ``ops.py`` and
add ``EXIT_INTERRUPTED`` (130: Ctrl-C during query/export/prune; ``tail`` exits 0 on Ctrl-C).

Exit codes: ``EXIT_OK`` (0), ``EXIT_FAILURE`` (1: the operation failed, e.g. the database refused),
``EXIT_USAGE`` (2: bad arguments, as argparse), ``EXIT_UNREACHABLE`` (3: could not connect).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg

from ..errors import AuditError, ConfigurationError
from ..writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE, check_digest_key, mask_dsn

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_TAMPERED", "EXIT_UNREACHABLE", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_TAMPERED = 4  # verify found signs of tampering


def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", default=None, help="PostgreSQL connection string (default: $AUDIT_DSN)")
    parser.add_argument("--schema", default=DEFAULT_SCHEMA, help="schema of the audit table (default: %(default)s)")
    parser.add_argument("--table", default=DEFAULT_TABLE, help="audit table name (default: %(default)s)")


def _version() -> str:
    try:
        return importlib.metadata.version("audit-trail-middleware")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree, not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="audit-middleware", description="Audit trail tools for PostgreSQL.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
    from .ops import add_commands

    add_commands(commands, _add_dsn)
    from .routes import add_command as add_routes
    from .spool import add_commands as add_spool_commands

    add_routes(commands)
    add_spool_commands(commands)
    from .serve import add_command as add_serve  # the web viewer (its imports wait for the command)

    add_serve(commands, _add_dsn)
    fk = init.add_mutually_exclusive_group()
    fk.add_argument(
        "--users-table",
        default="users",
        help="[schema.]table whose id user_id references, ON DELETE SET NULL (default: %(default)s; "
        "skipped with a message if it does not exist)",
    )
    fk.add_argument("--no-users-fk", action="store_true", help="do not add the foreign key")
    init.add_argument("--digests", action="store_true", help="also create the tamper-evidence digests table")
    init.add_argument(
        "--append-only",
        action="store_true",
        help="install triggers rejecting UPDATE/DELETE/TRUNCATE (except prune) and print the writer role's GRANTs",
    )
    init.add_argument("--writer-role", default="audit_writer", help="role named in the printed GRANTs")
    verify = commands.add_parser(
        "verify",
        help="check the tamper-evidence digest chain",
        description="Recompute every digest and row hash, check HMACs and links, find rows no digest lists. "
        f"Exit {EXIT_OK}: clean; {EXIT_TAMPERED}: tampering found; {EXIT_FAILURE}: error; "
        f"{EXIT_UNREACHABLE}: cannot connect.",
    )
    _add_dsn(verify)
    verify.add_argument("--key-env", default="AUDIT_DIGEST_KEY", help="variable holding the HMAC key (%(default)s)")
    verify.add_argument("--checkpoint", metavar="FILE", help="compare the chain head with this exported checkpoint")
    verify.add_argument("--write-checkpoint", metavar="FILE", help="after a clean run, export the chain head here")
    for sub in commands.choices.values():  # every command, also those registered above by other modules
        sub.set_defaults(subparser=sub)
    return parser


def _dsn(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    dsn: str | None = args.dsn or os.environ.get("AUDIT_DSN")
    if not dsn:
        # The subcommand's own usage: its options are what the user needs to see.
        getattr(args, "subparser", parser).error("--dsn or AUDIT_DSN is required")
    return str(dsn)


def missing_table_hint(exc: asyncpg.PostgresError, args: argparse.Namespace) -> str:
    """The error line for ``exc``, with the fix when it is a missing table (run ``init-db``)."""
    if isinstance(exc, asyncpg.UndefinedTableError):
        return (
            f"error: {exc}: create the audit table first with "
            f"`audit-middleware init-db --dsn ... --schema {args.schema} --table {args.table}`"
        )
    return f"error: {type(exc).__name__}: {exc}"


async def connect_or_report(dsn: str, **options: Any) -> asyncpg.Connection | None:
    """Connect; on failure print why (the DSN masked) and return None: the command exits EXIT_UNREACHABLE."""
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn, **options)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"error: cannot connect to {mask_dsn(dsn)}: {exc}", file=sys.stderr)
        return None
    return conn


class _DropMessage(logging.Filter):
    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != self.message


async def _init_db(args: argparse.Namespace, dsn: str) -> int:
    from ..store.schema import MSG_NO_USERS, apply
    from ..store.schema import logger as schema_logger

    users_schema, _, users_table = args.users_table.rpartition(".")
    conn = await connect_or_report(dsn)
    if conn is None:
        return EXIT_UNREACHABLE
    # The report's line below says it, with the fix: the library's warning for the same thing would be a second notice.
    quiet = _DropMessage(MSG_NO_USERS)
    schema_logger.addFilter(quiet)
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
        schema_logger.removeFilter(quiet)
        await conn.close()
    print(f"{args.schema}.{args.table}: ready (migrations: {', '.join(report.migrations)})")
    if args.partitioned:
        print(f"partitioned by month; partitions created: {', '.join(report.partitions) or 'none needed'}")
    print(f"foreign key to users: {report.foreign_key}")
    if args.digests or args.append_only:
        return await _init_tamper(args, dsn)
    return EXIT_OK


async def _init_tamper(args: argparse.Namespace, dsn: str) -> int:
    from ..store.schema.tamper import apply_append_only, apply_digests, writer_grants

    conn = await asyncpg.connect(dsn)
    try:
        if args.digests:
            print(f"{args.schema}.{await apply_digests(conn, schema=args.schema, table=args.table)}: ready")
        if args.append_only:
            protected = await apply_append_only(conn, schema=args.schema, table=args.table)
            print(f"append-only: {', '.join(protected)}")
            print(writer_grants(schema=args.schema, table=args.table, role=args.writer_role))
    finally:
        await conn.close()
    return EXIT_OK


async def _verify(args: argparse.Namespace, dsn: str) -> int:
    from ..store.verify import Checkpoint, verify

    key = os.environ.get(args.key_env)
    if not key:
        print(f"error: ${args.key_env} is not set (the digest HMAC key)", file=sys.stderr)
        return EXIT_USAGE
    try:
        check_digest_key(key)
    except ConfigurationError as exc:  # e.g. too short: the writer would have refused it too
        print(f"error: ${args.key_env}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    point, claimed = Checkpoint.load(args.checkpoint) if args.checkpoint else (None, None)
    conn = await connect_or_report(dsn)
    if conn is None:
        return EXIT_UNREACHABLE
    try:
        report = await verify(
            conn, key=key, schema=args.schema, table=args.table, checkpoint=point, checkpoint_hmac=claimed
        )
    except asyncpg.PostgresError as exc:
        print(missing_table_hint(exc, args), file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await conn.close()
    chain = f"seq {report.first_seq}..{report.head_seq}" if report.digests else "empty chain"
    print(
        f"{args.schema}.{args.table}: {report.digests} digests ({chain}), {report.rows} rows checked, "
        f"{report.pruned_digests} pruned digests, {report.pruned_missing} pruned rows"
    )
    if report.horizon:
        print(f"prune horizon: rows before {report.horizon} may have been pruned")
    if report.checkpoint:
        print(f"checkpoint: {report.checkpoint}")
    if not report.ok:
        print(f"TAMPERING FOUND: {', '.join(f'{k} {n}' for k, n in sorted(report.counts.items()))}")
        for finding in report.findings:
            print(f"  {finding}")
        if report.key_suspect:
            print(
                f"every digest's HMAC fails: the key in ${args.key_env} is probably not the one the writer used "
                "(check it before suspecting the whole chain)"
            )
        return EXIT_TAMPERED
    print("OK: chain intact")
    head = report.head()
    if args.write_checkpoint:
        if head is None:
            print("no digests yet: no checkpoint written")
        else:
            head.dump(args.write_checkpoint, key)
            print(f"checkpoint written: {args.write_checkpoint} (seq {head.seq})")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    dsn = _dsn(args, parser) if hasattr(args, "dsn") else ""  # a command without --dsn needs none
    try:
        if getattr(args, "run", None) is not None:  # operator commands (cli_ops.py)
            return int(args.run(args, dsn))
        if args.command == "init-db":
            return asyncio.run(_init_db(args, dsn))
        if args.command == "verify":
            return asyncio.run(_verify(args, dsn))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except AuditError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    parser.error(f"unknown command {args.command}")  # pragma: no cover - argparse rejects it first
    return EXIT_USAGE  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
