"""Settings of the minimal Django example (``run.py`` starts it). Django's own tables live in SQLite;
the audit trail goes to PostgreSQL through ``AuditWSGIMiddleware`` in ``wsgi.py`` (or
``AuditMiddleware`` in ``asgi.py``)."""

from __future__ import annotations

import os
from pathlib import Path

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "django_app.urls"
WSGI_APPLICATION = "django_app.wsgi.application"
ASGI_APPLICATION = "django_app.asgi.application"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "audit_middleware.DjangoAuditMiddleware",  # hands request.user and the route to the audit
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # Beside the embedded PostgreSQL of run.py (.audit-data/ in the clone), whatever the working
        # directory: `gunicorn --chdir examples` and `uvicorn --app-dir examples` find the same tables.
        "NAME": os.environ.get(
            "DJANGO_DB", str(Path(__file__).resolve().parents[2] / ".audit-data" / "django.sqlite3")
        ),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
