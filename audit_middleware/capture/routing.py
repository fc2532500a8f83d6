"""Route -> action mapping: ``"METHOD /path"`` keys compiled once, matched in well under a microsecond.

Key syntax (``RouteTable`` docstring has examples):

* methods: ``"POST /login"``, several with ``|`` (``"POST|PUT /users/{id}"``), any with ``*``;
* path parameters: ``{name}`` / ``{name:int|float|uuid|str|path}`` (Starlette) and ``<name>`` /
  ``<int:name>`` (Flask); a parameter matches one segment (``path`` matches the rest);
* wildcards: a ``*`` segment matches one segment, ``*`` inside a segment matches characters, a
  ``**`` segment matches any number of segments (``"POST **/login"`` is ``/login`` under any prefix).

Paths are normalised before matching (``//login``, ``/login/``, ``/./login``, ``/log%69n`` all
match ``/login``) so a request the framework still dispatches to the handler cannot dodge the
audit. The first matching route in declaration order wins; user routes come before the preset.

Speed: routes are bucketed by their last literal segment (or the one before a trailing parameter),
so an unmatched request costs a couple of ``str`` operations and dict lookups.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote

from ..errors import ConfigurationError
from ..writer.records import MAX_ACTION_LENGTH

__all__ = ["RouteMatch", "RouteSpec", "RouteTable", "compile_routes", "normalize_path"]

ActionCallable = Callable[..., "str | None"]
"""A route value computing the action: called as ``fn(request_info, response_info)``; None skips."""

CACHE_SIZE = 4096
_METHOD = re.compile(r"^[A-Z]+$")
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}|<(?:([A-Za-z_]+):)?([A-Za-z_][A-Za-z0-9_]*)>")
_TEMPLATE_ALT = r"|\{[^/{}]*\}"  # a typed parameter also matches a framework template's "{name}"
_CONVERTERS = {
    "str": r"[^/]+",
    "string": r"[^/]+",
    "int": r"[0-9]+" + _TEMPLATE_ALT,
    "float": r"[0-9]+(?:\.[0-9]+)?" + _TEMPLATE_ALT,
    "uuid": r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}" + _TEMPLATE_ALT,
    "path": r".*",
}


def _check_action(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > MAX_ACTION_LENGTH:
        raise ConfigurationError(f"{name} {value[:40]!r}... is longer than {MAX_ACTION_LENGTH} characters")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteSpec:
    """What to record for a route.

    Attributes:
        action: the action name, or a callable ``fn(request_info, response_info) -> str | None``.
        body: capture the request body (True), not (False), or only these top-level fields.
        metadata: static metadata added to every event of this route.
        failed_action: action recorded when the request fails (status >= 400 or an exception);
            default ``<action>`` + the middleware's ``failed_suffix``.
        outcome: record ``failed_action`` on failure (None: the middleware's ``outcome_actions``).
        user_from_response: take the user from the app's own successful response (login-type routes).
        identifier: record the attempted identifier (username/email) from the request body.
        user_before: resolve the user before the app runs (logout destroys the session).
        strict: hold the response until the event is committed; answer 503 instead (the app's response,
            and any session it issues, is discarded) if that does not happen within the middleware's
            ``strict_timeout``. The response is buffered: for small auth responses, not streams.
    """

    action: str | ActionCallable
    body: bool | tuple[str, ...] = True
    metadata: Mapping[str, Any] = field(default_factory=dict)
    failed_action: str | None = None
    outcome: bool | None = None
    user_from_response: bool = False
    identifier: bool = False
    user_before: bool = False
    strict: bool = False

    def __post_init__(self) -> None:
        if not callable(self.action):
            _check_action("action", self.action)
        if self.failed_action is not None:
            _check_action("failed_action", self.failed_action)
        if isinstance(self.body, list | tuple | set | frozenset):
            if not all(isinstance(f, str) and f for f in self.body):
                raise ConfigurationError(f"body must be a bool or a list of field names, got {self.body!r}")
            object.__setattr__(self, "body", tuple(self.body))
        elif not isinstance(self.body, bool):
            raise ConfigurationError(f"body must be a bool or a list of field names, got {self.body!r}")
        if not isinstance(self.metadata, Mapping):
            raise ConfigurationError(f"metadata must be a mapping, got {type(self.metadata).__name__}")
        for name in ("user_from_response", "identifier", "user_before", "strict"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.outcome is not None and not isinstance(self.outcome, bool):
            raise ConfigurationError(f"outcome must be a bool or None, got {self.outcome!r}")

    @classmethod
    def coerce(cls, value: Any, *, where: str = "route") -> RouteSpec | None:
        """Turn a route value (string, mapping, callable, RouteSpec or None) into a RouteSpec."""
        if value is None or isinstance(value, RouteSpec):
            return value
        if isinstance(value, str):
            _check_action(f"{where}: action", value)
            return cls(action=value)
        if isinstance(value, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(value) - known)
            if unknown:
                raise ConfigurationError(f"{where}: unknown route option(s): {', '.join(map(str, unknown))}")
            if "action" not in value:
                raise ConfigurationError(f"{where}: a route spec needs an 'action'")
            try:
                return cls(**value)
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}: {exc}") from None
        if callable(value):
            return cls(action=value)
        raise ConfigurationError(f"{where}: a route value must be a string, mapping or callable, got {value!r}")


@dataclass(frozen=True, slots=True)
class _Route:
    index: int
    key: str
    methods: frozenset[str] | None
    regex: re.Pattern[str]
    parts: tuple[tuple[str, str], ...]  # ("lit", text) | ("param", "{name}") | ("rest", "") per capture order
    spec: RouteSpec | None

    def template(self, m: re.Match[str]) -> str:
        out: list[str] = []
        groups = iter(m.groups())
        for kind, text in self.parts:
            if kind == "lit":
                out.append(text)
            elif kind == "param":
                next(groups)
                out.append(text)
            elif kind == "prefix":  # a leading "**": keep the concrete prefix the framework routed on
                out.append(next(groups) or "")
            else:  # a later "**" may hold a secret (a reset key): never keep it
                next(groups)
                out.append("/**")
        return "".join(out) or "/"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """A matched route: its spec (None means "explicitly not audited"), key and path template."""

    spec: RouteSpec | None
    key: str
    template: str


def normalize_path(path: str) -> str:
    """Collapse ``//``, ``.``/``..`` segments, a trailing ``/`` and percent-encoding.

    Example:
        >>> normalize_path("//api/./log%69n/")
        '/api/login'
    """
    if "%" in path:
        path = unquote(unquote(path))
    out: list[str] = []
    for seg in path.split("/"):
        if seg == "" or seg == ".":
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return "/" + "/".join(out)


def _compile_path(key: str, path: str) -> tuple[re.Pattern[str], tuple[tuple[str, str], ...], str | None, str | None]:
    """Compile a path pattern; returns (regex, parts, last literal segment, literal before a last param)."""
    if not path.startswith(("/", "**")):
        raise ConfigurationError(f"route {key!r}: the path must start with '/'")
    segments = [s for s in path.split("/") if s != ""]
    if path.startswith("**"):
        segments = segments if segments and segments[0] == "**" else ["**", *segments]
    regex: list[str] = []
    parts: list[tuple[str, str]] = []
    kinds: list[str] = []  # per segment: "lit" | "dyn" | "rest"
    names: set[str] = set()
    for i, seg in enumerate(segments):
        if seg == "**":
            regex.append("((?:/.*)?)")
            parts.append(("prefix" if i == 0 else "rest", ""))
            kinds.append("rest")
            continue
        regex.append("/")
        parts.append(("lit", "/"))
        pos = 0
        dynamic = conv_path = False
        for m in _PARAM.finditer(seg):
            _literal(seg[pos : m.start()], regex, parts)
            name = m.group(1) or m.group(4)
            conv = (m.group(2) or m.group(3) or "str").lower()
            if conv not in _CONVERTERS:
                raise ConfigurationError(f"route {key!r}: unknown converter {conv!r}")
            if name in names:
                raise ConfigurationError(f"route {key!r}: parameter {name!r} repeated")
            names.add(name)
            if conv == "path" and i != len(segments) - 1:
                raise ConfigurationError(f"route {key!r}: a path parameter must be the last segment")
            regex.append(f"({_CONVERTERS[conv]})")
            parts.append(("param", f"{{{name}}}"))
            pos, dynamic, conv_path = m.end(), True, conv_path or conv == "path"
        rest = seg[pos:]
        if "{" in rest or "}" in rest or "<" in rest or ">" in rest:
            raise ConfigurationError(f"route {key!r}: malformed parameter in segment {seg!r}")
        dynamic = _literal(rest, regex, parts) or dynamic
        kinds.append("rest" if conv_path else "dyn" if dynamic else "lit")
    pattern = "".join(regex) or "/"
    if segments and segments[-1] == "**":
        pattern += "/?"
    try:
        compiled = re.compile(pattern)
    except re.error as exc:  # pragma: no cover - the pieces above are all escaped or fixed
        raise ConfigurationError(f"route {key!r}: invalid pattern ({exc})") from None
    last = segments[-1] if segments and kinds[-1] == "lit" else None
    before = segments[-2] if len(segments) >= 2 and kinds[-1] == "dyn" and kinds[-2] == "lit" else None
    if not segments:
        last = ""
    return compiled, tuple(parts), last, before


def _literal(text: str, regex: list[str], parts: list[tuple[str, str]]) -> bool:
    """Append a literal (``*`` inside it is a wildcard); return True if it had a wildcard."""
    if not text:
        return False
    pieces = text.split("*")
    for n, piece in enumerate(pieces):
        if n:
            regex.append("([^/]*)")
            parts.append(("param", "*"))
        if piece:
            regex.append(re.escape(piece))
            parts.append(("lit", piece))
    return len(pieces) > 1


def _parse_key(key: Any) -> tuple[frozenset[str] | None, str]:
    if not isinstance(key, str) or " " not in key.strip():
        raise ConfigurationError(f"route key {key!r} must look like 'METHOD /path'")
    method_part, _, path = key.strip().partition(" ")
    path = path.strip()
    if method_part == "*":
        return None, path
    methods = method_part.upper().split("|")
    for method in methods:
        if not _METHOD.match(method):
            raise ConfigurationError(f"route key {key!r}: invalid method {method!r}")
    return frozenset(methods), path


class RouteTable:
    """Compiled routes. ``match(method, path)`` returns a :class:`RouteMatch` or None.

    Example:
        >>> table = compile_routes({"POST /login": "login", "* /users/{id:int}": {"action": "user", "body": False}})
        >>> table.match("POST", "//login/").template
        '/login'
        >>> table.match("GET", "/users/7").template
        '/users/{id}'
    """

    __slots__ = ("_by_before", "_by_last", "_cache", "_generic", "routes")

    def __init__(self, routes: Sequence[_Route]) -> None:
        self.routes = tuple(routes)
        self._cache: dict[str, dict[str, RouteMatch | None]] = {}
        self._by_last: dict[str, list[_Route]] = {}
        self._by_before: dict[str, list[_Route]] = {}
        self._generic: list[_Route] = []

    def _add(self, route: _Route, last: str | None, before: str | None) -> None:
        if last is not None:
            self._by_last.setdefault(last, []).append(route)
        elif before is not None:
            self._by_before.setdefault(before, []).append(route)
        else:
            self._generic.append(route)

    def __bool__(self) -> bool:
        return bool(self.routes)

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The first route (in declaration order) matching ``method`` and the normalised ``path``.

        Results for the first ``CACHE_SIZE`` distinct (method, path) pairs are cached.
        """
        cache = self._cache.get(method)
        if cache is None:
            if len(self._cache) >= 64:  # bounded: methods are client-controlled
                return self._match(method, path)
            cache = self._cache[method] = {}
        try:
            return cache[path]
        except KeyError:
            pass
        result = self._match(method, path)
        if len(cache) < CACHE_SIZE:
            cache[path] = result
        return result

    def _match(self, method: str, path: str) -> RouteMatch | None:
        if "//" in path or "%" in path or "/." in path or path[:1] != "/":
            path = normalize_path(path)
        elif path[-1] == "/" and len(path) > 1:
            path = path.rstrip("/")
        cut = path.rfind("/")
        found = self._by_last.get(path[cut + 1 :])
        best: tuple[_Route, re.Match[str]] | None = None
        if found is not None:
            best = _first(found, method, path, None)
        if self._by_before and cut > 0:
            found = self._by_before.get(path[path.rfind("/", 0, cut) + 1 : cut])
            if found is not None:
                best = _first(found, method, path, best)
        if self._generic:
            best = _first(self._generic, method, path, best)
        if best is None:
            return None
        route, m = best
        return RouteMatch(route.spec, route.key, route.template(m))


def _first(
    routes: Iterable[_Route], method: str, path: str, best: tuple[_Route, re.Match[str]] | None
) -> tuple[_Route, re.Match[str]] | None:
    for route in routes:
        if best is not None and route.index > best[0].index:
            return best
        if route.methods is not None and method not in route.methods:
            continue
        m = route.regex.fullmatch(path)
        if m is not None:
            return route, m
    return best


def compile_routes(*tables: Mapping[str, Any] | None) -> RouteTable:
    """Compile route mappings (earlier tables and keys win) into a :class:`RouteTable`.

    Raises:
        ConfigurationError: a key or value is invalid; the message names it.
    """
    compiled: list[tuple[_Route, str | None, str | None]] = []
    for table in tables:
        if table is None:
            continue
        if not isinstance(table, Mapping):
            raise ConfigurationError(f"routes must be a mapping of 'METHOD /path' to actions, got {table!r}")
        for key, value in table.items():
            methods, path = _parse_key(key)
            spec = RouteSpec.coerce(value, where=f"route {key!r}")
            regex, parts, last, before = _compile_path(key, path)
            route = _Route(len(compiled), key, methods, regex, parts, spec)
            compiled.append((route, last, before))
    result = RouteTable([c[0] for c in compiled])
    for route, last, before in compiled:
        result._add(route, last, before)
    return result
