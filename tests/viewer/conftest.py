"""Fixtures of the viewer tests: a schema with the standard rows, and the app behind an httpx client."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.requests import HTTPConnection

from audit_middleware.viewer import create_app
from tests.conftest import PgTarget
from tests.viewer.data import Dataset, insert, standard


def allow(request: HTTPConnection) -> bool:
    return True


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


@pytest.fixture
async def dataset(pg: PgTarget) -> Dataset:
    """The standard rows, ending a few seconds ago."""
    data = standard(now_utc() - dt.timedelta(seconds=5))
    conn = await pg.connect()
    try:
        await insert(conn, pg.schema, data)
    finally:
        await conn.close()
    return data


async def open_client(app: Any, base: str = "http://viewer") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.9.8.7", 5555)), base_url=base)


@pytest.fixture
async def client(pg: PgTarget, dataset: Dataset) -> AsyncIterator[httpx.AsyncClient]:
    """The viewer on the test schema (page size 20), everyone allowed."""
    app = create_app(dsn=pg.dsn, authorize=allow, schema=pg.schema, page_size=20)
    async with await open_client(app) as c:
        yield c
    await app.state.viewer.aclose()
