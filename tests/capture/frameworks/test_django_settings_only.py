"""Django installed the Django way: only the ``MIDDLEWARE`` entry and ``settings.AUDIT_MIDDLEWARE``, no
AuditWSGIMiddleware / AuditMiddleware around the application. It must audit on its own (WSGI and ASGI),
never twice under an outer middleware, and say loudly when nothing can audit."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from audit_middleware import AuditWriter, AuditWSGIMiddleware, BackgroundWriter
from audit_middleware.testing import MemorySink
from tests.conftest import PgTarget
from tests.django_helpers import PASSWORD, setup_django

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module", autouse=True)
def django_ready() -> None:
    setup_django()


@pytest.fixture
def pg_writer(pg: PgTarget) -> Iterator[BackgroundWriter]:
    writer = BackgroundWriter(lambda: AuditWriter(pg.dsn, schema=pg.schema))
    yield writer
    writer.close(10)


def new_user() -> Any:
    from django.contrib.auth.models import User

    name = "o" + uuid.uuid4().hex[:10]
    return User.objects.create_user(name, f"{name}@example.com", PASSWORD)


def settings_only(**audit: Any) -> Any:
    """Django's own WSGI application, its middleware built with ``AUDIT_MIDDLEWARE`` in the settings."""
    from django.core.wsgi import get_wsgi_application
    from django.test import override_settings

    with override_settings(AUDIT_MIDDLEWARE=audit):
        return get_wsgi_application()


def login_and_out(client: httpx.Client, user: Any) -> None:
    assert client.post("/site/accounts/login/", data={"login": user.username, "password": "no"}).status_code == 200
    assert client.post("/site/accounts/login/", data={"login": user.username, "password": PASSWORD}).status_code == 302
    assert client.post("/site/accounts/logout/").status_code == 302


def rows_of(pg: PgTarget) -> list[tuple[str, Any, str, str]]:
    import json

    found = []
    for row in anyio.run(pg.rows):
        metadata = json.loads(row["metadata"])
        found.append((row["action"], metadata.get("user_ref"), metadata["ip"], metadata["http"]["route"]))
    return found


def test_settings_only_wsgi_install_writes_true_rows(pg: PgTarget, pg_writer: BackgroundWriter) -> None:
    app = settings_only(writer=pg_writer)
    user = new_user()
    with httpx.Client(
        transport=httpx.WSGITransport(app=app, remote_addr="10.1.0.1"), base_url="http://testserver"
    ) as c:
        login_and_out(c, user)
        assert c.get("/nowhere/").status_code == 404
    pg_writer.flush(10)
    assert PASSWORD not in str(anyio.run(pg.rows))  # the form bodies the views read are redacted
    route = "/site/accounts/login/"
    assert rows_of(pg) == [
        ("login_failed", None, "10.1.0.1", route),
        ("login", str(user.pk), "10.1.0.1", route),
        ("logout", str(user.pk), "10.1.0.1", "/site/accounts/logout/"),
    ]


async def test_settings_only_asgi_install_writes_true_rows() -> None:
    from asgiref.sync import sync_to_async
    from django.core.asgi import get_asgi_application
    from django.test import override_settings

    sink = MemorySink()
    writer = BackgroundWriter(lambda: AuditWriter(sink=sink))
    with override_settings(AUDIT_MIDDLEWARE={"writer": writer}):
        app = get_asgi_application()
    user = await sync_to_async(new_user)()
    # (django-stubs type the scope as a dict, httpx as a MutableMapping)
    transport = httpx.ASGITransport(app=app, client=("10.1.0.2", 1234))  # type: ignore[arg-type]
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            wrong = {"login": user.username, "password": "no"}
            assert (await c.post("/site/accounts/login/", data=wrong)).status_code == 200
            right = {"login": user.username, "password": PASSWORD}
            assert (await c.post("/site/accounts/login/", data=right)).status_code == 302
            assert (await c.get("/site/accounts/logout/")).status_code == 200  # confirmation page only
        await anyio.to_thread.run_sync(writer.flush, 10)
    finally:
        await anyio.to_thread.run_sync(writer.close, 10)
    assert [(e.action, e.metadata.get("user_ref"), e.metadata["ip"]) for e in sink.events] == [
        ("login_failed", None, "10.1.0.2"),
        ("login", str(user.pk), "10.1.0.2"),
    ]


def test_outer_middleware_wins_over_the_setting() -> None:
    inner_sink, outer_sink = MemorySink(), MemorySink()
    inner = BackgroundWriter(lambda: AuditWriter(sink=inner_sink))
    outer = AuditWSGIMiddleware(settings_only(writer=inner), writer=AuditWriter(sink=outer_sink))
    user = new_user()
    try:
        transport = httpx.WSGITransport(app=outer, remote_addr="10.1.0.3")
        with httpx.Client(transport=transport, base_url="http://testserver") as c:
            login_and_out(c, user)
        outer.flush(10)
        inner.flush(10)
    finally:
        outer.close(10)
        inner.close(10)
    assert [e.action for e in outer_sink.events] == ["login_failed", "login", "logout"]
    assert inner_sink.events == []


def test_nothing_to_audit_is_said_loudly(caplog: pytest.LogCaptureFixture) -> None:
    from django.core.wsgi import get_wsgi_application

    app = get_wsgi_application()  # no AUDIT_MIDDLEWARE, no outer middleware
    with (
        caplog.at_level(logging.ERROR, "audit_middleware.django"),
        httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver") as c,
    ):
        assert c.get("/site/accounts/login/").status_code == 200
        assert c.get("/site/accounts/login/").status_code == 200
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "AUDIT_MIDDLEWARE" in errors[0] and "no audit row is written" in errors[0]


def test_invalid_setting_fails_at_startup() -> None:
    from audit_middleware import ConfigurationError

    with pytest.raises(ConfigurationError, match="no_such_option"):
        settings_only(no_such_option=1)


def test_strict_routes_need_the_wrapper() -> None:
    """A strict route promises no response without its committed row: refused rather than quietly not kept."""
    from audit_middleware import ConfigurationError

    with pytest.raises(ConfigurationError, match="strict routes"):
        settings_only(routes={"POST /transfer": {"action": "transfer", "strict": True}})
