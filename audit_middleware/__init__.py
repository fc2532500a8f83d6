"""audit_middleware: a trustworthy audit trail of what users do, written to PostgreSQL.

See README.md. The public names are listed in ``__all__``.
"""

from __future__ import annotations

from .asgi import AuditMiddleware
from .buffer import AuditWriter, WriterStats
from .config import WriterConfig
from .context import AuditContext, audit_context
from .errors import AuditError, ConfigurationError, SchemaError, WriterClosedError
from .frameworks import DjangoAuditMiddleware, install_flask
from .query import AuditRow, Cursor, EventFilter, fetch_page, iter_events
from .records import COLUMNS, AuditEvent
from .redaction import REDACTED, RedactionConfig, Redactor, SkipAudit
from .schema import apply as init_db
from .sinks.postgres import PostgresSink
from .threaded import BackgroundWriter
from .wsgi import AuditWSGIMiddleware

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
