"""Writing rows out: CSV, JSON lines, a human table, and a progress line for terminals.

Rows are written one at a time as they are read (``query.iter_events`` pages), so an export of any
size runs in constant memory. JSON lines embed the stored jsonb text as is (no decode/encode per row).

CSV columns: ``id, user_id, action, metadata, created_at``; ``metadata`` is the JSON text and
``created_at`` ISO 8601 UTC with ``Z``. A JSON line is ``{"id", "user_id", "action", "metadata",
"created_at"}`` with the same values (``metadata`` as a JSON value).

A row's text is whatever a client sent: an action or metadata holding ``\x1b]0;...\x07`` would
rewrite the operator's terminal. Human output (the table, and anything written to a terminal) shows
control characters escaped (:func:`escape_controls`); a file keeps the stored values exactly.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import AsyncIterable
from typing import TextIO

from .query import AuditRow

__all__ = ["FORMATS", "ProgressBar", "escape_controls", "format_table_row", "to_json_line", "write_rows"]

FORMATS = ("jsonl", "csv", "table")
CSV_HEADER = ("id", "user_id", "action", "metadata", "created_at")
TABLE_HEADER = f"{'created_at (UTC)':<26}  {'user_id':<36}  {'action':<24}  {'ip':<15}  metadata"


# C0 (tab and newline included: one row stays one line), DEL, C1 (\x9b is a CSI on its own), and the
# bidirectional overrides and isolates that make a terminal show text in another order than stored.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escape_in_json(match: re.Match[str]) -> str:
    return f"\\u{ord(match[0]):04x}"


def escape_controls(text: str, *, in_json: bool = False) -> str:
    r"""``text`` with control characters shown as ``\xNN`` / ``\uNNNN``: safe to print on a terminal.

    ``in_json=True`` for a JSON text: every escape is ``\uNNNN``, so it stays valid JSON of the same
    value (raw controls can only be inside its strings: JSON escapes C0 itself, not DEL, C1 or bidi).

    Example:
        >>> escape_controls("login\x1b]0;pwned\x07")
        'login\\x1b]0;pwned\\x07'
    """
    return _CONTROLS.sub(_escape_in_json if in_json else _escape, text)


def _time(row: AuditRow) -> str:
    return row.created_at.isoformat() + "Z"


def to_json_line(row: AuditRow) -> str:
    """One JSON line (no trailing newline) for ``row``."""
    user = "null" if row.user_id is None else f'"{row.user_id}"'
    action = json.dumps(row.action, ensure_ascii=False)
    metadata = "null" if row.metadata_json is None else row.metadata_json
    return f'{{"id":"{row.id}","user_id":{user},"action":{action},"metadata":{metadata},"created_at":"{_time(row)}"}}'


def format_table_row(row: AuditRow, width: int = 60) -> str:
    """One line of the human table: time, user, action, ``metadata.ip``, then the metadata shortened."""
    metadata = row.metadata
    ip = metadata.get("ip") if isinstance(metadata, dict) else None
    text = row.metadata_json or ""
    if len(text) > width:
        text = text[: width - 3] + "..."
    user = str(row.user_id) if row.user_id is not None else "-"
    action, ip_text = escape_controls(row.action or "-"), escape_controls(str(ip or "-"))
    return f"{row.created_at.isoformat(sep=' '):<26}  {user:<36}  {action:<24}  {ip_text:<15}  {escape_controls(text)}"


class ProgressBar:
    """A one-line progress display on a terminal stream (``\\r``-rewritten, at most 5 times a second)."""

    def __init__(self, stream: TextIO, total: int | None, label: str = "rows") -> None:
        self.stream = stream
        self.total = total
        self.label = label
        self.count = 0
        self._started = time.monotonic()
        self._shown = 0.0

    def update(self, count: int, *, force: bool = False) -> None:
        self.count = count
        now = time.monotonic()
        if not force and now - self._shown < 0.2:
            return
        self._shown = now
        rate = count / max(now - self._started, 1e-9)
        if self.total:
            share = min(count / self.total, 1.0)
            bar = "#" * int(share * 30)
            text = f"[{bar:<30}] {count:,}/{self.total:,} {self.label} ({share:.0%}) {rate:,.0f}/s"
        else:
            text = f"{count:,} {self.label} {rate:,.0f}/s"
        self.stream.write(f"\r{text}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        self.update(self.count, force=True)
        self.stream.write("\n")
        self.stream.flush()


async def write_rows(
    rows: AsyncIterable[AuditRow],
    out: TextIO,
    fmt: str,
    *,
    progress: ProgressBar | None = None,
    escape: bool = False,
) -> int:
    """Write every row of ``rows`` to ``out`` in ``fmt`` (``jsonl``, ``csv`` or ``table``); return the count.

    ``escape`` shows control characters escaped in CSV and JSON lines too (for a terminal); the table
    always escapes them.
    """
    count = 0
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_HEADER)
    elif fmt == "table":
        out.write(TABLE_HEADER + "\n")
    async for row in rows:
        if writer is not None:
            user = "" if row.user_id is None else str(row.user_id)
            fields = [row.action or "", row.metadata_json or ""]
            if escape:
                fields = [escape_controls(f) for f in fields]
            writer.writerow((row.id, user, *fields, _time(row)))
        elif fmt == "table":
            out.write(format_table_row(row) + "\n")
        else:
            line = to_json_line(row)
            out.write((escape_controls(line, in_json=True) if escape else line) + "\n")
        count += 1
        if progress is not None and count % 1000 == 0:
            progress.update(count)
    if progress is not None:
        progress.count = count
    return count
