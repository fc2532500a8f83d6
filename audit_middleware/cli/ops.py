"""Operator commands of ``audit-middleware``: tail, query, export, stats, prune, partitions.

Each is a thin wrapper over a library call (``query``, ``follow``, ``export``, ``stats``,
``retention``, ``partitions``); ``cli.build_parser`` registers them with :func:`add_commands`.
Exit codes (see ``cli.py``): 0 ok (also ``tail`` stopped with Ctrl-C), 1 the database refused
(e.g. no such table), 2 bad arguments, 3 cannot connect, 130 interrupted (Ctrl-C) during
query/export/prune.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TextIO

import asyncpg

from ..errors import ConfigurationError
from ..store.export import escape_controls
from ..store.query import Cursor, EventFilter, _target, count_events, iter_events
from .args import add_filters, days_back, filters_from, month, parse_when, positive
from .main import EXIT_FAILURE, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, connect_or_report, missing_table_hint

__all__ = ["EXIT_INTERRUPTED", "add_commands"]

EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, asyncpg.Connection], Coroutine[Any, Any, int]]


def _run(handler: Handler, *, interrupted: int = EXIT_INTERRUPTED) -> Callable[[argparse.Namespace, str], int]:
    """Turn an async handler into ``run(args, dsn) -> exit code`` with the shared error handling."""

    async def connected(args: argparse.Namespace, dsn: str) -> int:
        conn = await connect_or_report(dsn, server_settings={"application_name": "audit-middleware-cli"})
        if conn is None:
            return EXIT_UNREACHABLE
        try:
            return await handler(args, conn)
        except asyncpg.PostgresError as exc:
            print(missing_table_hint(exc, args), file=sys.stderr)
            return EXIT_FAILURE
        finally:
            await conn.close(timeout=5)

    def run(args: argparse.Namespace, dsn: str) -> int:
        try:
            return asyncio.run(connected(args, dsn))
        except ConfigurationError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return interrupted
        except BrokenPipeError:  # e.g. `audit-middleware query ... | head`: the reader has what it wanted
            with contextlib.suppress(OSError):
                sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush quiet
            return EXIT_OK

    return run


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """stdout, or ``path`` written as ``path.partial`` and renamed when complete (a FILE is never half).

    The rename is for regular files: a device or pipe (``-o /dev/null``, a FIFO) is written to
    directly, never replaced by a file; through a symlink, the file it points to is replaced.
    """
    if path is None or path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = os.path.realpath(path)
    if os.path.exists(target) and not os.path.isfile(target):
        with open(target, "w", encoding="utf-8", newline="") as handle:
            yield handle
        return
    partial = f"{target}.partial"
    try:
        with open(partial, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.replace(partial, target)
    except BaseException:  # a failed or interrupted export leaves no half file behind
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def _progress_wanted(args: argparse.Namespace) -> bool:
    return bool(args.progress) if args.progress is not None else sys.stderr.isatty()


async def _query(args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    from ..store.export import ProgressBar, write_rows

    filters = filters_from(args)
    limit = getattr(args, "limit", None)
    total: int | None = None
    bar = None
    if _progress_wanted(args):
        total = await count_events(conn, filters, schema=args.schema, table=args.table)
        bar = ProgressBar(sys.stderr, total if limit is None else min(total, limit))
    rows = iter_events(
        conn,
        filters,
        schema=args.schema,
        table=args.table,
        descending=args.desc,
        after=Cursor.parse(args.after) if args.after else None,
        page_size=args.page_size,
        limit=limit,
    )
    with _output(args.output) as out:
        count = await write_rows(rows, out, args.format, progress=bar, escape=out.isatty())
    if bar is not None:
        bar.close()
    if args.output not in (None, "-"):
        print(f"{count} rows written to {args.output}", file=sys.stderr)
    if not count:
        await _note_unseen_action(conn, args, filters)
    return EXIT_OK


async def _note_unseen_action(conn: asyncpg.Connection, args: argparse.Namespace, filters: EventFilter) -> None:
    """Say so when the action filter names an action no row has (a typo finds nothing, silently, otherwise)."""
    if filters.action is None and filters.action_prefix is None:
        return
    probe = EventFilter(action=filters.action, action_prefix=filters.action_prefix)
    where: list[Any] = []
    condition = probe.where(where)[0]
    if await conn.fetchval(
        f"SELECT EXISTS (SELECT 1 FROM {_target(args.schema, args.table)} WHERE {condition})", *where
    ):
        return
    known = await conn.fetch(
        f"SELECT DISTINCT action FROM (SELECT action FROM {_target(args.schema, args.table)} "
        "WHERE action IS NOT NULL ORDER BY created_at DESC LIMIT 10000) recent ORDER BY 1 LIMIT 20"
    )
    named = filters.action if filters.action is not None else f"{filters.action_prefix}*"
    seen = ", ".join(escape_controls(r["action"]) for r in known) or "none"
    print(f"note: no row has action {escape_controls(named)!r} (actions in recent rows: {seen})", file=sys.stderr)


async def _tail(args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    from ..store.export import TABLE_HEADER, format_table_row, to_json_line
    from ..store.follow import follow

    filters = filters_from(args)
    await _note_unseen_action(conn, args, filters)
    rows = follow(
        conn,
        filters,
        schema=args.schema,
        table=args.table,
        last=args.last,
        poll_interval=args.poll_interval,
        lag=args.lag,
    )
    seen = 0
    if not args.json:
        print(TABLE_HEADER, flush=True)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        while args.max_events is None or seen < args.max_events:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                row = await asyncio.wait_for(anext(rows), remaining)
            except TimeoutError:
                break
            line = to_json_line(row) if args.json else format_table_row(row)  # the table escapes its text
            print(escape_controls(line, in_json=True) if args.json and sys.stdout.isatty() else line, flush=True)
            seen += 1
    finally:
        await rows.aclose()
    return EXIT_OK


async def _stats(args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    from ..store.stats import collect_stats

    filters = filters_from(args)
    if filters.since is None and filters.until is None:
        filters = dataclasses.replace(filters, since=parse_when("1d"))
    result = await collect_stats(
        conn,
        filters,
        schema=args.schema,
        table=args.table,
        bucket=args.by,
        failed_actions=args.failed_action or ["login_failed"],
        ip_key=args.ip_key,
        identifier_key=args.identifier_key,
        top=args.top,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return EXIT_OK
    if not result.total:
        await _note_unseen_action(conn, args, filters)
    since = f"{result.since:%Y-%m-%d %H:%M:%S}" if result.since else "the start"
    until = f"{result.until:%Y-%m-%d %H:%M:%S}" if result.until else "now"
    print(f"{result.total:,} events from {since} to {until} (UTC)")
    print("\nby action:")
    for action, count in result.by_action:
        print(f"  {escape_controls(action or '-'):<40} {count:>12,}")
    print(f"\nby {args.by}:")
    for bucket, count in result.by_bucket:
        print(f"  {bucket:%Y-%m-%d %H:%M}  {count:>12,}")
    for title, items, other in (
        ("failed logins by ip", result.failed_by_ip, "identifiers"),
        ("failed logins by identifier", result.failed_by_identifier, "ips"),
    ):
        print(f"\n{title} (top {args.top}):")
        for s in items:
            last = f"{s.last:%Y-%m-%d %H:%M}"
            key = escape_controls(s.key or "-")
            print(f"  {key:<40} {s.failures:>8,} failures  {s.distinct:>6,} {other}  last {last}")
    return EXIT_OK


async def _prune(args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    from ..store.export import ProgressBar
    from ..store.partitions import create_partitions, is_partitioned
    from ..store.retention import prune

    key = os.environ.get(args.key_env) or None
    if args.sign_stubs:
        return await _sign_stubs(args, conn, key)
    cutoff = args.before or args.older_than
    bar = ProgressBar(sys.stderr, None, "rows deleted") if _progress_wanted(args) and not args.dry_run else None

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done)
        else:
            print(f"deleted {done:,}/{total:,} rows", file=sys.stderr)

    report = await prune(
        conn,
        cutoff=cutoff,
        schema=args.schema,
        table=args.table,
        batch_size=args.batch_size,
        dry_run=args.dry_run,
        progress=progress,
        key=key,
    )
    if bar is not None:
        bar.close()
    verb = "would drop" if report.dry_run else "dropped"
    for name in report.dropped_partitions:
        print(f"{verb} partition {name}")
    if report.kept_from is not None:
        print(
            f"kept rows from {report.kept_from} (UTC) on: a digested batch straddles the cutoff and none is "
            "entirely older, so deleting them would look like tampering; a later prune removes them"
        )
    if report.dry_run:
        print(f"dry run: {report.deleted:,} rows older than {report.cutoff} (UTC) would be removed")
        return EXIT_OK
    print(f"deleted {report.deleted:,} rows older than {report.cutoff} (UTC) in {report.batches} batches")
    if args.ahead is not None and await is_partitioned(conn, args.schema, args.table):
        created = await create_partitions(conn, schema=args.schema, table=args.table, ahead=args.ahead)
        print(f"created partitions: {', '.join(created) or 'none needed'}")
    return EXIT_OK


async def _sign_stubs(args: argparse.Namespace, conn: asyncpg.Connection, key: str | None) -> int:
    from ..store.digests import sign_stubs
    from ..store.partitions import PRUNE_SETTING

    if key is None:
        raise ConfigurationError(f"${args.key_env} is not set (the digest HMAC key the stubs are signed with)")
    async with conn.transaction():
        await conn.execute(f"SELECT set_config('{PRUNE_SETTING}', 'on', true)")  # past the append-only triggers
        signed = await sign_stubs(conn, schema=args.schema, table=args.table, key=key)
    print(f"signed {signed} stubs of an earlier prune")
    return EXIT_OK


async def _partitions(args: argparse.Namespace, conn: asyncpg.Connection) -> int:
    from ..store.partitions import create_partitions, list_partitions

    created = await create_partitions(conn, schema=args.schema, table=args.table, ahead=args.ahead, start=args.start)
    print(f"created: {', '.join(created) or 'none needed'}")
    for p in await list_partitions(conn, args.schema, args.table):
        span = "DEFAULT" if p.start is None else f"{p.start:%Y-%m-%d} .. {p.end:%Y-%m-%d}"
        print(f"  {p.name:<40} {span}")
    return EXIT_OK


def add_commands(commands: Any, add_dsn: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the operator commands on ``commands`` (argparse sub-parsers); each sets ``run``."""
    exits = "Exit codes: 0 ok, 1 database error, 2 usage, 3 cannot connect"
    tail = commands.add_parser(
        "tail",
        help="follow new rows as they land",
        description=f"Print the last rows, then new rows as they land, until Ctrl-C (exit 0). {exits}.",
    )
    add_dsn(tail)
    add_filters(tail, times=False)
    tail.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    tail.add_argument("--last", type=int, default=10, metavar="N", help="existing rows shown first (default: 10)")
    tail.add_argument("--poll-interval", type=float, default=1.0, metavar="S", help="seconds between polls (1)")
    tail.add_argument("--lag", type=float, default=10.0, metavar="S", help="look-back for late commits (10 s)")
    tail.add_argument("--max-events", type=positive, metavar="N", help="stop after N rows")
    tail.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    tail.set_defaults(run=_run(_tail, interrupted=EXIT_OK))

    for name, fmt, help_text in (
        ("query", "table", "print matching rows (a table, JSON lines or CSV)"),
        ("export", "jsonl", "stream matching rows to a file or stdout as JSON lines or CSV"),
    ):
        sub = commands.add_parser(
            name,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}, in (created_at, id) order, read in keyset pages "
            f"(constant memory). {exits}, 130 interrupted.",
        )
        add_dsn(sub)
        add_filters(sub)
        sub.add_argument("--format", choices=("table", "jsonl", "csv"), default=fmt, help="(default: %(default)s)")
        sub.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
        if name == "query":
            sub.add_argument("--limit", type=positive, default=100, help="most rows printed (default: 100)")
        sub.add_argument("--desc", action="store_true", help="newest first")
        sub.add_argument("--after", metavar="CURSOR", help="start after this '<iso time>|<uuid>' position")
        sub.add_argument("--page-size", type=positive, default=5000, help="rows per query (default: %(default)s)")
        sub.add_argument(
            "--progress", action=argparse.BooleanOptionalAction, help="progress on stderr (default: if a terminal)"
        )
        sub.set_defaults(run=_run(_query))

    stats = commands.add_parser(
        "stats",
        help="counts by action and by day/hour; failed logins by ip and identifier",
        description=f"Aggregate a time range (default: the last day). {exits}.",
    )
    add_dsn(stats)
    add_filters(stats)
    stats.add_argument("--by", choices=("day", "hour"), default="day", help="time bucket (default: day)")
    stats.add_argument(
        "--failed-action", action="append", metavar="ACTION", help="action of a failed login (default: login_failed)"
    )
    stats.add_argument("--ip-key", default="ip", help="metadata key of the client IP (default: ip)")
    stats.add_argument("--identifier-key", default="identifier", help="metadata key of the attempted identifier")
    stats.add_argument("--top", type=positive, default=20, help="IPs/identifiers listed (default: 20)")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(run=_run(_stats))

    prune = commands.add_parser(
        "prune",
        help="delete rows older than a retention period",
        description="Delete rows older than N days in batches (or drop whole monthly partitions). "
        f"{exits}, 130 interrupted (the batches done so far stay deleted).",
    )
    add_dsn(prune)
    when = prune.add_mutually_exclusive_group(required=True)
    when.add_argument("--older-than", type=days_back, metavar="DAYS", help="delete rows older than DAYS days")
    when.add_argument("--before", type=parse_when, metavar="TIME", help="delete rows with created_at < TIME")
    when.add_argument(
        "--sign-stubs",
        action="store_true",
        help="once, after upgrading: sign the digests an earlier version pruned (run verify with it first)",
    )
    prune.add_argument(
        "--key-env",
        default="AUDIT_DIGEST_KEY",
        help="variable holding the digest HMAC key, needed with a digests table: pruned digests are signed "
        "(%(default)s)",
    )
    prune.add_argument("--batch-size", type=positive, default=10_000, help="rows per transaction (10000)")
    prune.add_argument("--dry-run", action="store_true", help="only count what would be removed")
    prune.add_argument("--ahead", type=int, metavar="N", help="partitioned: also create partitions N months ahead")
    prune.add_argument("--progress", action=argparse.BooleanOptionalAction, help="progress (default: if a terminal)")
    prune.set_defaults(run=_run(_prune))

    parts = commands.add_parser(
        "partitions",
        help="create upcoming monthly partitions (partitioned tables)",
        description=f"Create monthly partitions up to N months ahead and list them. {exits}.",
    )
    add_dsn(parts)
    parts.add_argument("--ahead", type=int, default=3, metavar="N", help="months ahead (default: 3)")
    parts.add_argument("--from", dest="start", type=month, metavar="YYYY-MM", help="also create months from here")
    parts.set_defaults(run=_run(_partitions))
