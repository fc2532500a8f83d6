"""audit_middleware: a trustworthy audit trail of what users do, written to PostgreSQL.

See README.md. The public names are listed in ``__all__``.
"""

from __future__ import annotations

from .asgi import AuditMiddleware
from .buffer import AuditWriter, WriterStats
from .config import WriterConfig
from .context import AuditContext, audit_context
from .errors import AuditError, ConfigurationError, SchemaError, WriterClosedError
from .records import COLUMNS, AuditEvent
from .redaction import REDACTED, RedactionConfig, Redactor, SkipAudit
from .schema import apply as init_db
from .sinks.postgres import PostgresSink

__all__ = [
    "COLUMNS",
    "REDACTED",
    "AuditContext",
    "AuditError",
    "AuditEvent",
    "AuditMiddleware",
    "AuditWriter",
    "ConfigurationError",
    "PostgresSink",
    "RedactionConfig",
    "Redactor",
    "SchemaError",
    "SkipAudit",
    "WriterClosedError",
    "WriterConfig",
    "WriterStats",
    "audit_context",
    "init_db",
]
