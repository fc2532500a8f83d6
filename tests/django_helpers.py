"""The example Django project, set up once per process for the Django tests (WSGI and ASGI)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"
_ready: list[bool] = []


def setup_django() -> None:
    """Configure and migrate the example project (idempotent; Django sets up once per process).

    SQLite in a throwaway file, not ``:memory:``: under ASGI Django runs sync views in a worker
    thread, and every thread would get an empty in-memory database of its own.
    """
    if _ready:
        return
    sys.path.insert(0, str(ROOT / "examples"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")
    directory = tempfile.mkdtemp(prefix="audit-django-")
    atexit.register(shutil.rmtree, directory, True)
    os.environ["DJANGO_DB"] = str(Path(directory) / "db.sqlite3")
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
    call_command("migrate", verbosity=0)
    _ready.append(True)
