"""Startup tells the truth: one INFO line naming the target table and how many routes are audited."""

from __future__ import annotations

import logging

import pytest

from audit_middleware import AuditWriter
from audit_middleware.capture.asgi import AuditMiddleware
from audit_middleware.capture.preset import PRESET_TABLE
from audit_middleware.capture.wsgi import AuditWSGIMiddleware
from audit_middleware.testing import MemorySink
from tests.asgi_helpers import ok_app

LOGGER = "audit_middleware.middleware"


def started(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]


def test_the_asgi_middleware_names_its_table_and_its_routes(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    routes = {"POST /export": "export_data", "DELETE /items/{id}": "item_deleted", "GET /health": None}
    AuditMiddleware(ok_app(), dsn="postgresql://localhost/app", routes=routes, writer_options={"table": "audit"})
    rows = len(PRESET_TABLE)
    assert started(caplog) == [
        f"audit middleware: {rows + 2} routes audited (2 user routes + {rows} preset rows) into public.audit"
    ]


def test_the_wsgi_middleware_says_the_same_without_the_preset(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    writer = AuditWriter(sink=MemorySink(), schema="audit", table="trail")
    AuditWSGIMiddleware(lambda environ, start_response: [], writer=writer, preset=False, audit_unmapped=True)
    assert started(caplog) == [
        "audit middleware: 0 routes audited (0 user routes + 0 preset rows) into audit.trail,"
        " and every other request as 'http_request'"
    ]
