"""The dead-letter file: rows the database refused because of their content, kept for a human.

A refused row is isolated by the sink (the rest of its batch lands), written here once and never
retried. One JSON object per line, appended (file mode 0600)::

    {"id": "...", "action": "...", "created_at": "...", "reason": "<server error>",
     "row": {"id": ..., "user_id": ..., "action": ..., "metadata": {...}, "created_at": ...}}

The row is the already-redacted row the sink tried to store. The log only ever names the id, the
action and the error class: the server's message can quote a value, so it goes to this file only.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from .._types import Row

__all__ = ["DeadLetterFile", "loggable_reason"]

_CONSTRAINT = re.compile(r'constraint "([^"]{1,63})"')
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def loggable_reason(reason: str) -> str:
    """The error class, SQLSTATE and constraint name of a rejection; never the message's quoted values."""
    head = reason.partition(":")[0]
    # Only an integrity violation (SQLSTATE class 23) names a constraint; any other message (a trigger's
    # RAISE) is free text that can quote the row, "constraint" included.
    constraint = _CONSTRAINT.search(reason) if "(23" in head else None
    return f"{head}, constraint {constraint.group(1)}" if constraint else head


def _metadata(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


MSG_FOREIGN_FILE = "dead-letter file %s belongs to uid %s, not this user: not written"


class DeadLetterFile:
    """Appends refused rows to ``path`` (created 0600 on first use, parent directories 0700)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, row: Row, reason: str) -> None:
        """Write one refused row with the reason, and fsync (dead letters are rare; each one matters)."""
        event_id, user_id, action, metadata, created = row
        record = {
            "id": str(event_id),
            "action": action,
            "created_at": created.isoformat(),
            "reason": reason,
            "row": {
                "id": str(event_id),
                "user_id": None if user_id is None else str(user_id),
                "action": action,
                "metadata": _metadata(metadata),
                "created_at": created.isoformat(),
            },
        }
        line = (_dumps(record) + "\n").encode()
        with self._lock:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Never through a link, never into someone else's file: by default this file sits directly
            # in the spool directory under the shared temp directory, where either could be planted.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            try:
                owner = os.fstat(fd).st_uid
                if owner != os.geteuid():
                    raise OSError(MSG_FOREIGN_FILE % (self.path, owner))
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every record in the file (for operators' tools and tests)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]
