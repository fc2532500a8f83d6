"""The example Django project, set up once per process for the Django tests (WSGI and ASGI)."""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

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
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_settings")
    directory = tempfile.mkdtemp(prefix="audit-django-")
    atexit.register(shutil.rmtree, directory, True)
    os.environ["DJANGO_DB"] = str(Path(directory) / "db.sqlite3")
    import django
    from django.apps import apps
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
    # Tables straight from the models, without replaying every app's migrations (seconds per run)
    settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}
    call_command("migrate", verbosity=0, run_syncdb=True)
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


class Trail:
    """A real Django app behind ``AuditWSGIMiddleware`` writing to PostgreSQL, driven over WSGI by httpx.

    ``rows()`` closes the middleware (flushing its writer) and returns the stored rows as
    ``(action, user_ref, metadata)``; ``assert_no_secret`` checks every stored column.
    """

    def __init__(self, app: Any, pg: Any, *, ip: str = "10.0.0.5") -> None:
        import httpx

        from audit_middleware import AuditWSGIMiddleware

        self.pg = pg
        self.middleware = AuditWSGIMiddleware(app, dsn=pg.dsn, writer_options={"schema": pg.schema})
        transport = httpx.WSGITransport(app=self.middleware, remote_addr=ip)
        self.client = httpx.Client(transport=transport, base_url="http://testserver")
        self._rows: list[Any] | None = None

    def rows(self) -> list[tuple[str, str | None, dict[str, Any]]]:
        if self._rows is None:
            import anyio

            self.client.close()
            self.middleware.close(10)
            self._rows = list(anyio.run(self.pg.rows))
        return [(r["action"], _user_ref(r), json.loads(r["metadata"])) for r in self._rows]

    def assert_no_secret(self, *secrets: str) -> None:
        self.rows()
        assert self._rows is not None
        for row in self._rows:
            text = " ".join(str(value) for value in row.values())
            for secret in secrets:
                assert not secret or secret not in text, f"secret found in the {row['action']!r} row"


def _user_ref(row: Any) -> str | None:
    if row["user_id"] is not None:
        return str(row["user_id"])
    ref = json.loads(row["metadata"]).get("user_ref")
    return None if ref is None else str(ref)


def form_token(html: str) -> str:
    """The CSRF token a Django form page carries."""
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)
