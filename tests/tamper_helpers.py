"""Shared helpers for the tamper-evidence tests: write digested batches, run verify, tamper."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from audit_middleware._types import Row
from audit_middleware.store.digests import DigestWriter, digests_table
from audit_middleware.store.schema import quote_ident
from audit_middleware.store.schema.tamper import apply_digests
from audit_middleware.store.verify import Checkpoint, VerifyReport, verify
from audit_middleware.writer.records import AuditEvent, to_row
from tests.conftest import PgTarget

KEY = "test-digest-key-0123456789abcdef"
OTHER_KEY = "another-key-that-is-not-the-one"

# Values jsonb normalises (key order, whitespace, number notation, escapes): the hash must not care.
TRICKY: list[dict[str, Any]] = [
    {"b": 1, "a": 2, "aa": {"z": [1, 2.5, -0.0], "y": None}},
    {"small": 1e-7, "big": 1e20, "exact": 0.1, "int": 12345678901234567890},
    {"text": 'quote " backslash \\ newline \n tab \t ctl \x01', "unicode": "é 漢字 🚀"},
    {"dup": "x", "nested": {"deep": {"deeper": {"list": [{"k": True}, False]}}}},
]


def make_rows(n: int, *, users: Sequence[uuid.UUID | None] | None = None, start: int = 0) -> list[Row]:
    base = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    rows = []
    for i in range(start, start + n):
        user = users[i % len(users)] if users else None
        meta = dict(TRICKY[i % len(TRICKY)], n=i)
        rows.append(to_row(AuditEvent(f"action.{i % 3}", user, meta, created_at=base + dt.timedelta(seconds=i))))
    return rows


class Target:
    """The audit table in a test schema, with its digests table."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self.audit = f"{quote_ident(schema)}.user_audit_logs"
        self.digests = f"{quote_ident(schema)}.{quote_ident(digests_table('user_audit_logs'))}"
        self.writer = DigestWriter(schema=schema, table="user_audit_logs", key=KEY)

    async def setup(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            await apply_digests(conn, schema=self.schema)
        finally:
            await conn.close()

    async def write(self, batches: Sequence[Sequence[Row]], *, retry: bool = False) -> list[int]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return [await self.writer.write(conn, rows, retry=retry, timeout=10) for rows in batches]
        finally:
            await conn.close()

    async def sql(self, statement: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn)
        try:
            text = statement.replace("{t}", self.audit).replace("{d}", self.digests)
            return list(await conn.fetch(text, *args))
        finally:
            await conn.close()

    async def verify(self, *, key: str = KEY, checkpoint: tuple[Checkpoint, str] | None = None) -> VerifyReport:
        conn = await asyncpg.connect(self.dsn)
        try:
            point, claimed = checkpoint if checkpoint else (None, None)
            return await verify(conn, key=key, schema=self.schema, checkpoint=point, checkpoint_hmac=claimed)
        finally:
            await conn.close()


async def partitioned_target(empty_schema: PgTarget) -> Target:
    """As ``init-db --partitioned`` makes it (primary key (id, created_at)), with the partitions
    ``user_audit_logs_p10`` (October 2026), ``_p11`` (November) and ``_default``, and its digests table."""
    s = quote_ident(empty_schema.schema)
    await empty_schema.fetch(
        f"CREATE TABLE {s}.user_audit_logs (id uuid NOT NULL, user_id uuid, action varchar(100), metadata jsonb, "
        "created_at timestamp NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)"
    )
    for name, start, end in (("p10", "2026-10-01", "2026-11-01"), ("p11", "2026-11-01", "2026-12-01")):
        await empty_schema.fetch(
            f"CREATE TABLE {s}.user_audit_logs_{name} PARTITION OF {s}.user_audit_logs "
            f"FOR VALUES FROM ('{start}') TO ('{end}')"
        )
    await empty_schema.fetch(f"CREATE TABLE {s}.user_audit_logs_default PARTITION OF {s}.user_audit_logs DEFAULT")
    target = Target(empty_schema.dsn, empty_schema.schema)
    await target.setup()
    return target
