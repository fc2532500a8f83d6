"""audit_middleware: a trustworthy audit trail of what users do, written to PostgreSQL.

See README.md. The public names are listed in ``__all__``.
"""

from __future__ import annotations

from .buffer import AuditWriter, WriterStats
from .config import WriterConfig
from .errors import AuditError, ConfigurationError, SchemaError, WriterClosedError
from .query import AuditRow, Cursor, EventFilter, fetch_page, iter_events
from .records import COLUMNS, AuditEvent
from .schema import apply as init_db
from .sinks.postgres import PostgresSink

__all__ = [
    "COLUMNS",
    "AuditError",
    "AuditEvent",
    "AuditRow",
    "AuditWriter",
    "ConfigurationError",
    "Cursor",
    "EventFilter",
    "PostgresSink",
    "SchemaError",
    "WriterClosedError",
    "WriterConfig",
    "WriterStats",
    "fetch_page",
    "init_db",
    "iter_events",
]
