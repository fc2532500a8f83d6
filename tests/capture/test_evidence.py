"""Auth evidence: what framework glue reports decides the action, the outcome and the user."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest

from audit_middleware import AuditWriter, audit_context
from audit_middleware.capture.asgi import AuditMiddleware
from audit_middleware.capture.context import ROUTE_KEY
from audit_middleware.capture.evidence import EVIDENCE_KEY, report_auth, watch
from audit_middleware.testing import MemorySink
from tests.asgi_helpers import PASSWORD, UID, client, read_body, respond
from tests.wsgi_helpers import Audited

pytestmark = pytest.mark.anyio
OTHER = "6a1d3c55-8e0f-4f1e-9a7b-2c4d5e6f7a8b"
Reaction = Callable[[dict[str, Any]], None]


def view(react: Reaction, *, status: int = 200, route: str | None = None) -> Any:
    """A raw ASGI app standing for a framework: its view reacts (reports evidence), glue leaves the route."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await read_body(receive)
        react(scope)
        if route is not None:
            scope[ROUTE_KEY] = route
        await respond(send, status, b"<form>...</form>", b"text/html")

    return app


async def record(writer: AuditWriter, sink: MemorySink, app: Any, method: str, path: str, **kwargs: Any) -> None:
    async with client(AuditMiddleware(app, writer=writer)) as c:
        await c.request(method, path, **kwargs)
    await writer.flush()


# -- evidence decides the outcome, whatever the status ----------------------------------------------


