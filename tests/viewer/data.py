"""Rows the viewer tests read: ordinary traffic, failed logins, and rows planted with hostile text."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from audit_middleware.store.schema import quote_ident

ALICE = uuid.UUID("11111111-1111-4111-8111-111111111111")
BOB = uuid.UUID("22222222-2222-4222-8222-222222222222")
# The planted values: markup, a javascript: URL, a bidi override and an ANSI escape sequence.
XSS_SCRIPT = "<script>window.__xss = 1</script>"
XSS_IMG = '"><img src=x onerror="window.__xss=2">'
XSS_URL = "javascript:window.__xss=3"
RTL = "admin\u202egnp.exe"
ANSI = "\x1b[31mred\x1b[0m\x1b]0;title\x07"


@dataclass
class Dataset:
    """What was inserted, for assertions."""

    base: dt.datetime
    rows: list[tuple[uuid.UUID, uuid.UUID | None, str, dict[str, Any], dt.datetime]] = field(default_factory=list)

    def add(self, action: str, minutes: float, *, user: uuid.UUID | None = None, **metadata: Any) -> uuid.UUID:
        event_id = uuid.uuid4()
        self.rows.append((event_id, user, action, metadata, self.base - dt.timedelta(minutes=minutes)))
        return event_id


def standard(base: dt.datetime) -> Dataset:
    """About 130 rows over the last 2 hours before ``base``; ``base`` is naive UTC."""
    data = Dataset(base)
    for i in range(60):
        data.add(
            "login",
            2 * i + 1,
            user=ALICE if i % 2 else BOB,
            ip=f"10.0.0.{i % 4}",
            http={"method": "POST", "path": "/login", "route": "/login", "status": 200},
        )
    for i in range(40):
        data.add(
            "login_failed",
            1.5 * i + 0.5,
            ip="203.0.113.7",
            identifier=f"victim{i % 3}@example.com",
            http={"method": "POST", "path": "/login", "route": "/login", "status": 401},
        )
    for i in range(25):
        reset = {"method": "POST", "path": "/reset", "status": 200}
        data.add("password_reset", 4 * i + 3, user=ALICE, ip="192.168.1.20", method="email_link", http=reset)
    data.add("update_profile", 30, user=BOB, ip="10.0.0.9", note="discount 100%_ applied")
    data.add("update_profile", 31, user=BOB, ip="10.0.0.9", note="1000 items")  # matches 100%_ as a LIKE pattern
    # the request at the top level, as rows written before metadata.http existed
    data.add("logout", 0.2, user_ref="github|octocat", ip="2001:db8::5", method="POST", path="/logout", status=204)
    data.add(
        XSS_SCRIPT, 0.1, ip=XSS_IMG, path=XSS_URL, user_agent=XSS_SCRIPT, identifier=RTL, note=ANSI, user_ref=XSS_IMG
    )
    data.add("login_failed", 0.05, ip="not-an-ip", identifier=RTL, user_agent=ANSI)
    return data


async def insert(conn: asyncpg.Connection, schema: str, data: Dataset, table: str = "user_audit_logs") -> None:
    """Insert ``data`` with plain SQL (the viewer tests read; they do not test the writer)."""
    if await conn.fetchval("SELECT to_regclass($1)", f"{quote_ident(schema)}.users") is not None:
        await conn.executemany(
            f"INSERT INTO {quote_ident(schema)}.users (id) VALUES ($1) ON CONFLICT DO NOTHING", [(ALICE,), (BOB,)]
        )
    await conn.executemany(
        f"INSERT INTO {quote_ident(schema)}.{quote_ident(table)} (id, user_id, action, metadata, created_at) "
        "VALUES ($1, $2, $3, $4::jsonb, $5)",
        [(i, u, a, json.dumps(m), t) for i, u, a, m, t in data.rows],
    )
