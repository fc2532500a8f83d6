"""Argument parsing shared by the operator commands: times, filters, small numeric types."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from typing import Any

from ..store.query import EventFilter, to_utc_naive

__all__ = ["add_filters", "filters_from", "month", "parse_when", "positive"]

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``now``, a span back from now (``30m``, ``12h``, ``7d``, ``2w``) or ISO 8601 (naive = UTC) -> naive UTC."""
    now = to_utc_naive(now or dt.datetime.now(dt.UTC))
    text = text.strip()
    if text == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        return now - dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
    try:
        return to_utc_naive(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use ISO 8601, 'now', or e.g. 30m, 12h, 7d)") from None


def meta_pair(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def add_filters(parser: argparse.ArgumentParser, *, times: bool = True) -> None:
    group = parser.add_argument_group("filters (all must match)")
    group.add_argument("--user", metavar="UUID", help="rows of this user_id")
    actions = group.add_mutually_exclusive_group()
    actions.add_argument("--action", help="rows with exactly this action")
    actions.add_argument("--action-prefix", metavar="PREFIX", help="rows whose action starts with PREFIX")
    if times:
        group.add_argument("--since", type=parse_when, metavar="TIME", help="created_at >= TIME (ISO 8601 or 7d...)")
        group.add_argument("--until", type=parse_when, metavar="TIME", help="created_at < TIME")
    group.add_argument("--ip", help="rows whose metadata.ip equals IP")
    group.add_argument(
        "--meta",
        type=meta_pair,
        action="append",
        metavar="KEY=VALUE",
        help="metadata contains KEY=VALUE (VALUE parsed as JSON if it can be, else text); repeatable",
    )


def filters_from(args: argparse.Namespace) -> EventFilter:
    return EventFilter(
        user_id=args.user,
        action=args.action,
        action_prefix=args.action_prefix,
        since=getattr(args, "since", None),
        until=getattr(args, "until", None),
        ip=args.ip,
        metadata=dict(args.meta) if args.meta else None,
    )


def month(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, "%Y-%m")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM, got {text!r}") from None


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
