"""Redaction: what the middleware keeps of a request, with every secret replaced before it is buffered.

:class:`Redactor` is built once from a :class:`RedactionConfig` (everything is precompiled there) and
is then safe to share between threads and requests. Its methods take client-controlled input and
return JSON-ready values; none of them raises on hostile input.

The key rules and value detectors are listed in :mod:`audit_middleware.detectors`.

Value detectors run on every string whatever its key (:meth:`Redactor.text`). Processors over the
final metadata are chained with :func:`build_chain`; raising :class:`SkipAudit` drops the record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from .bodies import FileInfo, PartialText, parse_body, parse_urlencoded
from .detectors import (
    DEFAULT_DENY_KEYS,
    DEFAULT_DENY_STEMS,
    DEFAULT_DENY_WORDS,
    DETECTORS,
    REDACTED,
    TRUNCATED,
    clean,
    key_words,
    looks_like_token,
    luhn_valid,
    mask_match,
    normalise_key,
)
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_CAPTURED_HEADERS",
    "DEFAULT_DENY_KEYS",
    "DEFAULT_DENY_STEMS",
    "DEFAULT_DENY_WORDS",
    "REDACTED",
    "TRUNCATED",
    "RedactionConfig",
    "Redactor",
    "SkipAudit",
    "build_chain",
    "normalise_key",
]


DEFAULT_CAPTURED_HEADERS: tuple[str, ...] = (
    "user-agent", "content-type", "content-length", "content-encoding", "accept", "accept-language", "host",
    "referer", "origin", "x-request-id", "x-correlation-id", "x-forwarded-for", "x-forwarded-proto",
    "x-real-ip", "forwarded", "authorization",
)  # fmt: skip
# Header names whose values are never stored, whatever the configuration (matched on the normalised name).
_ALWAYS_REDACTED_HEADER_STEMS = ("authorization", "cookie", "apikey", "token", "secret", "password", "session", "csrf")
_URL_HEADERS = frozenset({"referer", "origin"})

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9a-z-]+$")
_ALNUM_FAST = 13  # an ASCII letters-and-digits string shorter than this cannot hold anything we detect
_DETECTION_MARGIN = 8192  # detectors see this much past max_string, so a secret cut by the cap is still masked
_TEMPLATE_PARAM = re.compile(r"^\{([^}:]+)(?::([^}]*))?\}$")
_KEY_CACHE_SIZE = 4096
_MAX_QUERY = 64 * 1024  # a query string is parsed up to this many characters


class SkipAudit(Exception):
    """Raised by a processor to drop the record (see :func:`build_chain`)."""


def _strings(value: Any, field: str) -> tuple[str, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Collection):
        raise ConfigurationError(f"{field} must be a collection of strings, not {type(value).__name__}")
    items = tuple(value)
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigurationError(f"{field} entries must be non-empty strings, got {item!r}")
    return items


def _positive(value: Any, field: str, minimum: int) -> None:
    if type(value) is not int or value < minimum:
        raise ConfigurationError(f"{field} must be an integer >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RedactionConfig:
    """What is captured and what is redacted.

    Attributes:
        deny_keys: more keys to redact, added to :data:`DEFAULT_DENY_KEYS` (matched on the normalised
            whole key; ``"*word*"`` matches the normalised key anywhere).
        replace_deny_keys: use ``deny_keys`` instead of the defaults (stems, words and whole keys).
        allow_keys: allowlist mode: only values of these keys are kept, every other scalar value
            becomes ``REDACTED`` (containers are still walked so their keys stay visible). The denylist
            still wins: a denied key is redacted even when allowed.
        captured_headers: request headers kept (lower-cased names); credentials among them are always
            redacted.
        max_body_bytes: the middleware captures at most this prefix of a request body (0 disables).
        max_depth: containers nested deeper than this become ``TRUNCATED``.
        max_items: at most this many entries of one object or list (and of a query string or form)
            are kept; the rest are counted under a ``TRUNCATED`` key / item.
        max_string: strings longer than this are cut and end with ``...[TRUNCATED]``.
        detect_values: run the value detectors (bearer/basic credentials, JWTs, PEM private keys, URL
            credentials, Luhn-valid card numbers) on every string.
    """

    deny_keys: Collection[str] = ()
    replace_deny_keys: bool = False
    allow_keys: Collection[str] | None = None
    captured_headers: Collection[str] = DEFAULT_CAPTURED_HEADERS
    max_body_bytes: int = 64 * 1024
    max_depth: int = 8
    max_items: int = 100
    max_string: int = 512
    detect_values: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "deny_keys", _strings(self.deny_keys, "deny_keys"))
        if self.allow_keys is not None:
            object.__setattr__(self, "allow_keys", _strings(self.allow_keys, "allow_keys"))
        headers = _strings(self.captured_headers, "captured_headers")
        for name in headers:
            if not _HEADER_NAME.match(name.lower()):
                raise ConfigurationError(f"captured_headers has an invalid header name: {name!r}")
        object.__setattr__(self, "captured_headers", tuple(name.lower() for name in headers))
        for field in ("replace_deny_keys", "detect_values"):
            if type(getattr(self, field)) is not bool:
                raise ConfigurationError(f"{field} must be True or False, got {getattr(self, field)!r}")
        _positive(self.max_body_bytes, "max_body_bytes", 0)
        _positive(self.max_depth, "max_depth", 1)
        _positive(self.max_items, "max_items", 1)
        _positive(self.max_string, "max_string", 16)


class Redactor:
    """Applies a :class:`RedactionConfig`; build one per middleware, share it across requests and threads.

    Example:
        >>> Redactor().mapping({"email": "a@example.com", "newPassword": "hunter2"})
        {'email': 'a@example.com', 'newPassword': '[REDACTED]'}
    """

    __slots__ = (
        "_allow",
        "_cache",
        "_captured",
        "_config",
        "_deny_exact",
        "_deny_stems",
        "_deny_words",
        "_detect",
        "_max_depth",
        "_max_items",
        "_max_string",
        "_window",
    )

    def __init__(self, config: RedactionConfig | None = None) -> None:
        self._config = config = config if config is not None else RedactionConfig()
        exact: set[str] = set() if config.replace_deny_keys else set(DEFAULT_DENY_KEYS)
        stems: set[str] = set() if config.replace_deny_keys else set(DEFAULT_DENY_STEMS)
        for key in config.deny_keys:
            norm = normalise_key(key)
            if len(norm) > 2 and norm.startswith("*") and norm.endswith("*"):
                stems.add(norm.strip("*"))
            else:
                exact.add(norm.strip("*"))
        self._deny_exact = frozenset(exact)
        self._deny_stems = re.compile("|".join(sorted(map(re.escape, stems)))) if stems else None
        self._deny_words = frozenset() if config.replace_deny_keys else DEFAULT_DENY_WORDS
        self._allow = None if config.allow_keys is None else frozenset(map(normalise_key, config.allow_keys))
        self._captured = frozenset(name.encode("latin-1") for name in config.captured_headers)
        self._cache: dict[str, bool] = {}
        self._detect = config.detect_values
        self._max_depth = config.max_depth
        self._max_items = config.max_items
        self._max_string = config.max_string
        self._window = config.max_string + _DETECTION_MARGIN

    @property
    def config(self) -> RedactionConfig:
        """The configuration this redactor applies."""
        return self._config

    # -- keys ----------------------------------------------------------------------------------------

    def is_sensitive_key(self, key: str) -> bool:
        """Return whether values under ``key`` are secrets (denylist stems, words and whole keys)."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        norm = normalise_key(key)
        hit = norm in self._deny_exact or (self._deny_stems is not None and self._deny_stems.search(norm) is not None)
        if not hit and self._deny_words:
            hit = any(word in self._deny_words for word in key_words(key))
        if len(self._cache) >= _KEY_CACHE_SIZE:
            self._cache.clear()  # bounded: hostile clients can send endless distinct keys
        self._cache[key] = hit
        return hit

    def _keeps(self, key: str) -> bool:
        """Whether a scalar under ``key`` keeps its value (not denied, and allowed in allowlist mode)."""
        if self.is_sensitive_key(key):
            return False
        return self._allow is None or normalise_key(key) in self._allow

    # -- strings -------------------------------------------------------------------------------------

    def text(self, value: str) -> str:
        """Clean, bound and mask a client-controlled string.

        Removes NUL and other C0 controls (tab and newline stay), replaces lone surrogates with U+FFFD,
        masks detector hits with ``REDACTED`` (keeping the rest of the string) and cuts the result to
        ``max_string`` characters plus ``...[TRUNCATED]``.
        """
        if len(value) < _ALNUM_FAST and value.isascii() and value.isalnum():
            return value  # fast path: too short and too plain to hold anything we detect
        if len(value) > self._window:
            value = value[: self._window]
        value = clean(value)
        if self._detect:
            value = DETECTORS.sub(mask_match, value)
        if len(value) > self._max_string:
            value = value[: self._max_string] + "..." + TRUNCATED
        return value

    def _key_text(self, key: Any) -> str:
        return self.text(key if type(key) is str else str(key))

    # -- structures ----------------------------------------------------------------------------------

    def mapping(self, data: Any, allow_fields: Collection[str] | None = None) -> Any:
        """Redact a JSON-like value recursively: keys are kept, secret values become ``REDACTED``.

        Applies the key rules, the value detectors and the caps (``max_depth``, ``max_items``,
        ``max_string``). ``allow_fields`` keeps only these top-level keys of a mapping (others are
        dropped; a non-mapping top level gives ``{}``); denied keys among them are still redacted.
        """
        if allow_fields is not None:
            if not isinstance(data, Mapping):
                return {}
            allowed = {normalise_key(field) for field in allow_fields}
            data = {k: v for k, v in data.items() if normalise_key(str(k)) in allowed}
        return self._walk(data, 0, True)

    def _walk(self, value: Any, depth: int, keep: bool) -> Any:
        if value is None or value is True or value is False:
            return value if keep else REDACTED
        if not keep and not isinstance(value, Mapping | list | tuple):
            return REDACTED
        kind = type(value)
        if kind is str:
            return self.text(value)
        if kind is int:
            if self._detect and value >= 10**12 and 13 <= len(str(value)) <= 19 and luhn_valid(str(value)):
                return REDACTED
            return value
        if kind is float:
            return value
        if isinstance(value, PartialText):
            text = self.text(str(value))
            return text if text.endswith(TRUNCATED) else text + "..." + TRUNCATED
        if isinstance(value, FileInfo):
            return {
                "filename": None if value.filename is None else self.text(value.filename),
                "size": value.size,
                "content_type": value.content_type,
                **({"truncated": True} if value.truncated else {}),
            }
        if depth >= self._max_depth:
            return TRUNCATED
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for count, (key, item) in enumerate(value.items()):
                if count >= self._max_items:
                    out[TRUNCATED] = len(value) - count
                    break
                name = self._key_text(key)
                if self.is_sensitive_key(name):
                    out[name] = REDACTED
                else:
                    out[name] = self._walk(item, depth + 1, self._allow is None or normalise_key(name) in self._allow)
            return out
        if isinstance(value, list | tuple):
            items = [self._walk(item, depth + 1, keep) for item in value[: self._max_items]]
            if len(value) > self._max_items:
                items.append(f"{TRUNCATED} {len(value) - self._max_items} more items")
            return items
        if isinstance(value, bytes | bytearray):
            return f"<{len(value)} bytes>"  # raw bytes are never stored
        return self.text(str(value))

    # -- request parts -------------------------------------------------------------------------------

    def headers(self, raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
        """Keep the captured headers of ASGI-style ``(name, value)`` pairs; credentials always ``REDACTED``.

        Names are lower-cased; repeated headers are joined with ``", "``; Referer and Origin go through
        :meth:`url`, every other value through :meth:`text`.
        """
        found: dict[str, list[str]] = {}
        for raw_name, value in raw:
            lowered = raw_name.lower()
            if lowered in self._captured:
                found.setdefault(lowered.decode("latin-1"), []).append(value.decode("latin-1"))
        out: dict[str, str] = {}
        for name, values in found.items():
            norm = normalise_key(name)
            if any(stem in norm for stem in _ALWAYS_REDACTED_HEADER_STEMS) or self.is_sensitive_key(name):
                out[name] = REDACTED
            elif name in _URL_HEADERS:
                out[name] = self.url(", ".join(values))
            else:
                out[name] = self.text(", ".join(values))
        return out

    def query(self, raw: bytes | str) -> dict[str, Any]:
        """Parse a query string (``a=1&a=2&b=3`` -> ``{"a": ["1", "2"], "b": "3"}``) and redact it."""
        text = raw[:_MAX_QUERY].decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else raw[:_MAX_QUERY]
        fields, dropped = parse_urlencoded(text, self._max_items)
        out: dict[str, Any] = self._walk(fields, 0, True)
        if dropped:
            out[TRUNCATED] = dropped
        return out

    def body(
        self,
        content_type: str | None,
        body: bytes,
        *,
        complete: bool,
        content_encoding: str | None = None,
        allow_fields: Collection[str] | None = None,
    ) -> dict[str, Any]:
        """Describe a captured request body, redacted; never returns raw bytes of an opaque body.

        Returns ``{"content_type", "size", "truncated", "fields"}`` when the body was parsed (JSON,
        urlencoded or multipart form), else ``{"content_type", "size", "omitted": reason}`` with reason
        one of ``empty``, ``compressed``, ``truncated``, ``unparseable``, ``binary``, ``unsupported``
        (see :mod:`audit_middleware.bodies`). ``size`` is ``len(body)``, the bytes captured. A body
        longer than ``max_body_bytes`` is treated as cut there.
        """
        size = len(body)
        limit = self._config.max_body_bytes
        if size > limit:
            body, complete = body[:limit], False
        parsed = parse_body(
            content_type,
            body,
            complete=complete,
            content_encoding=content_encoding,
            max_items=self._max_items,
            max_value=self._window * 4,
        )
        media = None if parsed.media_type is None else self.text(parsed.media_type)
        if parsed.omitted is not None:
            return {"content_type": media, "size": size, "omitted": parsed.omitted}
        fields = self.mapping(parsed.fields, allow_fields)
        return {"content_type": media, "size": size, "truncated": parsed.truncated, "fields": fields}

    def url(self, url: str) -> str:
        """Drop userinfo and redact sensitive query (and fragment) keys of a URL, then :meth:`text` it."""
        url = url[: self._window]
        scheme, sep, rest = url.partition("://")
        if sep and "/" not in scheme:
            authority, slash, tail = _split_authority(rest)
            if "@" in authority:
                authority = authority.rpartition("@")[2]
            url = scheme + sep + authority + slash + tail
        head, qmark, query = url.partition("?")
        query, hash_, fragment = query.partition("#")
        if not qmark:
            head, hash_, fragment = head.partition("#")
        url = head + qmark + self._redact_pairs(query) + hash_ + self._redact_pairs(fragment)
        return self.text(url)

    def _redact_pairs(self, query: str) -> str:
        if "=" not in query:
            return query
        pairs = query.split("&")
        for index, pair in enumerate(pairs):
            name, eq, _ = pair.partition("=")
            if eq and not self._keeps(unquote_plus(name, errors="replace")):
                pairs[index] = name + "=" + REDACTED
        return "&".join(pairs)

    def path(self, path: str, template: str | None = None) -> str:
        """Return ``path`` with secret segments masked, bounded and cleaned.

        With the route ``template`` (``/reset/{token}``) a segment whose parameter name is sensitive is
        masked (a trailing ``{x:path}`` parameter masks the rest of the path). Without one, segments that
        look like credentials (JWTs, long hex runs, long mixed-case-and-digit strings; not UUIDs) are
        masked, as are the value detectors' hits.
        """
        path = path[: self._window]
        segments = path.split("/")
        masked = False
        if template is not None:
            for index, part in enumerate(template.split("/")):
                if index >= len(segments):
                    break
                match = _TEMPLATE_PARAM.match(part)
                if match is None or not self.is_sensitive_key(match.group(1).strip()):
                    continue
                if match.group(2) == "path":
                    segments[index:] = [REDACTED]
                    masked = True
                    break
                segments[index] = REDACTED
                masked = True
        if not masked:
            for index, segment in enumerate(segments):
                if looks_like_token(segment):
                    segments[index] = REDACTED
        return self.text("/".join(segments))


def _split_authority(rest: str) -> tuple[str, str, str]:
    for index, char in enumerate(rest):
        if char in "/?#":
            return rest[:index], "", rest[index:]
    return rest, "", ""


def build_chain(
    processors: Sequence[Callable[[dict[str, Any]], dict[str, Any]]],
) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """Compose processors over the final metadata dict, structlog style.

    Each processor takes the metadata and returns it (or a new dict). A processor that raises
    :class:`SkipAudit` or returns ``None`` drops the record: the chain returns ``None``. Any other
    exception propagates (the middleware catches, logs and counts it).

    Example:
        >>> def tag(metadata):
        ...     metadata["tenant"] = "acme"
        ...     return metadata
        >>> build_chain([tag])({"ip": "10.0.0.1"})
        {'ip': '10.0.0.1', 'tenant': 'acme'}
    """
    steps = tuple(processors)
    for index, step in enumerate(steps):
        if not callable(step):
            raise ConfigurationError(f"processors[{index}] is not callable: {step!r}")

    def run(metadata: dict[str, Any]) -> dict[str, Any] | None:
        current: dict[str, Any] | None = metadata
        try:
            for step in steps:
                current = step(current)  # type: ignore[arg-type]
                if current is None:
                    return None
        except SkipAudit:
            return None
        return current

    return run
