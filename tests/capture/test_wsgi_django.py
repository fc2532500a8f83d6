"""AuditWSGIMiddleware around Django's WSGI application (the example project), driven as a WSGI server would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from werkzeug.test import Client

from audit_middleware import AuditWriter, AuditWSGIMiddleware
from audit_middleware.testing import MemorySink
from tests.conftest import PgTarget
from tests.django_helpers import PASSWORD, assert_auth_flow_recorded, setup_django


@pytest.fixture(scope="module")
def django_app() -> Any:
    """The example project's Django WSGI application."""
    setup_django()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


@pytest.fixture
def audited(django_app: Any) -> Iterator[tuple[Client, MemorySink, AuditWSGIMiddleware]]:
    sink = MemorySink()
    middleware = AuditWSGIMiddleware(django_app, writer=AuditWriter(sink=sink))
    yield Client(middleware), sink, middleware
    middleware.close(5)


def post(client: Client, path: str, body: dict[str, str]) -> Any:
    return client.post(path, json=body, environ_base={"REMOTE_ADDR": "10.0.0.5"}, buffered=True)


def test_django_auth_flow_is_audited_with_the_user_and_route(
    audited: tuple[Client, MemorySink, AuditWSGIMiddleware],
) -> None:
    from django_app.views import LAST_RESET_LINK

    client, sink, middleware = audited
    signup = post(client, "/accounts/signup/", {"username": "ann", "email": "ann@example.com", "password": PASSWORD})
    user_ref = str(json.loads(signup.data)["id"])
    post(client, "/accounts/logout/", {})
    post(client, "/accounts/login/", {"username": "ann", "password": "wrong"})
    post(client, "/accounts/login/", {"username": "ann", "password": PASSWORD})
    post(client, "/accounts/logout/", {})
    post(client, "/accounts/password/reset/", {"email": "ann@example.com"})
    assert post(client, LAST_RESET_LINK[0], {"password": "new " + PASSWORD}).status_code == 200
    middleware.flush(5)
    assert_auth_flow_recorded(sink, user_ref, "10.0.0.5")


def test_django_unaudited_request_is_untouched(audited: tuple[Client, MemorySink, AuditWSGIMiddleware]) -> None:
    client, sink, middleware = audited
    assert client.get("/nowhere/", buffered=True).status_code == 404
    middleware.flush(5)
    assert sink.rows == []


def test_django_login_lands_in_postgres(django_app: Any, pg: PgTarget) -> None:
    middleware = AuditWSGIMiddleware(django_app, dsn=pg.dsn, writer_options={"schema": pg.schema})
    client = Client(middleware)
    try:
        post(client, "/accounts/signup/", {"username": "bob", "email": "bob@example.com", "password": PASSWORD})
        post(client, "/accounts/login/", {"username": "bob", "password": "nope"})
    finally:
        middleware.close(10)
    rows = anyio.run(pg.rows)
    assert [r["action"] for r in rows] == ["signup", "login_failed"]
    metadata = json.loads(rows[0]["metadata"])
    assert metadata["body"]["fields"]["password"] != PASSWORD and metadata["identifier"] == "bob"


def test_django_glue_under_djangos_test_client(django_app: Any) -> None:
    """DjangoAuditMiddleware alone (Django's test client bypasses WSGI middleware): it fills the environ keys."""
    from django.contrib.auth.models import User
    from django.test import Client as DjangoClient

    from audit_middleware.capture.wsgi import AUDITED_KEY, ROUTE_KEY, USER_KEY

    user = User.objects.create_user("cleo", "cleo@example.com", PASSWORD)
    client = DjangoClient()
    audited = {AUDITED_KEY: True}
    login = client.post("/accounts/login/", {"username": "cleo", "password": PASSWORD}, **audited)  # type: ignore[arg-type]
    meta = login.wsgi_request.META
    assert (meta[USER_KEY], meta[ROUTE_KEY]) == (user.pk, "/accounts/login/")
    logout = client.post("/accounts/logout/", **audited)  # type: ignore[arg-type]
    assert logout.wsgi_request.META[USER_KEY] == user.pk  # taken before logout() cleared the session
    unaudited = client.post("/accounts/login/", {"username": "cleo", "password": PASSWORD})
    assert USER_KEY not in unaudited.wsgi_request.META and ROUTE_KEY not in unaudited.wsgi_request.META
