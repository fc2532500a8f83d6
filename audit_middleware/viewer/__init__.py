"""A read-only web viewer for the audit trail (optional extra: ``pip install 'audit-trail-middleware[viewer]'``).

Example:
    >>> from audit_middleware.viewer import create_app                          # doctest: +SKIP
    >>> app.mount("/audit", create_app(dsn=READER_DSN, authorize=is_staff))     # doctest: +SKIP
"""

from __future__ import annotations

from .app import create_app
from .auth import TokenAuth

__all__ = ["TokenAuth", "create_app"]
