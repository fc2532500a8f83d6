"""AuditMiddleware over tiny raw ASGI apps: what is recorded, and that the app never notices."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any

import anyio
import pytest

from audit_middleware import AuditWriter, ConfigurationError
from audit_middleware.capture.asgi import AuditMiddleware
from audit_middleware.capture.context import audit_context
from audit_middleware.redaction.redactor import SkipAudit
from audit_middleware.testing import MemorySink
from tests.asgi_helpers import (
    BEARER,
    PASSWORD,
    UID,
    Driver,
    client,
    http_scope,
    make_jwt,
    ok_app,
    read_body,
    respond,
)

pytestmark = pytest.mark.anyio


def wrap(app: Any, writer: AuditWriter, **options: Any) -> AuditMiddleware:
    return AuditMiddleware(app, writer=writer, **options)


# -- what is recorded ------------------------------------------------------------------------------


async def test_login_is_recorded_with_the_metadata_layout(writer: AuditWriter, sink: MemorySink) -> None:
    app = wrap(ok_app(body=b'{"access_token": "opaque"}', content_type=b"application/json"), writer)
    async with client(app) as c:
        response = await c.post("/login", json={"email": "alice@example.com", "password": PASSWORD})
    assert response.status_code == 200 and response.json() == {"access_token": "opaque"}
    await writer.flush()
    [event] = sink.events
    assert event.action == "login"
    md = event.metadata
    assert md["ip"] == "10.0.0.1"
    assert md["user_agent"].startswith("python-httpx")
    assert md["request_id"] == str(event.id)
    assert md["http"]["method"] == "POST" and md["http"]["path"] == "/login" and md["http"]["route"] == "/login"
    assert md["http"]["status"] == 200 and md["http"]["duration_ms"] >= 0
    assert md["identifier"] == "alice@example.com"
    sink.assert_no_secret(PASSWORD)


async def test_failed_status_records_failed_action(writer: AuditWriter, sink: MemorySink) -> None:
    async with client(wrap(ok_app(401), writer)) as c:
        await c.post("/auth/jwt/login", data={"username": "bob", "password": PASSWORD})
    await writer.flush()
    assert sink.actions() == ["login_failed"]
    assert sink.events[0].metadata["identifier"] == "bob"
    assert sink.events[0].user_id is None
    sink.assert_no_secret(PASSWORD)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"routes": {"POST /thing": {"action": "thing", "failed_action": "thing_denied"}}}, "thing_denied"),
        ({"routes": {"POST /thing": {"action": "thing", "outcome": False}}}, "thing"),
        ({"routes": {"POST /thing": "thing"}, "outcome_actions": False}, "thing"),
        ({"routes": {"POST /thing": "thing"}, "failed_suffix": ".error"}, "thing.error"),
        ({"routes": {"POST /thing": "thing"}, "failure_status": 500}, "thing"),
    ],
)
async def test_failed_action_naming_is_configurable(
    writer: AuditWriter, sink: MemorySink, options: Any, expected: Any
) -> None:
    async with client(wrap(ok_app(403), writer, **options)) as c:
        await c.post("/thing")
    await writer.flush()
    assert sink.actions() == [expected]


async def test_request_id_header_is_used_when_valid(writer: AuditWriter, sink: MemorySink) -> None:
    async with client(wrap(ok_app(), writer)) as c:
        await c.post("/login", headers={"x-request-id": "req-123"})
        await c.post("/login", headers={"x-request-id": "bad id with spaces <script>"})
    await writer.flush()
    first, second = sink.events
    assert first.metadata["request_id"] == "req-123"
    assert second.metadata["request_id"] == str(second.id)


async def test_unmapped_requests_are_not_recorded_by_default(writer: AuditWriter, sink: MemorySink) -> None:
    async with client(wrap(ok_app(), writer)) as c:
        await c.get("/items")
        await c.get("/login")  # the form, not a sign-in
    await writer.flush()
    assert sink.rows == []


async def test_unmapped_requests_recorded_when_asked(writer: AuditWriter, sink: MemorySink) -> None:
    async with client(wrap(ok_app(404), writer, audit_unmapped=True)) as c:
        await c.get("/items?page=2")
    await writer.flush()
    [event] = sink.events
    assert event.action == "http_request" and event.metadata["http"]["status"] == 404
    assert "query" in event.metadata


async def test_custom_route_spec_metadata_and_callable(writer: AuditWriter, sink: MemorySink) -> None:
    def choose(request: Any, response: Any) -> Any:
        return "bulk_delete" if request.method == "DELETE" else None

    routes = {"POST /export": {"action": "export_data", "metadata": {"kind": "csv"}}, "* /items": choose}
    async with client(wrap(ok_app(), writer, routes=routes, preset=False)) as c:
        await c.post("/export")
        await c.delete("/items")
        await c.get("/items")  # the callable returned None: skipped
        await c.post("/login")  # preset disabled
    await writer.flush()
    assert sink.actions() == ["export_data", "bulk_delete"]
    assert sink.events[0].metadata["kind"] == "csv"


async def test_route_mapped_to_none_disables_a_preset_route(writer: AuditWriter, sink: MemorySink) -> None:
    async with client(wrap(ok_app(), writer, routes={"POST /token": None})) as c:
        await c.post("/token", data={"grant_type": "password"})
        await c.post("/login")
    await writer.flush()
    assert sink.actions() == ["login_attempt"]  # ("ok" as text/plain does not say whether the login succeeded)


async def test_body_capture_can_be_disabled_per_route(writer: AuditWriter, sink: MemorySink) -> None:
    routes = {"POST /quiet": {"action": "quiet", "body": False}}
    async with client(wrap(ok_app(), writer, routes=routes)) as c:
        await c.post("/quiet", json={"note": "private-ish"})
    await writer.flush()
    assert "body" not in sink.events[0].metadata
    sink.assert_no_secret("private-ish")


async def test_client_ip_from_trusted_proxy(writer: AuditWriter, sink: MemorySink) -> None:
    app = wrap(ok_app(), writer, trusted_proxies=["10.0.0.0/8"])
    async with client(app) as c:
        await c.post("/login", headers={"x-forwarded-for": "6.6.6.6, 203.0.113.7, 10.0.0.9"})
    async with client(app, peer="198.51.100.1") as c:
        await c.post("/login", headers={"x-forwarded-for": "6.6.6.6"})
    await writer.flush()
    trusted, untrusted = sink.events
    assert trusted.metadata["ip"] == "203.0.113.7"
    assert trusted.metadata["forwarded_for"] == ["6.6.6.6", "203.0.113.7", "10.0.0.9"]
    assert untrusted.metadata["ip"] == "198.51.100.1"


# -- bypass paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "root_path"),
    [
        ("/login/", ""),
        ("//login", ""),
        ("/log%69n", ""),
        ("/./login", ""),
        ("/api/login", "/api"),
        ("/api//login/", "/api"),
    ],
)
async def test_bypass_paths_are_still_audited(writer: AuditWriter, sink: MemorySink, path: Any, root_path: Any) -> None:
    app = wrap(ok_app(), writer, routes={"POST /login": "custom_login"}, preset=False)
    driver = Driver()
    await app(http_scope("POST", path, root_path=root_path), driver.receive, driver.send)
    await writer.flush()
    assert sink.actions() == ["custom_login"]


# -- the app never notices -----------------------------------------------------------------------------


async def test_body_passthrough_is_byte_exact_chunked_and_large(writer: AuditWriter, sink: MemorySink) -> None:
    payload = bytes(range(256)) * 4096 * 3  # 3 MiB
    chunks = [payload[i : i + 65536 + 17] for i in range(0, len(payload), 65536 + 17)]
    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await read_body(receive))
        await respond(send, body=hashlib.sha256(seen[0]).hexdigest().encode())

    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    driver = Driver(messages)
    middleware = wrap(app, writer, routes={"POST /upload": "upload"})
    await middleware(
        http_scope("POST", "/upload", headers=[(b"content-type", b"application/octet-stream")]),
        driver.receive,
        driver.send,
    )
    assert seen[0] == payload
    assert driver.body == hashlib.sha256(payload).hexdigest().encode()
    await writer.flush()
    [event] = sink.events
    assert event.action == "upload"
    assert len(sink.rows[0][3]) < 200_000  # only a capped, described prefix is kept


async def test_messages_reach_the_app_unchanged(writer: AuditWriter, sink: MemorySink) -> None:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b"a", "more_body": True},
        {"type": "http.request", "body": b"b"},
    ]
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append(await receive())
        got.append(await receive())
        got.append(await receive())  # the client is gone: http.disconnect is delivered as before
        await respond(send)

    driver = Driver(list(messages))
    await wrap(app, writer)(http_scope(), driver.receive, driver.send)
    assert got[0] is driver.received[0] and got[1] is driver.received[1]
    assert got[2] == {"type": "http.disconnect"} and got[2] is driver.received[2]
    assert [m["type"] for m in driver.sent] == ["http.response.start", "http.response.body"]


async def test_handler_that_never_reads_the_body_is_not_made_to(writer: AuditWriter, sink: MemorySink) -> None:
    driver = Driver([{"type": "http.request", "body": b"x" * 10, "more_body": True}])
    await wrap(ok_app(413, read=False), writer)(http_scope(), driver.receive, driver.send)
    assert driver.receive_calls == 0
    await writer.flush()
    assert sink.actions() == ["login_failed"]


async def test_streaming_response_is_not_buffered(writer: AuditWriter, sink: MemorySink) -> None:
    first_chunk_seen = anyio.Event()

    async def sse(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await first_chunk_seen.wait()  # deadlocks if the middleware held the first chunk back
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": False})

    driver = Driver()
    outer_send = driver.send

    async def send(message: Any) -> None:
        await outer_send(message)
        if message.get("body") == b"data: 1\n\n":
            first_chunk_seen.set()

    app = wrap(sse, writer, routes={"GET /events": "subscribe"})
    with anyio.fail_after(5):
        await app(http_scope("GET", "/events"), driver.receive, send)
    assert driver.body == b"data: 1\n\ndata: 2\n\n"
    await writer.flush()
    assert sink.events[0].metadata["http"]["status"] == 200


async def test_app_exception_propagates_unchanged_and_is_recorded_as_500(writer: AuditWriter, sink: MemorySink) -> None:
    error = ValueError("boom")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise error

    driver = Driver()
    with pytest.raises(ValueError) as info:
        await wrap(app, writer)(http_scope(), driver.receive, driver.send)
    assert info.value is error
    await writer.flush()
    [event] = sink.events
    assert event.action == "login_failed"
    assert event.metadata["http"]["status"] == 500 and event.metadata["http"]["exception"] == "ValueError"


async def test_client_disconnect_before_the_response_is_recorded(writer: AuditWriter, sink: MemorySink) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    driver = Driver([{"type": "http.request", "body": b"{}", "more_body": True}, {"type": "http.disconnect"}])
    await wrap(app, writer)(http_scope(), driver.receive, driver.send)
    await writer.flush()
    [event] = sink.events
    assert event.metadata["http"]["status"] is None
    assert event.metadata["http"]["outcome"] == "client_disconnected"


async def test_send_failure_after_disconnect_is_recorded_and_reraised(writer: AuditWriter, sink: MemorySink) -> None:
    async def failing_send(message: Any) -> None:
        raise OSError("client went away")

    driver = Driver()
    with pytest.raises(OSError):
        await wrap(ok_app(), writer)(http_scope(), driver.receive, failing_send)
    await writer.flush()
    assert sink.events[0].metadata["http"]["outcome"] == "client_disconnected"


async def test_cancellation_propagates_and_is_recorded(writer: AuditWriter, sink: MemorySink) -> None:
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(30)

    driver = Driver()
    task = asyncio.ensure_future(wrap(slow, writer)(http_scope(), driver.receive, driver.send))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await writer.flush()
    assert sink.events[0].metadata["http"]["outcome"] == "client_disconnected"


async def test_non_http_scopes_pass_through(writer: AuditWriter, sink: MemorySink) -> None:
    seen = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    driver = Driver()
    await wrap(app, writer)({"type": "websocket", "path": "/login"}, driver.receive, driver.send)
    assert seen == ["websocket"] and sink.rows == []


async def test_double_installation_records_once(writer: AuditWriter, sink: MemorySink) -> None:
    app = wrap(wrap(ok_app(401), writer), writer)
    async with client(app) as c:
        await c.post("/login")
    await writer.flush()
    assert sink.actions() == ["login_failed"]


# -- users -----------------------------------------------------------------------------------------


async def test_user_from_scope_user_set_by_auth_middleware(writer: AuditWriter, sink: MemorySink) -> None:
    class User:
        is_authenticated = True
        identity = UID

    async def with_user(scope: Any, receive: Any, send: Any) -> None:
        scope["user"] = User()
        await ok_app()(scope, receive, send)

    async with client(wrap(with_user, writer, routes={"POST /export": "export_data"})) as c:
        await c.post("/export")
    await writer.flush()
    assert str(sink.events[0].user_id) == UID


async def test_client_sent_token_is_never_trusted_for_the_user(writer: AuditWriter, sink: MemorySink) -> None:
    async with client(wrap(ok_app(), writer, routes={"POST /export": "export_data"})) as c:
        await c.post("/export", headers={"authorization": f"Bearer {BEARER}"})
    await writer.flush()
    assert sink.events[0].user_id is None and "user_ref" not in sink.events[0].metadata
    sink.assert_no_secret(BEARER)


@pytest.mark.parametrize("is_async", [False, True])
async def test_user_resolver_sync_and_async(writer: AuditWriter, sink: MemorySink, is_async: Any) -> None:
    def resolve(scope: Any) -> Any:
        return scope["headers_user"]

    async def aresolve(scope: Any) -> Any:
        return scope["headers_user"]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope["headers_user"] = UID
        await ok_app()(scope, receive, send)

    options = {"user_resolver": aresolve if is_async else resolve, "routes": {"POST /export": "export_data"}}
    async with client(wrap(app, writer, **options)) as c:
        await c.post("/export")
    await writer.flush()
    assert str(sink.events[0].user_id) == UID


@pytest.mark.parametrize("is_async", [False, True])
async def test_resolver_exception_never_reaches_the_request(
    writer: AuditWriter, sink: MemorySink, is_async: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def resolve(scope: Any) -> Any:
        raise KeyError("s3ss10n-id")  # a session store lookup: the message is the session id

    async def aresolve(scope: Any) -> Any:
        raise KeyError("s3ss10n-id")

    app = wrap(ok_app(), writer, user_resolver=aresolve if is_async else resolve, routes={"POST /x": "x"})
    with caplog.at_level(logging.WARNING, "audit_middleware"):
        async with client(app) as c:
            response = await c.post("/x")
    assert response.status_code == 200
    await writer.flush()
    assert sink.actions() == ["x"] and sink.events[0].user_id is None
    assert app.core.errors == 1 and "user_resolver failed (KeyError at test_asgi.py:" in caplog.text
    assert "s3ss10n-id" not in caplog.text  # logged by class and place, never by message


async def test_a_resolver_that_returns_a_credential_never_stores_it(writer: AuditWriter, sink: MemorySink) -> None:
    token = make_jwt({"sub": "alice"})
    app = wrap(ok_app(), writer, routes={"POST /x": "x"}, user_resolver=lambda scope: token)
    async with client(app) as c:
        await c.post("/x")
    await writer.flush()
    [event] = sink.events
    assert event.user_id is None and event.metadata["user_ref"] == "[REDACTED]"
    sink.assert_no_secret(token)


async def test_logout_resolves_the_user_before_the_session_is_destroyed(writer: AuditWriter, sink: MemorySink) -> None:
    sessions = {"s1": UID}

    def resolve(scope: Any) -> Any:
        return sessions.get("s1")

    async def logout(scope: Any, receive: Any, send: Any) -> None:
        sessions.clear()
        await ok_app()(scope, receive, send)

    async with client(wrap(logout, writer, user_resolver=resolve)) as c:
        await c.post("/auth/logout")
    await writer.flush()
    assert sink.actions() == ["logout"] and str(sink.events[0].user_id) == UID


async def test_login_user_comes_from_the_apps_own_response(writer: AuditWriter, sink: MemorySink) -> None:
    body = b'{"user_id": "%s", "token_type": "bearer"}' % UID.encode()
    async with client(wrap(ok_app(body=body, content_type=b"application/json"), writer)) as c:
        response = await c.post("/login", json={"username": "alice", "password": PASSWORD})
    assert response.content == body
    await writer.flush()
    assert str(sink.events[0].user_id) == UID


# -- enrichment ------------------------------------------------------------------------------------


async def test_handler_enriches_its_event(writer: AuditWriter, sink: MemorySink) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        audit_context(scope).update(user=UID, method="email_link")
        await ok_app()(scope, receive, send)

    async with client(wrap(app, writer)) as c:
        await c.post("/auth/reset-password", json={"token": "t0k3n-secret", "password": PASSWORD})
    await writer.flush()
    [event] = sink.events
    assert event.action == "password_reset" and str(event.user_id) == UID
    assert event.metadata["method"] == "email_link"
    sink.assert_no_secret(PASSWORD, "t0k3n-secret")


async def test_contextvar_enrichment_and_action_override(writer: AuditWriter, sink: MemorySink) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        audit_context().update(action="custom_action", rows=3)
        await ok_app(500)(scope, receive, send)

    async with client(wrap(app, writer)) as c:
        await c.post("/login")
    await writer.flush()
    assert sink.actions() == ["custom_action"] and sink.events[0].metadata["rows"] == 3


async def test_enrichment_on_an_unmapped_route_records_it(writer: AuditWriter, sink: MemorySink) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        audit_context(scope).update(action="export_data", rows=12)
        await ok_app()(scope, receive, send)

    async with client(wrap(app, writer)) as c:
        await c.get("/reports/export")
    await writer.flush()
    assert sink.actions() == ["export_data"] and sink.events[0].metadata["rows"] == 12


async def test_handler_can_skip_its_event(writer: AuditWriter, sink: MemorySink) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        audit_context(scope).skip()
        await ok_app()(scope, receive, send)

    async with client(wrap(app, writer)) as c:
        await c.post("/login")
    await writer.flush()
    assert sink.rows == []


# -- failures inside auditing ----------------------------------------------------------------------


async def test_processor_can_drop_an_event(writer: AuditWriter, sink: MemorySink) -> None:
    def drop(event: Any) -> Any:
        raise SkipAudit

    app = wrap(ok_app(), writer, processors=[drop])
    async with client(app) as c:
        await c.post("/login")
    await writer.flush()
    assert sink.rows == [] and app.core.skipped == 1


async def test_failure_inside_auditing_still_records_a_minimal_event(writer: AuditWriter, sink: MemorySink) -> None:
    def broken(request: Any, response: Any) -> None:
        raise KeyError("bug in a user callable")

    app = wrap(ok_app(), writer, routes={"POST /x": broken})
    async with client(app) as c:
        response = await c.post("/x", json={"password": PASSWORD})
    assert response.status_code == 200
    await writer.flush()
    [event] = sink.events
    assert event.metadata["_audit"]["error"] == "KeyError" and event.metadata["http"]["status"] == 200
    assert app.core.errors == 1
    sink.assert_no_secret(PASSWORD)


async def test_a_failure_inside_auditing_is_logged_by_where_it_happened_never_by_its_message(
    writer: AuditWriter, sink: MemorySink, caplog: pytest.LogCaptureFixture
) -> None:
    def action_from_body(request: Any, response: Any) -> str:
        return str(int(request.body))  # fails on this body, and the error message quotes it

    app = wrap(ok_app(), writer, routes={"POST /x": action_from_body})
    with caplog.at_level(logging.WARNING, "audit_middleware"):
        async with client(app) as c:
            await c.post("/x", content=PASSWORD.encode(), headers={"content-type": "text/plain"})
    await writer.flush()
    assert sink.events[0].metadata["_audit"]["error"] == "ValueError"
    assert "ValueError at test_asgi.py:" in caplog.text and "in action_from_body" in caplog.text
    assert PASSWORD not in caplog.text


async def test_recording_after_the_writer_closed_never_fails_the_request(writer: AuditWriter, sink: MemorySink) -> None:
    app = wrap(ok_app(), writer)
    await writer.aclose()
    async with client(app) as c:
        response = await c.post("/login")
    assert response.status_code == 200 and app.core.errors == 2  # the writer refused to start and to take the event


def test_invalid_configuration_fails_at_construction(sink: MemorySink) -> None:
    writer = AuditWriter(sink=sink)
    with pytest.raises(TypeError, match="bogus_option"):
        AuditMiddleware(ok_app(), writer=writer, bogus_option=1)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="failure_status"):
        AuditMiddleware(ok_app(), writer=writer, failure_status=99)
    with pytest.raises(ConfigurationError, match="longer than 100"):
        AuditMiddleware(ok_app(), writer=writer, routes={"POST /x": "a" * 101})
    with pytest.raises(ConfigurationError, match="GET /x/"):
        AuditMiddleware(ok_app(), writer=writer, routes={"GET /x/{id:nope}": "a"})


def test_missing_dsn_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIT_DSN", raising=False)
    with pytest.raises(ConfigurationError, match="dsn"):
        AuditMiddleware(ok_app())


# -- no secret in any row ----------------------------------------------------------------------------

SECRETS = {
    "password": "pw-Zq8#kL2!vX",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sIgNaTuRe_secret_1",
    "cookie": "sessionid=cookie-secret-value-42",
    "api_key": "ak_live_51HsecretKEY",
    "reset_token": "rtok-secret-77f0a1",
    "query_token": "qtok-secret-9b2c",
    "client_secret": "cs-secret-4d4d",
    "card": "4111111111111111",
}


async def test_no_secret_reaches_any_row(writer: AuditWriter, sink: MemorySink) -> None:
    app = wrap(ok_app(body=b'{"ok": true}', content_type=b"application/json"), writer, audit_unmapped=True)
    headers = {
        "authorization": f"Bearer {SECRETS['bearer']}",
        "cookie": SECRETS["cookie"],
        "x-api-key": SECRETS["api_key"],
    }
    async with client(app) as c:
        await c.post(
            "/auth/jwt/login",
            json={"username": "alice", "password": SECRETS["password"], "card_number": SECRETS["card"]},
            headers=headers,
        )
        await c.post(f"/reset/{SECRETS['reset_token']}", data={"password": SECRETS["password"]})
        await c.get(f"/items?access_token={SECRETS['query_token']}&page=1", headers=headers)
        await c.post(
            "/oauth/token", data={"grant_type": "client_credentials", "client_secret": SECRETS["client_secret"]}
        )
        await c.post("/login", content=b'{"password": "' + SECRETS["password"].encode() + b'", broken', headers=headers)
    await writer.flush()
    # ({"ok": true} names no user and issues no credential: the logins are only attempts)
    assert sink.actions() == ["login_attempt", "password_reset", "http_request", "login_attempt", "login_attempt"]
    sink.assert_no_secret(*SECRETS.values())


CANARY = "Zq9CANARYx7Wv"  # a secret no value detector recognises by its shape: only its place can give it away


@pytest.mark.parametrize(
    ("method", "url", "request_options"),
    [
        ("POST", "/api/form", {"json": {"fields": [{"name": "email", "value": "a@x"},
                                                   {"name": "password", "value": CANARY}]}}),
        ("POST", "/api/users", {"json": {"credentials": [{"type": "password", "value": CANARY, "temporary": False}]}}),
        ("POST", "/api/hook", {"json": {"payload": '{"user": "al", "password": "' + CANARY + '"}'}}),
        ("POST", "/graphql", {"json": {"query": f'mutation {{ login(user: "al", password: "{CANARY}") {{ ok }} }}'}}),
        ("POST", "/api/form", {"data": {"user[email]": "a@x", "user[security_answer]": CANARY}}),
        ("GET", f"/download?X-Amz-Expires=60&X-Amz-Signature={CANARY}", {}),
        ("GET", f"/legacy/login?user=al&pw={CANARY}", {}),
        # preset routes whose secret travels under a bare "key"
        ("POST", "/dj-rest-auth/registration/verify-email/", {"json": {"key": CANARY}}),
        ("POST", "/_allauth/browser/v1/auth/password/reset", {"json": {"key": CANARY, "password": "x"}}),
        ("POST", "/api/token/refresh/", {"json": {"refresh": CANARY}}),  # SimpleJWT's body, an opaque token here
    ],
    ids=["name-value-pairs", "keycloak-credentials", "json-in-a-string", "graphql-inline", "bracket-form-key",
         "presigned-url", "pw-query", "dj-rest-auth-verify-email-key", "allauth-headless-reset-key",
         "token-refresh-body"],
)  # fmt: skip
async def test_a_secret_in_a_less_usual_place_never_reaches_a_row(
    writer: AuditWriter, sink: MemorySink, method: str, url: str, request_options: dict[str, Any]
) -> None:
    app = wrap(ok_app(body=b'{"ok": true}', content_type=b"application/json"), writer, audit_unmapped=True)
    async with client(app) as c:
        await c.request(method, url, **request_options)
    await writer.flush()
    assert len(sink.rows) == 1
    sink.assert_no_secret(CANARY)


async def test_interleaved_requests_each_record_their_own_event(writer: AuditWriter, sink: MemorySink) -> None:
    # Every request yields at each step (chunked body, handler, response), so 300 of them interleave on
    # the loop: nothing of one request (body, user, client, enrichment) may end up in another's row.
    async def app(scope: Any, receive: Any, send: Any) -> None:
        n = json.loads(await read_body(receive))["n"]
        await asyncio.sleep(0)
        audit_context().update(n=n)  # the zero-argument helper finds this request's event
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": json.dumps({"user_id": user_of(n)}).encode()})

    def user_of(n: int) -> str:
        return f"00000000-0000-4000-8000-{n:012d}"

    async def one(middleware: AuditMiddleware, n: int) -> None:
        body = json.dumps({"email": f"u{n}@example.com", "password": f"{PASSWORD}-{n}", "n": n}).encode()
        chunks = [body[i : i + 7] for i in range(0, len(body), 7)]

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0)
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

        async def send(message: Any) -> None:
            await asyncio.sleep(0)

        headers = [(b"content-type", b"application/json")]
        await middleware(http_scope("POST", "/auth/login", headers=headers, client=(f"10.9.0.{n}", 1)), receive, send)

    middleware = wrap(app, writer)
    await asyncio.gather(*(one(middleware, n) for n in range(1, 301)))
    await writer.flush()
    assert len(sink.events) == 300
    for event in sink.events:
        n = event.metadata["n"]
        assert str(event.user_id) == user_of(n)
        assert (event.metadata["identifier"], event.metadata["ip"]) == (f"u{n}@example.com", f"10.9.0.{n}")
    sink.assert_no_secret(PASSWORD)


async def test_secret_path_segment_is_masked_but_the_route_kept(writer: AuditWriter, sink: MemorySink) -> None:
    async with client(wrap(ok_app(), writer)) as c:
        await c.post("/reset/" + SECRETS["reset_token"], data={"password": SECRETS["password"]})
    await writer.flush()
    http = sink.events[0].metadata["http"]
    assert http["route"] == "/reset/{token}" and http["path"].startswith("/reset/")
    sink.assert_no_secret(*SECRETS.values())


async def test_body_size_counts_the_whole_streamed_body(writer: AuditWriter, sink: MemorySink) -> None:
    big = b'{"note": "' + b"x" * 200_000 + b'"}'
    async with client(wrap(ok_app(), writer, routes={"POST /notes": "note"})) as c:
        await c.post("/notes", content=big, headers={"content-type": "application/json"})
    await writer.flush()
    body = sink.events[0].metadata["body"]
    assert body["size"] == len(big) and body["omitted"] == "truncated"


async def test_multipart_upload_keeps_file_facts_never_contents(writer: AuditWriter, sink: MemorySink) -> None:
    content = b"TOP-SECRET-FILE-CONTENTS " * 100
    async with client(wrap(ok_app(), writer, routes={"POST /upload": "upload"})) as c:
        await c.post("/upload", data={"title": "q3 report"}, files={"doc": ("report.pdf", content, "application/pdf")})
    await writer.flush()
    fields = sink.events[0].metadata["body"]["fields"]
    assert fields["title"] == "q3 report"
    assert fields["doc"]["filename"] == "report.pdf" and fields["doc"]["size"] == len(content)
    sink.assert_no_secret("TOP-SECRET-FILE-CONTENTS")
