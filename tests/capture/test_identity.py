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


# -- trusted proxies, case by case ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("trusted", "peer", "expected"),
    [
        (["10.0.0.0/8"], "testclient", "testclient"),  # a peer that is no address (a test client, a socket)
        (["10.0.0.0/8"], "192.168.0.1", "192.168.0.1"),  # outside every network
        (["10.0.0.0/8"], "10.200.3.4", "1.2.3.4"),
        (["10.0.0.1/8"], "10.2.3.4", "1.2.3.4"),  # a network written with host bits still means the network
        ("10.0.0.1, 10.0.0.2", "10.0.0.2", "1.2.3.4"),  # one comma-separated string, as from an env variable
        ("10.0.0.1, 10.0.0.2", "10.0.0.3", "10.0.0.3"),
        (("127.0.0.1", "::1"), "::1", "1.2.3.4"),
    ],
)
def test_each_trusted_proxy_case(trusted: Any, peer: str, expected: str) -> None:
    assert TrustedProxies(trusted).client_ip(peer, ["1.2.3.4"])[0] == expected


def test_the_default_trusts_ipv6_loopback_and_nothing_else() -> None:
    proxies = TrustedProxies()
    assert proxies.client_ip("::1", ["1.2.3.4"])[0] == "1.2.3.4"
    assert proxies.client_ip("203.0.113.5", ["1.2.3.4"])[0] == "203.0.113.5"


@pytest.mark.parametrize("trusted", [["*", "not-an-ip"], ["not-an-ip"], "10.0.0.1, not-an-ip"])
def test_a_bad_entry_is_refused_and_named_even_beside_the_wildcard(trusted: Any) -> None:
    with pytest.raises(ConfigurationError, match="not-an-ip"):
        TrustedProxies(trusted)


def test_a_bad_header_name_is_named() -> None:
    with pytest.raises(ConfigurationError, match="x-real-ip"):
        TrustedProxies([], "x-real-ip")


def test_without_a_forwarding_header_there_is_no_chain() -> None:
    assert TRUSTED.client_ip("10.0.0.1", []) == ("10.0.0.1", None)


def test_quotes_around_a_forwarded_hop_are_not_kept() -> None:
    assert TRUSTED.client_ip("10.0.0.1", ['"1.2.3.4"']) == ("1.2.3.4", ["1.2.3.4"])


# -- Forwarded (RFC 7239), element by element ------------------------------------------------------------


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["for=6.6.6.6,for=203.0.113.7"], "203.0.113.7"),  # no space after the comma
        (["proto=https;for=203.0.113.7"], "203.0.113.7"),  # for= after another parameter
        (['for="203.0.113.\\7"'], "203.0.113.7"),  # a quoted-pair inside the quoted address
        # a malformed element stops the walk: what is left of it was sent by the client and is not believed
        (["for=6.6.6.6, for=203.0.113.7 x"], "10.0.0.1"),
        (["for=6.6.6.6", "for=203.0.113.7 x"], "10.0.0.1"),
        # resynchronised at the next comma, not the last: the hops after the garbage are all walked
        (["x, for=6.6.6.6, for=10.0.0.7"], "6.6.6.6"),
    ],
)
def test_forwarded_element_rules(lines: list[str], expected: str) -> None:
    proxies = TrustedProxies(["10.0.0.0/8"], header="forwarded")
    assert proxies.client_ip("10.0.0.1", lines)[0] == expected


def test_an_element_without_for_adds_no_hop() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"], header="forwarded")
    assert proxies.client_ip("10.0.0.1", ["proto=https, for=203.0.113.7"]) == ("203.0.113.7", ["203.0.113.7"])


# -- one hop ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"[2001:db8::1]:443"', "2001:db8::1"),
        ("1.2.3.4:_hidden", "1.2.3.4"),  # an obfuscated port (RFC 7239)
        ("1.2.3.4:_a", "1.2.3.4"),
        ("[2001:db8::1]:_x", "2001:db8::1"),
    ],
)
def test_parse_hop_accepts(value: str, expected: str) -> None:
    assert str(parse_hop(value)) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("[::1", "unterminated"), ("[::1]:a1", "malformed hop"), ("1.2.3.4:_", "malformed port"), ("1.2.3.4:x", "port")],
)
def test_parse_hop_refuses_and_says_why(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hop(value)


# -- users, rule by rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ({"email": "a@example.com"}, None),  # a dict without an id names nobody
        (SimpleNamespace(user_id=UID), UID),
        (SimpleNamespace(id=None, pk=None, user_id=None, identity=UID), UID),
    ],
)
def test_user_id_of_more_shapes(user: Any, expected: Any) -> None:
    assert user_id_of(user) == expected


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ([], json.dumps({"id": UID}).encode(), None),  # no content type: not read, and never an error
        (JSON, json.dumps({"user_id": "", "id": UID}).encode(), UID),  # an empty id is no id
        ([("set-cookie", f'auth="{jwt({"sub": UID})}"; Path=/')], b"", UID),  # a quoted cookie value
        (JSON, json.dumps({"access_token": jwt({"user_id": UID})}).encode(), UID),  # user_id claim, no sub
    ],
)
def test_user_from_response_more_shapes(headers: Any, body: bytes, expected: Any) -> None:
    assert user_from_response(headers, body) == expected


@pytest.mark.parametrize("length", range(1, 9))
def test_the_subject_of_a_jwt_of_any_payload_length_is_read(length: int) -> None:
    # base64url drops its padding: each payload length needs its own, and every one must decode
    subject = "u" * length
    assert user_from_response(JSON, json.dumps({"token": jwt({"sub": subject})}).encode()) == subject


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("application/vnd.api+json", b'{"email": "a@example.com"}', "a@example.com"),
        ("application/x-www-form-urlencoded", b"username=al\xffice", "al\ufffdice"),  # bad UTF-8 replaced
        # a form of more fields than a login has is not read (bounded work on hostile input)
        ("application/x-www-form-urlencoded", b"&".join([b"f=1"] * 300 + [b"username=al"]), None),
    ],
)
def test_attempted_identifier_more_shapes(content_type: str, body: bytes, expected: Any) -> None:
    assert attempted_identifier(content_type, body) == expected
