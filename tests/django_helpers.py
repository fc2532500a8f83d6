"""The example Django project, set up once per process for the Django tests (WSGI and ASGI)."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

from audit_middleware.testing import MemorySink

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


def assert_auth_flow_recorded(sink: MemorySink, user_ref: str, ip: str) -> None:
    """The example's flow (signup, logout, failed and good login, logout, reset request, reset) as
    both middlewares must record it: the user on every step but the failed login (taken before the
    view on a logout), the resolved route, the handler's enrichment, and no password or reset token."""
    from django_app.views import LAST_RESET_LINK

    events = sink.events
    assert [e.action for e in events] == [
        "signup",
        "logout",
        "login_failed",
        "login",
        "logout",
        "password_reset_requested",
        "password_reset",
    ]
    # Django's integer user ids are kept as user_ref (the column is a uuid).
    assert [e.metadata.get("user_ref") for e in events] == [user_ref, user_ref, None, *[user_ref] * 4]
    assert events[3].metadata["http"]["route"] == "/accounts/login/"
    reset = events[-1].metadata
    assert reset["http"]["route"] == "/accounts/password/reset/key/{uidb64}/{token}/"
    assert reset["method"] == "email_link" and reset["ip"] == ip
    sink.assert_no_secret(PASSWORD, LAST_RESET_LINK[0].rstrip("/").rsplit("/", 1)[1])
