"""Shared by the FastAPI / Litestar auth-stack tests: an audit table without a users foreign key (the apps
keep their users elsewhere), the middleware around an app writing to it, and the rows as plain dicts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from audit_middleware import AuditMiddleware, AuditWriter
from tests.conftest import PgTarget, _create_schema, _drop_schema

CLIENT_IP = "10.1.2.3"


@contextlib.contextmanager
def audit_table(dsn: str) -> Iterator[PgTarget]:
    """A schema holding only the audit table (user_id without a foreign key), dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_schema(dsn, schema, users=False))
    try:
        yield PgTarget(dsn, schema)
    finally:
        asyncio.run(_drop_schema(dsn, schema))


@dataclass
class Row:
    user_id: uuid.UUID | None
    action: str
    metadata: dict[str, Any]
    text: str  # the whole row as stored, for "no secret in it" checks


@contextlib.asynccontextmanager
async def audited_client(
    app: Any, pg: PgTarget, *, routes: Mapping[str, Any] | None = None, **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client for ``app`` under AuditMiddleware; the writer is closed (rows flushed) on exit."""
    writer = AuditWriter(pg.dsn, schema=pg.schema)
    audited = AuditMiddleware(app, writer=writer, routes=routes, **options)
    transport = httpx.ASGITransport(app=audited, client=(CLIENT_IP, 1234))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
    finally:
        await writer.aclose()


async def rows(pg: PgTarget) -> list[Row]:
    found = []
    for record in await pg.rows():
        metadata = json.loads(record["metadata"]) if isinstance(record["metadata"], str) else record["metadata"]
        found.append(Row(record["user_id"], record["action"], metadata, json.dumps(dict(record), default=str)))
    return found


def assert_no_secret(found: list[Row], *secrets: str) -> None:
    for row in found:
        for secret in secrets:
            assert secret and secret not in row.text, f"{row.action} row contains a secret"
