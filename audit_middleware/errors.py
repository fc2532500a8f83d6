"""Exceptions raised by audit_middleware.

Hierarchy::

    AuditError                  base of everything this package raises on purpose
    ├── ConfigurationError      invalid options (also a ValueError), raised at construction
    ├── SchemaError             init-db could not create or check the table
    └── WriterClosedError       an event was submitted to a writer that has been closed

Nothing here is ever raised into an application's request: the middleware catches, logs and counts.
"""

from __future__ import annotations

__all__ = ["AuditError", "ConfigurationError", "SchemaError", "WriterClosedError"]


class AuditError(Exception):
    """Base class of every exception audit_middleware raises on purpose."""


class ConfigurationError(AuditError, ValueError):
    """An option is invalid; the message names it."""


class SchemaError(AuditError):
    """The audit table could not be created or does not have the expected shape."""


class WriterClosedError(AuditError):
    """The writer has been closed and accepts no more events."""
