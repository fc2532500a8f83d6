"""Argument parsing shared by the operator commands: times, filters, small numeric types."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from typing import Any

from ..store.query import EventFilter, to_utc_naive

__all__ = ["add_filters", "days_back", "filters_from", "month", "parse_when", "positive"]

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``now``, a span back from now (``30m``, ``12h``, ``7d``, ``2w``) or ISO 8601 (naive = UTC) -> naive UTC.

    A time outside what ``datetime`` holds in UTC (years 1..9999) is a usage error, not an OverflowError.
    """
    now = to_utc_naive(now or dt.datetime.now(dt.UTC))
    text = text.strip()
    if text == "now":
        return now
    match = _RELATIVE.match(text)
    try:
        if match:
            return now - dt.timedelta(**{_UNITS[match[2]]: int(match[1])})
        return to_utc_naive(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except OverflowError:
        raise argparse.ArgumentTypeError(f"out of range: {text!r} (UTC years 1..9999)") from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use ISO 8601, 'now', or e.g. 30m, 12h, 7d)") from None


def days_back(text: str) -> dt.datetime:
    """``--older-than DAYS``: a positive number of days back from now, as the cutoff (naive UTC)."""
    return parse_when(f"{positive(text)}d")


def meta_pair(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if key == "user_ref":  # the writer stores it as text: 42 must find "42", as --user 42 does
        return key, raw
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw


def add_filters(parser: argparse.ArgumentParser, *, times: bool = True) -> None:
    group = parser.add_argument_group("filters (all must match)")
    group.add_argument(
        "--user",
        metavar="ID",
        help="rows of this user: a UUID matches user_id, anything else (e.g. 42) metadata.user_ref",
    )
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
        help="metadata contains KEY=VALUE (VALUE parsed as JSON if it can be, else text; user_ref is always "
        "text); repeatable",
    )


def filters_from(args: argparse.Namespace) -> EventFilter:
    return EventFilter(
        user=args.user,
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