async def test_a_re_rendered_form_announced_as_failed_is_a_failed_login(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:
        report_auth(scope, "login", succeeded=False, identifier="mallory", source="django.user_login_failed")

    await record(
        writer,
        sink,
        view(react, route="/accounts/login/"),
        "POST",
        "/accounts/login/",
        data={"login": "mallory", "password": PASSWORD},
    )
    [event] = sink.events
    assert event.action == "login_failed"
    assert event.user_id is None
    assert event.metadata["http"]["status"] == 200
    assert event.metadata["identifier"] == "mallory"
    assert event.metadata["auth"] == {"evidence": ["login_failed"], "source": "django.user_login_failed"}
    sink.assert_no_secret(PASSWORD)


async def test_an_announced_login_names_the_user_the_framework_signed_in(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:
        report_auth(scope, "login", succeeded=True, user=types.SimpleNamespace(id=UID), source="django.user_logged_in")

    await record(writer, sink, view(react, status=302), "POST", "/accounts/login/", data={"login": "alice"})
    [event] = sink.events
    assert (event.action, str(event.user_id)) == ("login", UID)


async def test_a_failure_never_names_the_user_it_was_reported_with(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:
        report_auth(scope, "login", succeeded=False, user=UID)

    await record(writer, sink, view(react), "POST", "/login", json={"email": "alice@example.com"})
    [event] = sink.events
    assert (event.action, event.user_id) == ("login_failed", None)


async def test_a_failed_password_change_keeps_the_authenticated_actor(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:
        scope["user"] = types.SimpleNamespace(id=UID)  # the framework's authenticated user
        report_auth(scope, "password_change", succeeded=False)

    await record(writer, sink, view(react), "POST", "/accounts/password/change/", data={"oldpassword": PASSWORD})
    [event] = sink.events
    assert (event.action, str(event.user_id)) == ("password_change_failed", UID)
    sink.assert_no_secret(PASSWORD)


async def test_the_routes_own_action_is_chosen_among_several(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:  # allauth signs the new user in right after the sign-up
        report_auth(scope, "signup", succeeded=True, user=UID, source="allauth.user_signed_up")
        report_auth(scope, "login", succeeded=True, user=UID, source="django.user_logged_in")

    await record(writer, sink, view(react, status=302), "POST", "/accounts/signup/", data={"email": "a@b.c"})
    [event] = sink.events
    assert (event.action, str(event.user_id)) == ("signup", UID)
    assert event.metadata["auth"] == {"evidence": ["signup", "login"], "source": "allauth.user_signed_up"}


@pytest.mark.parametrize("path", ["/accounts/login/", "/welcome/magic-link"], ids=["mapped", "unmapped"])
async def test_a_login_that_succeeded_on_a_second_try_is_a_login(
    writer: AuditWriter, sink: MemorySink, path: str
) -> None:
    def react(scope: dict[str, Any]) -> None:  # a view that tries the name as a username, then as an e-mail:
        # Django's authenticate() announces user_login_failed for the first call, then login() succeeds
        report_auth(scope, "login", succeeded=False, identifier="alice@example.com", source="django.user_login_failed")
        report_auth(scope, "login", succeeded=True, user=UID, source="django.user_logged_in")

    await record(writer, sink, view(react, status=302), "POST", path, data={"login": "alice@example.com"})
    [event] = sink.events
    assert (event.action, str(event.user_id)) == ("login", UID)
    assert event.metadata["auth"] == {"evidence": ["login_failed", "login"], "source": "django.user_logged_in"}


async def test_evidence_on_an_unmapped_route_is_recorded(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:  # a custom view that calls login() itself
        report_auth(None, "login", succeeded=True, user=UID)  # found through the ContextVar

    await record(writer, sink, view(react), "POST", "/welcome/magic-link")
    [event] = sink.events
    assert (event.action, str(event.user_id)) == ("login", UID)


async def test_a_handler_chosen_action_beats_evidence(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:
        report_auth(scope, "login", succeeded=True, user=UID)
        audit_context(scope).update(action="impersonation_start", user=OTHER)

    await record(writer, sink, view(react), "POST", "/login")
    [event] = sink.events
    assert (event.action, str(event.user_id)) == ("impersonation_start", OTHER)


# -- watched actions that were not announced did not happen ------------------------------------------


async def test_a_watched_logout_that_was_not_announced_records_nothing(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:  # allauth's GET only shows "Are you sure you want to sign out?"
        scope["user"] = types.SimpleNamespace(id=UID)
        watch(scope, {"login", "logout"})

    await record(writer, sink, view(react, route="/accounts/logout/"), "GET", "/accounts/logout/")
    assert sink.events == []


async def test_a_watched_login_post_that_signed_nobody_in_is_failed(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:  # the form was invalid before authenticate() ran: no signal
        watch(scope, {"login"})

    await record(writer, sink, view(react, route="/admin/login/"), "POST", "/admin/login/", data={"username": "x"})
    [event] = sink.events
    assert (event.action, event.user_id) == ("login_failed", None)


async def test_watching_other_actions_leaves_the_response_to_decide(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:
        watch(scope, {"logout"})

    await record(writer, sink, view(react, route="/login", status=401), "POST", "/login")
    [event] = sink.events
    assert event.action == "login_failed"


@pytest.mark.parametrize("status", [404, 405, 308])
async def test_a_watched_action_the_router_refused_records_nothing(
    writer: AuditWriter, sink: MemorySink, status: int
) -> None:
    def react(scope: dict[str, Any]) -> None:  # Flask-Security 5 answers GET /logout with 405: no view ran
        watch(scope, {"logout"})

    await record(writer, sink, view(react, status=status), "GET", "/logout")
    assert sink.events == []


async def test_a_refused_request_the_glue_does_not_watch_keeps_the_response_outcome(
    writer: AuditWriter, sink: MemorySink
) -> None:
    app = AuditMiddleware(view(lambda scope: None, status=405), writer=writer, routes={"POST /export": "export_data"})
    async with client(app) as c:
        await c.post("/export")
    await writer.flush()
    [event] = sink.events  # (a refused GET /logout on the preset is no row at all: nobody was logged out)
    assert event.action == "export_data_failed"


# -- the reporting functions ---------------------------------------------------------------------------


def test_reporting_outside_a_request_does_nothing_and_never_raises() -> None:
    report_auth(None, "login", succeeded=True, user=UID)
    watch(None, {"login"})
    report_auth(types.MappingProxyType({}), "login", succeeded=True)  # read-only: not a carrier
    report_auth(object(), "login", succeeded=True)

    class ReadOnly(dict[str, Any]):
        def __setitem__(self, key: str, value: Any) -> None:
            raise TypeError("read-only")

    report_auth(ReadOnly(), "login", succeeded=True)
    watch(ReadOnly(), {"login"})


def test_a_request_object_is_found_by_its_carrier() -> None:
    environ: dict[str, Any] = {}
    report_auth(types.SimpleNamespace(environ=environ), "logout", succeeded=True, user=UID, source="flask")
    [evidence] = environ[EVIDENCE_KEY]
    assert (evidence.action, evidence.succeeded, evidence.user, evidence.source) == ("logout", True, UID, "flask")


# -- the WSGI middleware reads the same evidence ---------------------------------------------------------


def test_wsgi_evidence_decides_the_outcome() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
        report_auth(environ, "login", succeeded=False, identifier="mallory", source="flask_login")
        start_response("302 Found", [("Location", "/login"), ("Content-Type", "text/html")])
        return [b""]

    audited = Audited(app)
    try:
        response = audited.request("POST", "/login", data={"username": "mallory", "password": PASSWORD})
        assert response.status_code == 302
        [event] = audited.events()
    finally:
        audited.close()
    assert (event.action, event.user_id, event.metadata["identifier"]) == ("login_failed", None, "mallory")
    audited.sink.assert_no_secret(PASSWORD)


async def test_a_routes_own_failed_action_names_an_announced_failure(writer: AuditWriter, sink: MemorySink) -> None:
    def react(scope: dict[str, Any]) -> None:
        report_auth(scope, "login", succeeded=False, identifier="mallory", source="django.user_login_failed")

    routes = {"POST /accounts/login/": {"action": "login", "failed_action": "login_denied"}}
    async with client(AuditMiddleware(view(react), writer=writer, routes=routes)) as c:
        await c.post("/accounts/login/", data={"login": "mallory"})
    await writer.flush()
    [event] = sink.events
    assert (event.action, event.metadata["identifier"]) == ("login_denied", "mallory")


async def test_a_route_the_user_named_keeps_its_name_and_takes_the_outcome_from_evidence(sink: MemorySink) -> None:
    # "The user's routes always win": a route mapped by hand keeps its action; the evidence decides the outcome
    # and the user (fastapi-users' AuditedUserManager reports "login" on a route the user calls "cookie_login").
    writer = AuditWriter(sink=sink)

    def succeeds(scope: dict[str, Any]) -> None:
        report_auth(scope, "login", succeeded=True, user=UID)

    def fails(scope: dict[str, Any]) -> None:
        report_auth(scope, "login", succeeded=False, identifier="mallory")

    try:
        for react in (succeeds, fails):
            app = AuditMiddleware(view(react), writer=writer, routes={"POST /auth/cookie/login": "cookie_login"})
            async with client(app) as c:
                await c.post("/auth/cookie/login", data={"username": "alice"})
        await writer.flush()
    finally:
        await writer.aclose()
    assert [(e.action, str(e.user_id) if e.user_id else None) for e in sink.events] == [
        ("cookie_login", UID),
        ("cookie_login_failed", None),
    ]
