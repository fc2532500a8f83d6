"""``audit-middleware spool``: the disk spools waiting on this machine, and replaying one into a database.

``spool list`` shows every process spool under the spool directory with rows not yet written: what
database and table it waits for, whether its process still runs, how many rows. ``spool replay DIR
--dsn DSN`` writes a stopped process's spool into the given database (e.g. after a DSN's port
changed, when no writer will ever claim it), through the idempotent path: running it twice stores
each row once. Rows the database refuses go to the dead-letter file.

Exit codes: 0 ok, 1 replay failed (database error, spool in use), 2 usage, 3 cannot connect.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from ..writer.config import DEFAULT_SCHEMA, DEFAULT_TABLE, mask_dsn
from ..writer.deadletter import DeadLetterFile
from ..writer.delivery import default_spool_dir, replay_directory
from ..writer.sink import PostgresSink
from ..writer.spool import LOCK_NAME, pending_spools, read_target

__all__ = ["add_commands"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
EXITS = "Exit codes: 0 ok, 1 replay failed (database error, spool in use), 2 usage, 3 cannot connect."


def add_commands(commands: Any) -> None:
    """Register ``spool list`` and ``spool replay`` on ``commands`` (argparse sub-parsers); each sets ``run``."""
    spool = commands.add_parser(
        "spool",
        help="list the disk spools waiting on this machine, replay one into a database",
        description="Events the database could not take wait in a disk spool until a writer for the same "
        "database and table starts. List them, or replay one into a database of your choice.",
    )
    sub = spool.add_subparsers(dest="spool_command", required=True, metavar="SUBCOMMAND")
    spool_dir = {"default": None, "help": "spool directory (default: the writer's default, see docs/delivery.md)"}
    listing = sub.add_parser("list", help="list process spools with rows not yet written")
    listing.add_argument("--spool-dir", **spool_dir)
    listing.set_defaults(run=_list)
    replay = sub.add_parser(
        "replay",
        help="write a stopped process's spool into a database, then delete it",
        description="Replay a process spool directory (as printed by 'spool list') into --dsn. Idempotent; "
        f"rows the database refuses go to the dead-letter file. {EXITS}",
    )
    replay.add_argument("directory", type=Path, help="a process spool directory, from 'spool list'")
    replay.add_argument("--dsn", default=None, help="PostgreSQL connection string (default: $AUDIT_DSN)")
    replay.add_argument("--schema", default=None, help="schema of the audit table (default: the spool's own)")
    replay.add_argument("--table", default=None, help="audit table (default: the spool's own)")
    replay.add_argument("--dead-letter", default=None, help="dead-letter file (default: <spool dir>/dead-letter.jsonl)")
    replay.set_defaults(run=_replay)


def _list(args: argparse.Namespace, dsn: str) -> int:
    root = args.spool_dir or default_spool_dir()
    pending = pending_spools(root)
    if not pending:
        print(f"no pending spools under {root}")
        return EXIT_OK
    for spool in pending:
        target = spool.target
        where = f"{target['database']} {target['schema']}.{target['table']}" if target else "(target unknown)"
        state = "running" if spool.live else "stopped"
        print(f"{spool.directory}\n    {spool.rows} rows, {spool.bytes} bytes, {state}, for {where}")
    return EXIT_OK


def _replay(args: argparse.Namespace, dsn: str) -> int:
    directory: Path = args.directory.expanduser().resolve()
    if not (directory / LOCK_NAME).exists():
        print(f"error: {directory} is not a process spool directory (see 'spool list')", file=sys.stderr)
        return EXIT_USAGE
    target = read_target(directory.parent)
    schema = args.schema or target.get("schema") or DEFAULT_SCHEMA
    table = args.table or target.get("table") or DEFAULT_TABLE
    dead_letter = args.dead_letter or os.path.join(directory.parent.parent, "dead-letter.jsonl")
    return asyncio.run(_replay_into(directory, dsn, schema, table, DeadLetterFile(dead_letter), print))


async def _replay_into(
    directory: Path, dsn: str, schema: str, table: str, dead_letters: DeadLetterFile, say: Callable[[str], None]
) -> int:
    sink = PostgresSink(dsn, schema=schema, table=table)
    try:
        try:
            await sink.open()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            print(f"error: cannot connect to {mask_dsn(dsn)}: {type(exc).__name__}", file=sys.stderr)
            return EXIT_UNREACHABLE
        if not await sink.table_exists():
            print(f"error: {schema}.{table} does not exist: run audit-middleware init-db first", file=sys.stderr)
            return EXIT_FAILURE
        try:
            done, refused = await replay_directory(directory, sink, dead_letters)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            print(f"error: the replay stopped ({type(exc).__name__}); run it again to go on", file=sys.stderr)
            return EXIT_FAILURE
    finally:
        await sink.aclose()
    say(f"replayed {done} rows from {directory} into {mask_dsn(dsn)} {schema}.{table}")
    if refused:
        say(f"{refused} of them refused by the database: written to {dead_letters.path}")
    return EXIT_OK
