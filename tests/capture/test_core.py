"""AuditCore.build_event from plain values, as both middlewares call it (bytes or str headers)."""

from __future__ import annotations

from typing import Any

import pytest

from audit_middleware.capture.context import AuditContext
from audit_middleware.capture.core import AuditCore, RequestInfo, ResponseInfo
from audit_middleware.errors import ConfigurationError

UID = "0d5f6f36-1f7b-4c9e-8d2a-6f0e3b7b9c11"


def request(headers: Any = (), **kw: Any) -> Any:
    values: dict[str, Any] = {"method": "POST", "path": "/login", "client": "10.0.0.1"}
    values.update(kw)
    return RequestInfo(headers=headers, **values)


@pytest.mark.parametrize(
    "headers",
    [
        [(b"user-agent", b"ua/1"), (b"x-request-id", b"rid-1"), (b"x-forwarded-for", b"1.2.3.4")],
        [("user-agent", "ua/1"), ("X-Request-ID", "rid-1"), ("X-Forwarded-For", "1.2.3.4")],  # WSGI style
    ],
)
def test_bytes_and_str_headers_give_the_same_event(headers: Any) -> None:
    core = AuditCore(trusted_proxies=["10.0.0.0/8"])
    event = core.build_event(request(headers), ResponseInfo(status=200), core.match("POST", "/login"))
    assert event is not None and event.action == "login"
    md = dict(event.metadata or {})
    assert (md["ip"], md["user_agent"], md["request_id"]) == ("1.2.3.4", "ua/1", "rid-1")
    assert md["forwarded_for"] == ["1.2.3.4"]


def test_forwarded_chain_and_request_id_go_through_the_value_detectors() -> None:
    # Both are client-controlled free text: a proxy chain can carry garbage, and an X-Request-ID can be
    # a token (the charset check lets a JWT through).
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    forwarded = f"1.2.3.4, Bearer abcdef0123456789, password=hunter2, {jwt}".encode()
    headers = [(b"x-forwarded-for", forwarded), (b"x-request-id", jwt.encode())]
    core = AuditCore(trusted_proxies=["0.0.0.0/0"])
    event = core.build_event(request(headers), ResponseInfo(status=200), core.match("POST", "/login"))
    assert event is not None and event.metadata is not None
    text = repr(event.metadata)
    assert "abcdef0123456789" not in text and "hunter2" not in text and jwt not in text
    assert event.metadata["forwarded_for"][0] == "1.2.3.4"
    assert event.metadata["request_id"] == str(event.id)  # a token is no request id: a generated one instead


def test_an_authenticated_user_is_never_overridden_by_the_response_body() -> None:
    # On routes the preset reads the user from (login, signup, token), a response that echoes what the
    # client sent ({"id": "admin"}) must not rename an authenticated actor
    core = AuditCore()
    body = b'{"id": "admin", "name": "my phone"}'
    headers = [(b"content-type", b"application/json")]
    match = core.match("POST", "/auth/register")
    assert match is not None and match.spec is not None and match.spec.user_from_response  # the preset's signup
    authenticated = ResponseInfo(status=201, headers=headers, body=body, user=UID)
    event = core.build_event(request(path="/auth/register"), authenticated, match)
    assert event is not None and event.user_id == UID
    anonymous = ResponseInfo(status=201, headers=headers, body=b'{"id": "' + UID.encode() + b'"}')
    event = core.build_event(request(path="/auth/register"), anonymous, core.match("POST", "/auth/register"))
    assert event is not None and event.user_id == UID  # nobody authenticated yet: the app's response names them


def test_a_numeric_user_id_is_kept_even_when_it_passes_luhn() -> None:
    core = AuditCore()
    user = "456226577798135801"  # an 18-digit snowflake id that happens to pass the card check
    response = ResponseInfo(status=200, user=user)
    event = core.build_event(request(path="/items"), response, core.match("POST", "/auth/login"))
    assert event is not None and event.user_id == user


def test_an_exception_after_a_complete_response_keeps_the_outcome_the_client_got() -> None:
    core = AuditCore()
    body = b'{"user_id": "' + UID.encode() + b'"}'
    headers = [(b"content-type", b"application/json")]
    done = ResponseInfo(status=200, headers=headers, body=body, completed=True, exception="RuntimeError")
    event = core.build_event(request(), done, core.match("POST", "/login"))
    assert event is not None and (event.action, event.user_id) == ("login", UID)
    assert event.metadata is not None and event.metadata["http"]["exception"] == "RuntimeError"
    cut = ResponseInfo(status=200, headers=headers, body=body, completed=False, exception="RuntimeError")
    event = core.build_event(request(), cut, core.match("POST", "/login"))
    assert event is not None and (event.action, event.user_id) == ("login_failed", None)


def test_unmatched_request_gives_no_event() -> None:
    core = AuditCore()
    assert core.build_event(request(path="/items"), ResponseInfo(status=200), None) is None


def test_context_user_wins_and_metadata_is_merged() -> None:
    core = AuditCore()
    context = AuditContext().update(user=UID, method="email_link")
    event = core.build_event(request(), ResponseInfo(status=200), core.match("POST", "/login"), context)
    assert event is not None and event.user_id == UID and dict(event.metadata or {})["method"] == "email_link"


def test_exception_counts_as_500_and_failed() -> None:
    core = AuditCore()
    event = core.build_event(request(), ResponseInfo(exception="ValueError"), core.match("POST", "/login"))
    assert event is not None and event.action == "login_failed"
    assert dict(event.metadata or {})["http"]["status"] == 500


def test_root_path_is_stripped_for_matching_and_storage() -> None:
    core = AuditCore(routes={"POST /login": "custom"}, preset=False)
    match = core.match("POST", "/api/login", "/api")
    event = core.build_event(request(path="/api/login", root_path="/api"), ResponseInfo(status=200), match)
    assert event is not None and event.action == "custom" and dict(event.metadata or {})["http"]["route"] == "/login"


def test_resolver_errors_are_counted_not_raised() -> None:
    def resolver(carrier: Any) -> Any:
        raise RuntimeError("nope")

    core = AuditCore(user_resolver=resolver)
    assert core.resolve_user({}) is None and core.errors == 1
    assert AuditCore().resolve_user({}) is None


def test_make_writer_uses_the_given_writer() -> None:
    shared = object()
    assert AuditCore(writer=shared).make_writer() == (shared, False)


def test_config_and_options_are_exclusive() -> None:
    from audit_middleware.capture.core import MiddlewareConfig

    with pytest.raises(ConfigurationError, match="either"):
        AuditCore(MiddlewareConfig(), preset=False)
    with pytest.raises(ConfigurationError, match="redaction"):
        AuditCore(redaction={"max_body_bytes": 1})
