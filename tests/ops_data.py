"""Rows for the operator-tool tests, loaded with one binary COPY (the writer's own path)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

from audit_middleware.writer.records import COLUMNS
from tests.conftest import PgTarget

T0 = dt.datetime(2026, 3, 1, 12, 0, 0)


def row(
    action: str,
    at: dt.datetime,
    *,
    user: uuid.UUID | None = None,
    metadata: dict[str, Any] | None = None,
    id: uuid.UUID | None = None,
) -> tuple[Any, ...]:
    return (id or uuid.uuid4(), user, action, json.dumps(metadata or {}), at)


async def load(pg: PgTarget, rows: Sequence[tuple[Any, ...]], table: str | None = None) -> None:
    conn = await pg.connect()
    try:
        await conn.copy_records_to_table(table or pg.table, records=list(rows), columns=COLUMNS, schema_name=pg.schema)
    finally:
        await conn.close()


def ordered_keys(rows: Sequence[tuple[Any, ...]]) -> list[uuid.UUID]:
    """Ids in (created_at, id) order, as PostgreSQL orders uuids (bytewise, like Python's UUID order)."""
    return [r[0] for r in sorted(rows, key=lambda r: (r[4], r[0]))]
