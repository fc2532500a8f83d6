"""The ASGI entry point: Django's application wrapped by the audit middleware (``$AUDIT_DSN``).

Serve it with any ASGI server, e.g. ``uvicorn --app-dir examples django_app.asgi:application``.
``DjangoAuditMiddleware`` (in ``settings.MIDDLEWARE``) hands ``request.user`` and the resolved
route to the audit middleware through the ASGI scope, as it does through the environ under WSGI.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from audit_middleware import AuditMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")

application = AuditMiddleware(get_asgi_application(), dsn=os.environ.get("AUDIT_DSN"))  # <- the audit setup
