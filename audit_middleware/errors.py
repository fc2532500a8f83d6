"""Exceptions raised by audit_middleware.

Hierarchy::

    AuditError                  base of everything this package raises on purpose
    ├── ConfigurationError      invalid options (also a ValueError), raised at construction
    ├── SchemaError             init-db could not create or check the table
    └── WriterClosedError       an event was submitted to a writer that has been closed

Nothing here is ever raised into an application's request: the middleware catches, logs and counts.
"""

from __future__ import annotations

import os

__all__ = ["AuditError", "ConfigurationError", "SchemaError", "WriterClosedError", "describe_failure"]


class AuditError(Exception):
    """Base class of every exception audit_middleware raises on purpose."""


class ConfigurationError(AuditError, ValueError):
    """An option is invalid; the message names it."""


class SchemaError(AuditError):
    """The audit table could not be created or does not have the expected shape."""


class WriterClosedError(AuditError):
    """The writer has been closed and accepts no more events."""


def describe_failure(exc: BaseException) -> str:
    """The exception's class and where it was raised (``ValueError at views.py:42 in login``), never its
    message: a failure while handling a request's captured content can quote that content."""
    tb = exc.__traceback__
    if tb is None:
        return type(exc).__name__
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return f"{type(exc).__name__} at {os.path.basename(code.co_filename)}:{tb.tb_lineno} in {code.co_name}"
