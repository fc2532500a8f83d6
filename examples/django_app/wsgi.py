"""The WSGI entry point: Django's application wrapped by the audit middleware (``$AUDIT_DSN``).

Serve it with any WSGI server, e.g. ``gunicorn --workers 2 --chdir examples django_app.wsgi`` (each
worker starts its own writer thread after the fork and flushes it when it exits on SIGTERM).
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from audit_middleware import AuditWSGIMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")

application = AuditWSGIMiddleware(get_wsgi_application(), dsn=os.environ.get("AUDIT_DSN"))  # <- the audit setup
