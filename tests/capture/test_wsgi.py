"""AuditWSGIMiddleware over raw WSGI apps (both sides checked by wsgiref.validate), recording into a MemorySink."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import FileWrapper

import pytest

from audit_middleware import AuditWriter, ConfigurationError, audit_context
from audit_middleware.capture.wsgi import USER_KEY, AuditWSGIMiddleware
from audit_middleware.redaction.redactor import RedactionConfig
from audit_middleware.testing import MemorySink
from audit_middleware.writer.threaded import BackgroundWriter
from tests.wsgi_helpers import (
    PASSWORD,
    UID,
    Audited,
    Closing,
    Environ,
    StartResponse,
    environ_for,
    json_app,
    ok_app,
    read_all,
    start_response_recorder,
)


@pytest.fixture
def opened() -> Iterator[list[Audited]]:
    made: list[Audited] = []
    yield made
    for audited in made:
        audited.close()


def audited(opened: list[Audited], app: Any, **options: Any) -> Audited:
    made = Audited(app, **options)
    opened.append(made)
    return made


# -- actions, outcome, metadata layout ------------------------------------------------------------


def test_preset_login_is_recorded_with_the_user_from_the_response(opened: list[Audited]) -> None:
    a = audited(opened, json_app({"user_id": UID}))
    response = a.request("POST", "/login", json={"email": "ann@example.com", "password": PASSWORD})
    assert response.status_code == 200
    [event] = a.events()
    assert event.action == "login"
    assert str(event.user_id) == UID
    http = event.metadata["http"]
    assert (http["method"], http["path"], http["route"], http["status"]) == ("POST", "/login", "/login", 200)
    assert event.metadata["ip"] == "10.0.0.1"
    assert event.metadata["identifier"] == "ann@example.com"
    assert event.metadata["request_id"]
    a.sink.assert_no_secret(PASSWORD)


def test_failed_login_records_login_failed_without_a_user(opened: list[Audited]) -> None:
    a = audited(opened, json_app({"user_id": UID}, status="401 Unauthorized"))
    a.request("POST", "/login", json={"email": "ann@example.com", "password": PASSWORD})
    [event] = a.events()
    assert (event.action, event.user_id, event.metadata["http"]["status"]) == ("login_failed", None, 401)


def test_unmapped_requests_are_not_recorded(opened: list[Audited]) -> None:
    app, _ = ok_app()
    a = audited(opened, app)
    assert a.request("GET", "/products").status_code == 200
    assert a.events() == []


def test_custom_routes_and_audit_unmapped(opened: list[Audited]) -> None:
    app, _ = ok_app()
    a = audited(opened, app, routes={"POST /export/<int:id>": "export_data"}, audit_unmapped=True, preset=False)
    a.request("POST", "/export/42")
    a.request("GET", "/login")
    assert [e.action for e in a.events()] == ["export_data", "http_request"]
    assert a.sink.events[0].metadata["http"]["route"] == "/export/{id}"


def test_route_template_left_by_framework_glue_wins(opened: list[Audited]) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        environ["audit_middleware.route"] = "/items/<int:id>"
        start_response("204 No Content", [])
        return []

    a = audited(opened, app, routes={"DELETE /items/<int:id>": "item_deleted"})
    a.request("DELETE", "/items/7")
    [event] = a.events()
    assert (event.action, event.metadata["http"]["route"]) == ("item_deleted", "/items/<int:id>")


def test_script_name_mount_and_unicode_path_still_match(opened: list[Audited]) -> None:
    app, _ = ok_app()
    a = audited(opened, app, routes={"GET /café": "coffee"})
    mounted = environ_for("POST", "/login", SCRIPT_NAME="/app")
    start_response, _calls = start_response_recorder()
    a.middleware(mounted, start_response).close()  # type: ignore[attr-defined]
    raw = environ_for("GET", "/café".encode().decode("latin-1"))
    a.middleware(raw, start_response).close()  # type: ignore[attr-defined]
    assert [(e.action, e.metadata["http"]["path"]) for e in a.events()] == [
        ("login_attempt", "/login"),  # (a text "ok" does not say whether the login succeeded)
        ("coffee", "/café"),
    ]


def test_client_ip_behind_a_trusted_proxy_and_spoofing_from_an_untrusted_peer(opened: list[Audited]) -> None:
    app, _ = ok_app()
    a = audited(opened, app, trusted_proxies=["10.0.0.0/8"])
    a.request("POST", "/logout", headers={"X-Forwarded-For": "203.0.113.9, 10.1.1.1"}, peer="10.0.0.2")
    a.request("POST", "/logout", headers={"X-Forwarded-For": "203.0.113.9"}, peer="198.51.100.7")
    ips = [e.metadata["ip"] for e in a.events()]
    assert ips == ["203.0.113.9", "198.51.100.7"]


# -- identity ---------------------------------------------------------------------------------------


def test_user_from_remote_user_and_from_the_user_key(opened: list[Audited]) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/password/change":
            environ[USER_KEY] = UID
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    a = audited(opened, app)
    a.request("POST", "/logout", environ_base={"REMOTE_USER": "ann"})
    a.request("POST", "/password/change")
    logout, change = a.events()
    assert (logout.action, logout.user_id, logout.metadata["user_ref"]) == ("logout", None, "ann")
    assert (change.action, str(change.user_id)) == ("password_change", UID)


def test_user_resolver_gets_the_environ(opened: list[Audited]) -> None:
    app, _ = ok_app()
    a = audited(opened, app, user_resolver=lambda environ: environ["HTTP_X_TEST_USER"])
    a.request("POST", "/logout", headers={"X-Test-User": UID})
    [event] = a.events()
    assert str(event.user_id) == UID


def test_failing_resolver_never_reaches_the_request(opened: list[Audited]) -> None:
    def broken(environ: Environ) -> Any:
        raise RuntimeError("resolver bug")

    app, _ = ok_app()
    a = audited(opened, app, user_resolver=broken)
    assert a.request("POST", "/logout").status_code == 200
    [event] = a.events()
    assert event.action == "logout" and event.user_id is None
    assert a.middleware.core.errors == 1


def test_handlers_enrich_through_audit_context(opened: list[Audited]) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        audit_context(environ).update(user=UID, method="email_link")
        start_response("202 Accepted", [("Content-Type", "text/plain")])
        return []

    a = audited(opened, app)
    a.request("POST", "/password/reset", json={"email": "ann@example.com"})
    [event] = a.events()
    assert (event.action, str(event.user_id), event.metadata["method"]) == (
        "password_reset_requested",
        UID,
        "email_link",
    )


def test_enriching_an_unmapped_request_records_it(opened: list[Audited]) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        audit_context().update(action="report_viewed")  # no argument: the ContextVar
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    a = audited(opened, app)
    a.request("GET", "/reports/1")
    assert [e.action for e in a.events()] == ["report_viewed"]


# -- the request body reaches the app intact ------------------------------------------------------


def test_content_length_body_reaches_the_app_and_is_redacted(opened: list[Audited]) -> None:
    app, seen = ok_app()
    a = audited(opened, app)
    body = json.dumps({"email": "ann@example.com", "password": PASSWORD}).encode()
    a.request("POST", "/login", data=body, content_type="application/json")
    assert seen == [body]
    [event] = a.events()
    assert event.metadata["body"]["fields"]["email"] == "ann@example.com"
    a.sink.assert_no_secret(PASSWORD)


def test_chunked_body_with_input_terminated_reaches_the_app(opened: list[Audited]) -> None:
    app, seen = ok_app()
    a = audited(opened, app, validate=False)
    body = b'{"email": "ann@example.com"}'
    environ = environ_for("POST", "/signup", body, CONTENT_TYPE="application/json", **{"wsgi.input_terminated": True})
    start_response, calls = start_response_recorder()
    result = a.middleware(environ, start_response)
    assert b"".join(result) == b"ok"
    result.close()  # type: ignore[attr-defined]
    assert seen == [body] and calls[0][0] == "200 OK"
    [event] = a.events()
    assert (event.action, event.metadata["body"]["fields"]) == ("signup", {"email": "ann@example.com"})
    assert event.metadata["body"]["size"] == len(body)


def test_body_larger_than_the_cap_reaches_the_app_whole(opened: list[Audited]) -> None:
    app, seen = ok_app()
    a = audited(opened, app, redaction=RedactionConfig(max_body_bytes=1024))
    body = json.dumps({"email": "ann@example.com", "blob": "x" * 200_000}).encode()
    a.request("POST", "/signup", data=body, content_type="application/json")
    assert hashlib.sha256(seen[0]).digest() == hashlib.sha256(body).digest()
    [event] = a.events()
    assert "x" * 2000 not in json.dumps(event.metadata)
    assert (event.metadata["body"]["size"], event.metadata["body"]["omitted"]) == (len(body), "truncated")


def test_tee_offers_readinto_only_when_the_server_stream_has_it_and_records_what_it_reads() -> None:
    from audit_middleware.capture.config import Exchange
    from audit_middleware.capture.wsgi_io import TeeInput

    class ReadOnly:  # a server stream with read() and nothing else
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def read(self, *args: Any) -> bytes:
            return self._data.read(*args)

    exchange = Exchange(0)
    assert not hasattr(TeeInput(ReadOnly(b"abc"), exchange, 8, 3), "readinto")  # werkzeug then uses read()
    body = b"0123456789abcdef"
    exchange = Exchange(0)
    tee = TeeInput(io.BytesIO(body), exchange, 10, len(body))
    buffer = bytearray(6)
    got = bytearray()
    while count := tee.readinto(buffer):
        got += buffer[:count]
    assert bytes(got) == body  # the app reads everything through readinto
    assert b"".join(exchange.body) == body[:10] and exchange.body_size == len(body) and exchange.body_complete


def test_middleware_never_reads_a_body_the_app_does_not_read(opened: list[Audited]) -> None:
    class Untouchable(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise AssertionError("the middleware read the body")

    app, _ = ok_app(read=False)
    a = audited(opened, app, validate=False)
    environ = environ_for("POST", "/login", CONTENT_TYPE="application/json", **{"wsgi.input": Untouchable()})
    start_response, _calls = start_response_recorder()
    result = a.middleware(environ, start_response)
    assert list(result) == [b"ok"]
    result.close()  # type: ignore[attr-defined]
    [event] = a.events()
    assert event.action == "login_attempt" and "body" not in event.metadata


def test_tee_supports_readline_and_iteration(opened: list[Audited]) -> None:
    lines: list[bytes] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        stream = environ["wsgi.input"]
        lines.append(stream.readline())
        lines.extend(stream)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return []

    a = audited(opened, app, validate=False)
    environ = environ_for("POST", "/signup", b"a=1\nb=2\n", CONTENT_LENGTH="8", CONTENT_TYPE="text/plain")
    start_response, _ = start_response_recorder()
    a.middleware(environ, start_response).close()  # type: ignore[attr-defined]
    assert lines == [b"a=1\n", b"b=2\n"]
    [event] = a.events()
    assert event.action == "signup"


def test_tee_takes_what_gunicorns_input_takes() -> None:
    # Keyword sizes and next(): gunicorn's Body (and io.BytesIO) accept them, and an app written against
    # them must not break when the middleware's tee stands in between.
    from audit_middleware.capture.config import Exchange
    from audit_middleware.capture.wsgi_io import TeeInput

    class GunicornLikeBody:  # the signatures of gunicorn.http.body.Body
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def read(self, size: int | None = None) -> bytes:
            return self._data.read(size)

        def readline(self, size: int | None = None) -> bytes:
            return self._data.readline(size)

        def readlines(self, size: int | None = None) -> list[bytes]:
            return self._data.readlines(size)

        def __iter__(self) -> Any:
            return self

        def __next__(self) -> bytes:
            return next(self._data)

    body = b"ab\ncd\nef\ngh\n"
    exchange = Exchange(0)
    tee = TeeInput(GunicornLikeBody(body), exchange, 64, len(body))
    assert tee.read(size=2) == b"ab"
    assert tee.readline(size=4) == b"\n"
    assert next(tee) == b"cd\n"
    assert tee.readlines(size=2) == [b"ef\n"]
    assert list(tee) == [b"gh\n"]
    assert b"".join(exchange.body) == body and exchange.body_complete


def test_start_response_takes_exc_info_by_keyword(opened: list[Audited]) -> None:
    # PEP 3333 names the parameter; wsgiref, gunicorn and werkzeug all accept it by keyword
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            raise ValueError("in the view")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], exc_info=sys.exc_info())
        return [b"err"]

    a = audited(opened, app, validate=False)
    start_response, calls = start_response_recorder()
    result = a.middleware(environ_for("POST", "/login"), start_response)
    assert list(result) == [b"err"] and calls[0][0].startswith("500")
    result.close()  # type: ignore[attr-defined]


def test_a_one_chunk_list_keeps_its_length(opened: list[Audited]) -> None:
    # PEP 3333 lets a server set Content-Length when len(result) == 1 (wsgiref, waitress, gevent do):
    # without it the response goes out close-delimited or chunked, and keep-alive is lost
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    a = audited(opened, app, validate=False)
    start_response, _ = start_response_recorder()
    result = a.middleware(environ_for("POST", "/login"), start_response)
    assert len(result) == 1  # type: ignore[arg-type]
    assert list(result) == [b"hello"]
    result.close()  # type: ignore[attr-defined]
    [event] = a.events()
    assert event.metadata["http"]["status"] == 200


# -- the response passes through --------------------------------------------------------------------


def test_generator_is_streamed_unbuffered_and_closed_once(opened: list[Audited]) -> None:
    inner = Closing([b"one", b"two", b"three"])

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return inner

    a = audited(opened, app, validate=False)
    start_response, _ = start_response_recorder()
    result = a.middleware(environ_for("POST", "/logout"), start_response)
    iterator = iter(result)
    assert next(iterator) == b"one"
    assert inner.pulled == 1  # nothing read ahead
    assert list(iterator) == [b"two", b"three"]
    assert a.events() == []  # recorded on close, not before
    result.close()  # type: ignore[attr-defined]
    result.close()  # type: ignore[attr-defined]
    assert inner.closes == 1
    [event] = a.events()
    assert event.action == "logout" and "outcome" not in event.metadata["http"]


def test_close_before_the_end_records_a_client_disconnect(opened: list[Audited]) -> None:
    inner = Closing([b"a", b"b"])

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [])
        return inner

    a = audited(opened, app, validate=False)
    start_response, _ = start_response_recorder()
    result = a.middleware(environ_for("POST", "/logout"), start_response)
    next(iter(result))
    result.close()  # type: ignore[attr-defined]
    [event] = a.events()
    assert event.metadata["http"]["outcome"] == "client_disconnected" and inner.closes == 1


def test_start_response_with_exc_info_before_headers_are_sent(opened: list[Audited]) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("lookup failed")
        except KeyError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error"]

    a = audited(opened, app, validate=False)
    start_response, calls = start_response_recorder()
    result = a.middleware(environ_for("POST", "/login"), start_response)
    assert list(result) == [b"error"]
    result.close()  # type: ignore[attr-defined]
    assert [status for status, _ in calls] == ["200 OK", "500 Internal Server Error"]
    [event] = a.events()
    assert (event.action, event.metadata["http"]["status"]) == ("login_failed", 500)


def test_start_response_with_exc_info_after_headers_reraises_through_the_middleware(opened: list[Audited]) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            raise KeyError("lookup failed")
        except KeyError:  # werkzeug's client, like a server whose headers went out, re-raises exc_info
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error"]

    a = audited(opened, app)
    with pytest.raises(KeyError, match="lookup failed"):
        a.request("POST", "/login")
    [event] = a.events()
    assert (event.action, event.metadata["http"]["status"], event.metadata["http"]["exception"]) == (
        "login_failed",
        500,
        "KeyError",
    )


def test_app_exception_propagates_and_is_recorded_as_500(opened: list[Audited]) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        raise ValueError("boom")

    a = audited(opened, app)
    with pytest.raises(ValueError, match="boom"):
        a.request("POST", "/login")
    [event] = a.events()
    http = event.metadata["http"]
    assert (event.action, http["status"], http["exception"]) == ("login_failed", 500, "ValueError")


def test_exception_while_iterating_propagates_and_is_recorded(opened: list[Audited]) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"part"
        raise OSError("disk gone")

    a = audited(opened, app, validate=False)
    start_response, _ = start_response_recorder()
    result = a.middleware(environ_for("POST", "/logout"), start_response)
    with pytest.raises(OSError, match="disk gone"):
        list(result)
    result.close()  # type: ignore[attr-defined]
    [event] = a.events()
    assert (event.action, event.metadata["http"]["exception"]) == ("logout_failed", "OSError")


def test_file_wrapper_response_is_kept_for_the_server(opened: list[Audited]) -> None:
    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"file contents"), 4)  # type: ignore[no-any-return]

    a = audited(opened, app, validate=False, routes={"GET /download": "download"})
    environ = environ_for("GET", "/download", **{"wsgi.file_wrapper": FileWrapper})
    start_response, _ = start_response_recorder()
    result = a.middleware(environ, start_response)
    assert isinstance(result, FileWrapper)  # the server can still use its sendfile path
    assert b"".join(result) == b"file contents"
    result.close()
    result.close()
    [event] = a.events()
    assert (event.action, event.metadata["http"]["status"]) == ("download", 200)


def test_legacy_write_callable_passes_bytes_through(opened: list[Audited]) -> None:
    written: list[bytes] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        write = start_response("200 OK", [("Content-Type", "application/json")])
        write(json.dumps({"id": UID}).encode())
        return []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return written.append

    a = audited(opened, app, validate=False)
    a.middleware(environ_for("POST", "/login"), start_response).close()  # type: ignore[attr-defined]
    assert written == [json.dumps({"id": UID}).encode()]
    [event] = a.events()
    assert str(event.user_id) == UID  # peeked at the written login response


# -- configuration and writers ---------------------------------------------------------------------


def test_unknown_option_fails_at_construction() -> None:
    app, _ = ok_app()
    with pytest.raises(ConfigurationError, match="colour"):
        AuditWSGIMiddleware(app, writer=AuditWriter(sink=MemorySink()), colour="red")


def test_missing_dsn_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIT_DSN", raising=False)
    app, _ = ok_app()
    with pytest.raises(ConfigurationError, match="dsn"):
        AuditWSGIMiddleware(app)


def test_bad_writer_value_fails_at_construction() -> None:
    app, _ = ok_app()
    with pytest.raises(ConfigurationError, match="writer"):
        AuditWSGIMiddleware(app, writer=42)


def test_shared_background_writer_serves_middleware_and_hand_recorded_events() -> None:
    sink = MemorySink()
    shared = BackgroundWriter(lambda: AuditWriter(sink=sink))
    try:
        app, _ = ok_app()
        middleware = AuditWSGIMiddleware(app, writer=shared)
        start_response, _ = start_response_recorder()
        middleware(environ_for("POST", "/logout"), start_response).close()  # type: ignore[attr-defined]
        shared.record_nowait("export_data", user_id=UID)
        shared.flush(5)
        assert sorted(sink.actions()) == ["export_data", "logout"]
    finally:
        shared.close(5)


def test_double_installation_records_once(opened: list[Audited]) -> None:
    app, _ = ok_app()
    sink = MemorySink()
    inner = AuditWSGIMiddleware(app, writer=AuditWriter(sink=sink))
    try:
        a = audited(opened, inner)
        a.request("POST", "/logout")
        inner.flush(5)
        assert len(a.events()) == 1 and sink.rows == []
    finally:
        inner.close(5)


def test_absent_database_never_fails_or_holds_requests(tmp_path: Path) -> None:
    app, _ = ok_app()
    # Nothing listens on port 1: every write attempt fails and is retried on the writer thread.
    middleware = AuditWSGIMiddleware(
        app,
        dsn="postgresql://postgres@127.0.0.1:1/none",
        writer_options={"retry_max": 0.2, "spool_dir": str(tmp_path)},
    )
    try:
        start_response, calls = start_response_recorder()
        for _ in range(20):
            result = middleware(environ_for("POST", "/logout"), start_response)
            assert list(result) == [b"ok"]
            result.close()  # type: ignore[attr-defined]
        assert len(calls) == 20
        stats = middleware.writer.stats()
        assert stats is not None and stats.enqueued == 20 and stats.written == 0
    finally:
        middleware.close(0.5)
    stats = middleware.writer.stats()
    # Not lost: on disk for the next writer on this database and table (counted and logged).
    assert stats is not None and stats.spooled == 20 and stats.lost_on_close == 0
    spooled = [line for path in tmp_path.rglob("*") if path.is_file() for line in path.read_text().splitlines()]
    assert sum('"logout"' in line for line in spooled) == 20


def test_concurrent_threads_each_record_their_own_event() -> None:
    # gthread, waitress, a threaded dev server: one middleware serves many threads at once, and nothing
    # of one request (body, user, client) may end up in another's row.
    def user_of(n: int) -> str:
        return f"00000000-0000-4000-8000-{n:012d}"

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        n = json.loads(read_all(environ))["n"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"user_id": user_of(n)}).encode()]

    sink = MemorySink()
    middleware = AuditWSGIMiddleware(app, writer=AuditWriter(sink=sink))
    failures: list[BaseException] = []

    def worker(thread: int) -> None:
        for i in range(100):
            n = thread * 1000 + i
            body = json.dumps({"email": f"u{n}@example.com", "password": f"{PASSWORD}-{n}", "n": n}).encode()
            environ = environ_for("POST", "/auth/login", body, CONTENT_TYPE="application/json")
            environ.update(
                CONTENT_LENGTH=str(len(body)), REMOTE_ADDR=f"10.{thread}.0.{i}", **{"wsgi.multithread": True}
            )
            try:
                result = middleware(environ, lambda status, headers, exc_info=None: lambda data: None)
                b"".join(result)
                getattr(result, "close", lambda: None)()
            except BaseException as exc:  # collected: an assertion inside a thread would be lost
                failures.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        middleware.flush(10)
    finally:
        middleware.close(5)
    assert failures == []
    assert len(sink.events) == 800
    for event in sink.events:
        n = int(event.metadata["identifier"].removeprefix("u").removesuffix("@example.com"))
        assert str(event.user_id) == user_of(n)
        assert event.metadata["ip"] == f"10.{n // 1000}.0.{n % 1000}"
    sink.assert_no_secret(PASSWORD)
