"""Client IP behind trusted proxies, user ids from framework objects and login responses."""

from __future__ import annotations

import base64
import json
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from audit_middleware.capture.identity import (
    TrustedProxies,
    attempted_identifier,
    parse_hop,
    user_from_response,
    user_id_of,
)
from audit_middleware.errors import ConfigurationError


def jwt(payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256'})}.{part(payload)}.c2lnbmF0dXJl"


# -- client IP -----------------------------------------------------------------------------------

TRUSTED = TrustedProxies(["10.0.0.0/8", "192.168.1.1", "::1"])


@pytest.mark.parametrize(
    ("peer", "lines", "expected"),
    [
        # untrusted peer: the header is never believed
        ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),
        # trusted peer: first untrusted hop from the right
        ("10.0.0.1", ["1.2.3.4"], "1.2.3.4"),
        ("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.0.0.2"], "1.2.3.4"),
        ("10.0.0.1", ["6.6.6.6", "1.2.3.4, 10.0.0.2"], "1.2.3.4"),  # several header lines, in order
        ("10.0.0.1", ["10.1.1.1, 10.0.0.2"], "10.1.1.1"),  # all trusted: the leftmost
        ("10.0.0.1", ["1.2.3.4:5678"], "1.2.3.4"),
        ("10.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("::1", ["2001:db8::2"], "2001:db8::2"),
        # garbage stops the walk: nothing left of it is believed
        ("10.0.0.1", ["1.2.3.4, garbage"], "10.0.0.1"),
        ("10.0.0.1", ["1.2.3.4, garbage, 10.0.0.5"], "10.0.0.5"),
        ("10.0.0.1", ["unknown"], "10.0.0.1"),
        ("10.0.0.1", [""], "10.0.0.1"),
        ("10.0.0.1", ["[::1"], "10.0.0.1"),
        # no header / no peer
        ("10.0.0.1", [], "10.0.0.1"),
        (None, ["1.2.3.4"], None),
    ],
)
def test_client_ip_x_forwarded_for(peer: Any, lines: Any, expected: Any) -> None:
    assert TRUSTED.client_ip(peer, lines)[0] == expected


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["for=1.2.3.4;proto=https"], "1.2.3.4"),
        (['for=6.6.6.6, for="[2001:db8::7]:80";by=10.0.0.1'], "2001:db8::7"),
        (["for=5.5.5.5", 'For="1.2.3.4:80", for=10.0.0.9'], "1.2.3.4"),
        (["for=_hidden"], "10.0.0.1"),
        (['for="1.2.3.4, 5.6.7.8";proto=https'], "10.0.0.1"),  # a comma inside quotes is no hop separator
        (['for="[2001:db8::7]:4711";host="a, for=6.6.6.6"'], "2001:db8::7"),  # nor a quoted host's text
        # A client's unclosed quote swallowing the proxy's own element (which RFC 7239 makes quoted for
        # IPv6 or a port): the spoofed 6.6.6.6 must never be believed; the element is malformed
        (['for="6.6.6.6:x, for="[2001:db8::1]:4711"'], "10.0.0.1"),
        (['for="6.6.6.6:x', 'for="203.0.113.7:4711"'], "203.0.113.7"),  # on its own line the proxy's is intact
        # a client's garbage, an empty element or a trailing ";" cannot hide the element its proxy appends
        (["x, for=203.0.113.7"], "203.0.113.7"),
        ([", for=203.0.113.7"], "203.0.113.7"),
        (["for=6.6.6.6;, for=203.0.113.7;"], "203.0.113.7"),
        (['for="a,, for=203.0.113.7'], "203.0.113.7"),
    ],
)
def test_client_ip_rfc7239_forwarded(lines: Any, expected: Any) -> None:
    proxies = TrustedProxies(["10.0.0.0/8"], header="forwarded")
    assert proxies.client_ip("10.0.0.1", lines)[0] == expected


def test_raw_chain_is_kept_and_bounded() -> None:
    hops = ", ".join(f"1.1.1.{n}" for n in range(40))
    _ip, chain = TRUSTED.client_ip("203.0.113.9", [hops, "x" * 500])
    assert chain is not None and len(chain) == 16
    assert chain[-1] == "x" * 64


def test_wildcard_trusts_every_peer() -> None:
    assert TrustedProxies("*").client_ip("8.8.8.8", ["1.2.3.4"])[0] == "1.2.3.4"


def test_default_trusts_loopback_only() -> None:
    proxies = TrustedProxies()
    assert proxies.client_ip("127.0.0.1", ["1.2.3.4"])[0] == "1.2.3.4"
    assert proxies.client_ip("10.0.0.1", ["1.2.3.4"])[0] == "10.0.0.1"


@pytest.mark.parametrize(
    ("trusted", "header"), [(["not-an-ip"], "x-forwarded-for"), (["10.0.0.0/99"], "x-forwarded-for"), ([], "x-real-ip")]
)
def test_bad_proxy_configuration_is_rejected(trusted: Any, header: Any) -> None:
    with pytest.raises(ConfigurationError):
        TrustedProxies(trusted, header)


