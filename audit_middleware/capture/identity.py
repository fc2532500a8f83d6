"""Who did it and from where: client IP behind trusted proxies, and user ids from plain values.

Client IP follows ``uvicorn/middleware/proxy_headers.py``: trusted proxies are parsed once into
``ipaddress`` objects; the direct peer is the client unless it is trusted, in which case the
forwarding header (``X-Forwarded-For``, all lines in order, or RFC 7239 ``Forwarded``) is walked
right to left to the first untrusted hop. Unlike uvicorn, a malformed entry stops the walk (it
cannot be believed): the client is then the nearest hop we could parse. Garbage never raises.

User ids come from the framework's user object (``identity``/``id``/``pk``), from the app's own
response on login-type routes (JSON ``user_id``/``id``/``sub``, or the ``sub`` of a JWT the response
issues, in its body or a ``Set-Cookie``), never from anything the client sent.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ..errors import ConfigurationError

__all__ = [
    "IDENTIFIER_FIELDS",
    "TrustedProxies",
    "attempted_identifier",
    "parse_hop",
    "user_from_response",
    "user_id_of",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_CHAIN = 16  # forwarded hops kept in metadata
MAX_HOP_LENGTH = 64
MAX_IDENTIFIER = 200
IDENTIFIER_FIELDS = ("username", "email", "login", "identity", "user", "user_name", "phone", "identifier")
_USER_KEYS = ("user_id", "userId", "id", "sub", "pk")
_TOKEN_KEYS = ("access_token", "id_token", "token", "access", "jwt")
_JWT = re.compile(r"^[A-Za-z0-9_-]{2,}\.([A-Za-z0-9_-]{2,})\.[A-Za-z0-9_-]*$")
# One RFC 7239 forwarded-pair: a token name, "=", a token or a quoted-string (lenient: unquoted values may
# hold the ":" and "[]" that proxies ought to quote). After it comes ";" (next pair), "," (next element) or
# the end; anything else, such as a client's unclosed quote that swallowed the proxy's own element, makes
# the element malformed.
_FORWARDED_PAIR = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;,"]*)\s*')
MALFORMED_HOP = "<malformed>"  # never parses as an address: the walk stops there


def forwarded_for(line: str) -> list[str]:
    """The ``for=`` values of one ``Forwarded`` header line, element by element (quotes removed).

    A malformed element gives :data:`MALFORMED_HOP` (the walk stops there: nothing left of it is
    believed) and parsing resumes after the next comma, so a client's garbage cannot hide the elements
    its proxies append. Empty elements and elements without ``for=`` are skipped.
    """
    hops: list[str] = []
    position, end = 0, len(line)
    found: str | None = None
    malformed = False
    while True:
        while position < end and line[position] in " \t":
            position += 1
        if position >= end or line[position] == ",":  # the end of an element
            if malformed:
                hops.append(MALFORMED_HOP)
            elif found is not None:
                hops.append(found)
            found, malformed = None, False
            if position >= end:
                return hops
            position += 1
            continue
        if line[position] == ";":  # an empty pair
            position += 1
            continue
        match = _FORWARDED_PAIR.match(line, position)
        if match is None or (match.end() < end and line[match.end()] not in ";,"):
            malformed = True  # resynchronise at the next comma: the element ends there
            comma = line.find(",", position if match is None else match.end())
            position = end if comma < 0 else comma
            continue
        if match.group(1).lower() == "for":
            value = match.group(2)
            found = re.sub(r"\\(.)", r"\1", value[1:-1]) if value.startswith('"') else value
        position = match.end()


def parse_hop(value: str) -> IPAddress:
    """Parse one forwarded hop (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``"[::1]"``) or raise ValueError.

    A port must be digits (or an RFC 7239 obfuscated ``_port``): ``6.6.6.6:x`` is no hop.
    """
    value = value.strip().strip('"')
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"unterminated IPv6 hop {value[:MAX_HOP_LENGTH]!r}")
        rest = value[end + 1 :]
        if rest and not (rest.startswith(":") and _port(rest[1:])):
            raise ValueError(f"malformed hop {value[:MAX_HOP_LENGTH]!r}")
        return ipaddress.ip_address(value[1:end])
    if value.count(":") == 1:  # IPv4 with a port
        value, _, port = value.partition(":")
        if not _port(port):
            raise ValueError(f"malformed port in hop {value[:MAX_HOP_LENGTH]!r}")
    return ipaddress.ip_address(value)


def _port(text: str) -> bool:
    return text.isdigit() or (text.startswith("_") and len(text) > 1)


class TrustedProxies:
    """Addresses and networks whose forwarding headers are believed.

    Args:
        trusted: IPs or CIDRs (``"10.0.0.0/8"``), or ``"*"`` to trust every peer (only behind a
            proxy that overwrites the header).
        header: ``"x-forwarded-for"`` (default) or ``"forwarded"`` (RFC 7239).

    Raises:
        ConfigurationError: an entry is neither an address nor a network.
    """

    __slots__ = ("_all", "_hosts", "_networks", "header")

    def __init__(self, trusted: Iterable[str] | str = ("127.0.0.1", "::1"), header: str = "x-forwarded-for") -> None:
        items = [t.strip() for t in trusted.split(",")] if isinstance(trusted, str) else list(trusted)
        self._all = "*" in items
        self._hosts: set[str] = set()
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in items:
            if item == "*":
                continue
            if not isinstance(item, str):
                raise ConfigurationError(f"trusted_proxies: {item!r} is not an address or network")
            try:
                if "/" in item:
                    self._networks.append(ipaddress.ip_network(item, strict=False))
                else:
                    self._hosts.add(str(ipaddress.ip_address(item)))
            except ValueError:
                raise ConfigurationError(f"trusted_proxies: {item!r} is not an IP address or CIDR network") from None
        header = header.lower()
        if header not in ("x-forwarded-for", "forwarded"):
            raise ConfigurationError(f"proxy_header must be 'x-forwarded-for' or 'forwarded', got {header!r}")
        self.header = header

    def __contains__(self, host: object) -> bool:
        if self._all:
            return True
        if host in self._hosts:
            return True
        if not self._networks or not isinstance(host, str):
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self._networks)

    def hops(self, values: Sequence[str]) -> list[str]:
        """The raw hops of the configured header (all lines, in order), bounded."""
        hops: list[str] = []
        for line in values:
            if self.header == "forwarded":
                hops.extend(forwarded_for(line))
            else:
                hops.extend(line.split(","))
        return [h.strip().strip('"')[:MAX_HOP_LENGTH] for h in hops[-MAX_CHAIN:]]

    def client_ip(self, peer: str | None, values: Sequence[str]) -> tuple[str | None, list[str] | None]:
        """Return (client ip, raw forwarded chain or None) for a request from ``peer``.

        ``values`` are the forwarding header's lines (the configured header only).
        """
        chain = self.hops(values) if values else None
        if peer is None or peer not in self or not chain:
            return peer, chain
        client = peer
        for hop in reversed(chain):
            try:
                address = str(parse_hop(hop))
            except ValueError:
                break  # a malformed hop cannot be believed, nor anything left of it
            client = address
            if address not in self:
                break
        return client, chain


# -- users ---------------------------------------------------------------------------------------


def user_id_of(user: Any) -> Any:
    """The id of a framework user object (or the value itself if it is a plain id); None if anonymous.

    Never raises: a lazy user object that fails when touched (e.g. one needing a sync database call
    from async code) counts as no user.
    """
    if user is None or isinstance(user, str | int | uuid.UUID):
        return user if user != "" else None
    try:
        if getattr(user, "is_authenticated", True) is False:
            return None
    except Exception:
        return None
    if isinstance(user, dict):
        return next((user[k] for k in _USER_KEYS if user.get(k)), None)
    for attr in ("id", "pk", "user_id", "identity"):
        try:
            value = getattr(user, attr, None)
        except Exception:  # e.g. Starlette BaseUser.identity raises NotImplementedError
            continue
        if value:
            return value
    return None


def _jwt_sub(token: str) -> Any:
    m = _JWT.match(token)
    if m is None:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(m.group(1) + "=" * (-len(m.group(1)) % 4)))
    except ValueError:
        return None
    if not isinstance(payload, dict):
        return None
    return payload.get("sub") or payload.get("user_id")


def _from_json(data: Any) -> Any:
    if not isinstance(data, dict):
        return None
    for key in _USER_KEYS:
        value = data.get(key)
        if isinstance(value, str | int) and value and not isinstance(value, bool):
            return value
    user = data.get("user")
    if isinstance(user, dict):
        found = _from_json(user)
        if found is not None:
            return found
    for key in _TOKEN_KEYS:
        value = data.get(key)
        if isinstance(value, str):
            sub = _jwt_sub(value)
            if sub is not None:
                return sub
    return None


def _loads(body: bytes) -> Any:
    """orjson (a sixth of the stdlib's time); what it refuses (NaN, lone surrogate escapes) the stdlib parses."""
    try:
        return orjson.loads(body)
    except ValueError:
        return json.loads(body)


def user_from_response(headers: Sequence[tuple[str, str]], body: bytes | None) -> Any:
    """The user a successful login response names: JSON id/sub, a JWT it issues, or a JWT cookie it sets.

    ``headers`` are the response's (lower-case name, value) pairs; ``body`` a prefix of its body (a
    truncated JSON body simply yields nothing). Never raises.
    """
    try:
        content_type = ""
        for name, value in headers:  # (a loop, not next() over a generator: this runs on every JSON login)
            if name == "content-type":
                content_type = value
                break
        if body and "json" in content_type:
            found = _from_json(_loads(body))
            if found is not None:
                return found
        for name, value in headers:
            if name == "set-cookie":
                token = value.partition(";")[0].partition("=")[2].strip().strip('"')
                sub = _jwt_sub(token)
                if sub is not None:
                    return sub
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return None


def attempted_identifier(content_type: str, body: bytes, fields: Sequence[str] = IDENTIFIER_FIELDS) -> str | None:
    """The username/email a login-type request names, from a JSON or form body; None if absent. Never raises."""
    try:
        ctype = content_type.partition(";")[0].strip().lower()
        data: Any
        if ctype == "application/json" or ctype.endswith("+json"):
            data = json.loads(body)
        elif ctype == "application/x-www-form-urlencoded":
            data = dict(parse_qsl(body.decode("utf-8", "replace"), max_num_fields=200))
        else:
            return None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    for name in fields:
        value = data.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_IDENTIFIER]
    return None
