"""audit_middleware: a trustworthy audit trail of what users do, written to PostgreSQL.

See README.md and the docs site (docs/). The public names are listed in ``__all__``.
"""

from __future__ import annotations

from .capture.asgi import AuditMiddleware
from .capture.context import AuditContext, audit_context
from .capture.frameworks.django import DjangoAuditMiddleware
from .capture.frameworks.flask import install_flask
from .capture.wsgi import AuditWSGIMiddleware
from .errors import AuditError, ConfigurationError, SchemaError, WriterClosedError
from .redaction.redactor import REDACTED, RedactionConfig, Redactor, SkipAudit
from .store.query import AuditRow, Cursor, EventFilter, fetch_page, iter_events
from .store.schema import apply as init_db
from .writer.config import WriterConfig
from .writer.records import COLUMNS, AuditEvent
from .writer.sink import PostgresSink
from .writer.threaded import BackgroundWriter
from .writer.writer import AuditWriter, WriterStats

__all__ = [
    "COLUMNS",
    "REDACTED",
    "AuditContext",
    "AuditError",
    "AuditEvent",
    "AuditMiddleware",
    "AuditRow",
    "AuditWSGIMiddleware",
    "AuditWriter",
    "BackgroundWriter",
    "ConfigurationError",
    "Cursor",
    "DjangoAuditMiddleware",
    "EventFilter",
    "PostgresSink",
    "RedactionConfig",
    "Redactor",
    "SchemaError",
    "SkipAudit",
    "WriterClosedError",
    "WriterConfig",
    "WriterStats",
    "audit_context",
    "fetch_page",
    "init_db",
    "install_flask",
    "iter_events",
]
