"""Fixtures shared by the middleware tests: a writer recording into memory (``MemorySink``), closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from audit_middleware import AuditWriter
from audit_middleware.testing import MemorySink


@pytest.fixture
def sink() -> MemorySink:
    return MemorySink()


@pytest.fixture
async def writer(sink: MemorySink) -> AsyncIterator[AuditWriter]:
    writer = AuditWriter(sink=sink)
    yield writer
    await writer.aclose()