@pytest.mark.parametrize(
    "value", ["", "garbage", "1.2.3.4.5", "[::1", "::1]:80x", "6.6.6.6:x", "6.6.6.6:x, for=", "[::1]:http", "[::1]x"]
)
def test_parse_hop_rejects_malformed(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_hop(value)


# -- users ---------------------------------------------------------------------------------------

UID = "0d5f6f36-1f7b-4c9e-8d2a-6f0e3b7b9c11"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, None),
        ("", None),
        (UID, UID),
        (7, 7),
        (uuid.UUID(UID), uuid.UUID(UID)),
        (SimpleNamespace(id=UID), UID),
        (SimpleNamespace(pk=3), 3),
        (SimpleNamespace(identity="alice"), "alice"),
        (SimpleNamespace(id=UID, is_authenticated=False), None),
        ({"user_id": UID}, UID),
        (object(), None),
    ],
)
def test_user_id_of(user: Any, expected: Any) -> None:
    assert user_id_of(user) == expected


def test_user_id_of_survives_a_raising_property() -> None:
    class User:
        @property
        def id(self) -> Any:
            raise NotImplementedError

        identity = "bob"

    assert user_id_of(User()) == "bob"


JSON = [("content-type", "application/json")]


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        (JSON, json.dumps({"user_id": UID}).encode(), UID),
        (JSON, json.dumps({"id": UID, "email": "a@b.c"}).encode(), UID),
        (JSON, json.dumps({"user": {"id": UID}}).encode(), UID),
        (JSON, json.dumps({"access_token": jwt({"sub": UID}), "token_type": "bearer"}).encode(), UID),
        ([("content-type", "text/plain")], json.dumps({"id": UID}).encode(), None),  # not JSON: not parsed
        (JSON, b'{"id": "' + UID.encode(), None),  # truncated prefix
        (JSON, b"[1, 2]", None),
        (JSON, json.dumps({"access_token": "opaque-token"}).encode(), None),
        (JSON, json.dumps({"access_token": "a.bm90anNvbg.c"}).encode(), None),
        ([*JSON, ("set-cookie", f"fastapiusersauth={jwt({'sub': UID})}; HttpOnly; Path=/")], b"", UID),
        ([("set-cookie", "session=abc; HttpOnly")], b"", None),
    ],
)
def test_user_from_response(headers: Any, body: Any, expected: Any) -> None:
    assert user_from_response(headers, body) == expected


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/json", b'{"email": "alice@example.com", "password": "pw"}', "alice@example.com"),
        ("application/json; charset=utf-8", b'{"username": " bob "}', "bob"),
        ("application/x-www-form-urlencoded", b"username=carol&password=pw", "carol"),
        ("application/x-www-form-urlencoded", b"login=dave%40example.com", "dave@example.com"),
        ("application/json", b'{"password": "pw"}', None),
        ("application/json", b'{"email": 5}', None),
        ("application/json", b"not json", None),
        ("application/json", b'["alice"]', None),
        ("text/plain", b"username=eve", None),
        ("application/json", json.dumps({"email": "x" * 1000}).encode(), "x" * 200),
    ],
)
def test_attempted_identifier(content_type: Any, body: Any, expected: Any) -> None:
    assert attempted_identifier(content_type, body) == expected


def test_user_id_of_survives_a_lazy_user_that_fails() -> None:
    class Lazy:
        @property
        def is_authenticated(self) -> bool:
            raise RuntimeError("SynchronousOnlyOperation")

    assert user_id_of(Lazy()) is None


# -- every name the rules know, one by one (each entry of a list is a rule of its own) -------------------


@pytest.mark.parametrize(
    "field", ["username", "email", "login", "identity", "user", "user_name", "phone", "identifier"]
)
def test_attempted_identifier_reads_each_login_field(field: str) -> None:
    body = json.dumps({field: "alice@example.com", "password": "pw"}).encode()
    assert attempted_identifier("application/json", body) == "alice@example.com"


@pytest.mark.parametrize("key", ["user_id", "userId", "id", "sub", "pk"])
def test_user_from_response_reads_each_user_key(key: str) -> None:
    assert user_from_response(JSON, json.dumps({key: UID}).encode()) == UID


@pytest.mark.parametrize("key", ["access_token", "id_token", "token", "access", "jwt"])
def test_user_from_response_reads_the_subject_of_each_token_it_issues(key: str) -> None:
    body = json.dumps({key: jwt({"sub": UID}), "token_type": "bearer"}).encode()
    assert user_from_response(JSON, body) == UID


def test_forwarded_quoted_pair_in_another_parameter_keeps_the_element() -> None:
    # RFC 7239 quoted-string with a quoted-pair (\"): the element is well-formed, its for= is believed
    proxies = TrustedProxies(["10.0.0.0/8"], header="forwarded")
    assert proxies.client_ip("10.0.0.1", ['for=203.0.113.7;host="a\\"b"'])[0] == "203.0.113.7"
