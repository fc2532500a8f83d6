"""AuditMiddleware around Django's ASGI application (the example project), with DjangoAuditMiddleware."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from audit_middleware import AuditMiddleware, AuditWriter
from audit_middleware.testing import MemorySink
from tests.asgi_helpers import client
from tests.django_helpers import PASSWORD, assert_auth_flow_recorded, setup_django

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def django_asgi() -> Any:
    """The example project's Django ASGI application."""
    setup_django()
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


async def test_django_asgi_auth_flow_is_audited_with_the_user_and_route(django_asgi: Any) -> None:
    from django_app.views import LAST_RESET_LINK

    sink = MemorySink()
    writer = AuditWriter(sink=sink)
    app = AuditMiddleware(django_asgi, writer=writer)
    try:
        async with client(app, peer="10.0.0.7") as c:
            signup = await c.post(
                "/accounts/signup/", json={"username": "dora", "email": "dora@example.com", "password": PASSWORD}
            )
            user_ref = str(signup.json()["id"])
            await c.post("/accounts/logout/", json={})
            await c.post("/accounts/login/", json={"username": "dora", "password": "wrong"})
            await c.post("/accounts/login/", json={"username": "dora", "password": PASSWORD})
            await c.post("/accounts/logout/", json={})
            await c.post("/accounts/password/reset/", json={"email": "dora@example.com"})
            reset = await c.post(LAST_RESET_LINK[0], json={"password": "new " + PASSWORD})
            missing = await c.get("/nowhere/")
        assert (reset.status_code, missing.status_code) == (200, 404)
        await writer.flush()
    finally:
        await writer.aclose()
    assert_auth_flow_recorded(sink, user_ref, "10.0.0.7")
    assert json.dumps([e.metadata for e in sink.events]).count("[REDACTED]") >= 4  # every password field


async def test_django_glue_leaves_unaudited_asgi_requests_alone(django_asgi: Any) -> None:
    seen: list[MutableMapping[str, Any]] = []

    async def spy(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)
        await django_asgi(scope, receive, send)

    sink = MemorySink()
    writer = AuditWriter(sink=sink)
    try:
        async with client(AuditMiddleware(spy, writer=writer)) as c:
            assert (await c.get("/accounts/profile/")).status_code in (200, 302, 404)
        await writer.flush()
    finally:
        await writer.aclose()
    assert sink.rows == []
    assert not any(key.startswith("audit_middleware.") and key != "audit_middleware.installed" for key in seen[0])


async def test_django_glue_runs_on_the_loop_and_never_evaluates_the_lazy_user_there() -> None:
    """In an async stack the glue is a coroutine (Django adds no thread switch for it) and reads an
    unevaluated ``request.user`` through ``auser()``: evaluating it would run a blocking query."""
    from types import SimpleNamespace

    from asgiref.sync import iscoroutinefunction
    from django.utils.functional import SimpleLazyObject

    from audit_middleware.capture.context import AUDITED_KEY, USER_KEY
    from audit_middleware.capture.frameworks.django import DjangoAuditMiddleware

    async def get_response(request: Any) -> str:
        return "response"

    async def auser() -> Any:
        return SimpleNamespace(is_authenticated=True, pk=7)

    def blocking_query() -> Any:
        raise AssertionError("request.user evaluated on the event loop")

    scope: dict[str, Any] = {AUDITED_KEY: True}
    request = SimpleNamespace(
        META={}, scope=scope, user=SimpleLazyObject(blocking_query), auser=auser, resolver_match=None
    )
    middleware = DjangoAuditMiddleware(get_response)
    assert iscoroutinefunction(middleware)
    assert await middleware(request) == "response"
    assert scope[USER_KEY] == 7
    sync = DjangoAuditMiddleware(lambda request: "response")
    assert not iscoroutinefunction(sync)


async def test_django_glue_survives_a_user_that_cannot_be_loaded() -> None:
    """``auser()`` runs a query (session, user table): if it fails, the request still gets its response."""
    from types import SimpleNamespace

    from django.utils.functional import SimpleLazyObject

    from audit_middleware.capture.context import AUDITED_KEY, USER_KEY
    from audit_middleware.capture.frameworks.django import DjangoAuditMiddleware

    async def get_response(request: Any) -> str:
        return "response"

    async def auser() -> Any:
        raise ConnectionError("database unavailable")

    scope: dict[str, Any] = {AUDITED_KEY: True}
    request = SimpleNamespace(
        META={}, scope=scope, user=SimpleLazyObject(lambda: None), auser=auser, resolver_match=None
    )
    assert await DjangoAuditMiddleware(get_response)(request) == "response"
    assert USER_KEY not in scope
