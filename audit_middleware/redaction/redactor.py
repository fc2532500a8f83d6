"""Redaction: what the middleware keeps of a request, with every secret replaced before it is buffered.

:class:`Redactor` is built once from a :class:`RedactionConfig` (everything is precompiled there) and
is then safe to share between threads and requests. Its methods take client-controlled input and
return JSON-ready values; none of them raises on hostile input.

The key rules and value detectors are listed in :mod:`audit_middleware.detectors`, body parsing
outcomes in :mod:`audit_middleware.bodies`. Value detectors run on every string whatever its key
(:meth:`Redactor.text`). Processors over the final metadata are chained with :func:`build_chain`
(re-exported from :mod:`audit_middleware.processors`); raising :class:`SkipAudit` drops the record.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from ..errors import ConfigurationError
from .bodies import FileInfo, PartialText, parse_body, parse_urlencoded
from .detectors import (
    DEFAULT_DENY_KEYS,
    DEFAULT_DENY_STEMS,
    DEFAULT_DENY_WORDS,
    REDACTED,
    TRUNCATED,
    clean,
    is_card_number,
    key_words,
    looks_like_token,
    mask_secrets,
    normalise_key,
)
from .processors import SkipAudit, build_chain
from .urls import mask_segments, mask_template, redact_url

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
_SHORTEST_SCAN = 13  # shorter: only URL credentials, JWTs, key=value, key: value and "Basic YTpi" can match
_DETECTION_MARGIN = 8192  # detectors see this much past max_string, so a secret cut by the cap is still masked
_EMBEDDED_PAIR = re.compile(r"(^|[?&#;\s])([^=&#?;\s]{1,64})=([^&#;\s]*)")  # "?token=x", "&code=y", " pin=1"
# "key: value" fields in free text: JSON or a dict kept as a string ({"password":"x"}, {'pin': '1'}), one level
# of escaped JSON ({\"token\":\"x\"}), GraphQL inline arguments (password: "x"), YAML-like lines. Groups: the
# key's quote, the key, the separator, the value (quoted, possibly cut before its closing quote, or bare; a
# bare value never starts with "{" or "[", so the keys of a nested object are judged themselves).
_EMBEDDED_FIELD = re.compile(
    r"""(?<![\w"'\\])(\\?["']|)([A-Za-z_][\w\-.\[\]]{0,63})\1(\s*:\s*)"""
    r"""(\\"(?:(?!\\").)*(?:\\")?|"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?|(?:\[REDACTED\]|[^\s,;)}\]"'\\{\[])[^\s,;)}\]]*)""",
    re.S,
)
# A secret sent as a name/value pair ({"name": "password", "value": "x"}: jQuery serializeArray, form builders,
# Keycloak's {"type": "password", "value": ...}): the value entries go when a name entry names a secret.
_PAIR_VALUES = frozenset({"value", "values", "val", "Value", "Values"})
# (path: SCIM PatchOp and RFC 6902 JSON Patch, {"op": "replace", "path": "/password", "value": ...})
_PAIR_NAMES = (
    "name", "key", "field", "type", "param", "parameter", "id", "label", "path", "Name", "Key", "Field", "Type", "Path",
)  # fmt: skip
_MAX_PAIR_NAME = 64
_KEY_CACHE_SIZE = 4096
_MAX_DEPTH_LIMIT = 64  # deeper walks would risk the interpreter's recursion limit on hostile input
_HEADER_CACHE_SIZE = 1024  # header values remembered (per kind); cleared when full
_CACHED_HEADER_BYTES = 512  # longer values are redacted every time
_DENIED, _KEPT, _HIDDEN = 0, 1, 2  # what happens to the value under a key
_MAX_QUERY = 64 * 1024  # a query string is parsed up to this many characters


class _HeaderKind(enum.Enum):
    REDACT = "redact"
    URL = "url"
    TEXT = "text"


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
            credentials, provider API keys, sensitive ``key=value`` pairs and ``key: value`` fields,
            Luhn-valid card numbers) on every string.
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
        if self.max_depth > _MAX_DEPTH_LIMIT:
            raise ConfigurationError(f"max_depth must be at most {_MAX_DEPTH_LIMIT}, got {self.max_depth}")
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
        "_header_cache",
        "_keys",
        "_max_depth",
        "_max_items",
        "_max_string",
        "_media",
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
        self._cache: dict[str, bool] = {}
        self._keys: dict[str, tuple[str, int]] = {}
        self._header_cache: dict[_HeaderKind, dict[bytes, str]] = {kind: {} for kind in _HeaderKind}
        self._media: dict[str, str] = {}  # media types repeat (and are at most MAX_MEDIA_TYPE characters)
        self._detect = config.detect_values
        self._max_depth = config.max_depth
        self._max_items = config.max_items
        self._max_string = config.max_string
        self._window = config.max_string + _DETECTION_MARGIN
        self._captured = {name.encode("latin-1"): (name, self._header_kind(name)) for name in config.captured_headers}

    def _header_kind(self, name: str) -> _HeaderKind:
        norm = normalise_key(name)
        if any(stem in norm for stem in _ALWAYS_REDACTED_HEADER_STEMS) or self.is_sensitive_key(name):
            return _HeaderKind.REDACT
        return _HeaderKind.URL if name in _URL_HEADERS else _HeaderKind.TEXT

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

    def text(self, value: str, *, fields: bool = True) -> str:
        """Clean, bound and mask a client-controlled string.

        Removes NUL and other C0 controls (tab and newline stay), replaces lone surrogates with U+FFFD,
        masks detector hits with ``REDACTED`` (keeping the rest of the string) and cuts the result to
        ``max_string`` characters plus ``...[TRUNCATED]``. ``fields=False`` leaves ``key: value`` alone
        (paths and URLs: ``/v1/tokens:revoke`` names an action, not a secret).
        """
        if type(value) is not str and not isinstance(value, str):
            value = str(value)  # never raise on a caller's odd value
        if len(value) <= self._max_string and value.isprintable():  # fast path: nothing to clean or cut
            if self._detect and (
                len(value) >= _SHORTEST_SCAN or "eyJ" in value or "=" in value or ":" in value or " " in value
            ):  # (a space: "Basic YTpi", the base64 of a:b, is 10 characters)
                return self._mask(value, fields)
            return value
        if len(value) > self._window:
            value = value[: self._window]
        value = clean(value)
        if self._detect:
            value = self._mask(value, fields)
        if len(value) > self._max_string:
            value = value[: self._max_string] + "..." + TRUNCATED
        return value

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

    def _mask(self, value: str, fields: bool = True) -> str:
        """The value detectors, plus sensitive ``key=value`` pairs (URLs, query strings) and ``key: value``
        fields (embedded JSON, GraphQL arguments) in free text."""
        value = mask_secrets(value)
        if "=" in value:
            value = _EMBEDDED_PAIR.sub(self._embedded_pair, value)
        if fields and ":" in value:
            value = _EMBEDDED_FIELD.sub(self._embedded_field, value)
        return value

    def _embedded_pair(self, match: re.Match[str]) -> str:
        if self.is_sensitive_key(unquote_plus(match.group(2), errors="replace")):
            return match.group(1) + match.group(2) + "=" + REDACTED
        return match.group()

    def _embedded_field(self, match: re.Match[str]) -> str:
        quote, key, separator, value = match.groups()
        if value.strip("\\\"'") == REDACTED or not self.is_sensitive_key(key):
            return match.group()  # masked already (by a detector, or an earlier pass)
        opening = value[:2] if value.startswith('\\"') else value[:1] if value[:1] in "\"'" else ""
        closing = opening if len(value) > len(opening) and value.endswith(opening) else ""
        return quote + key + quote + separator + opening + REDACTED + closing

    def _key(self, key: Any) -> tuple[str, int]:
        """Cleaned key and what happens to its value: ``_DENIED``, ``_KEPT`` or ``_HIDDEN`` (allowlist miss)."""
        info = self._keys.get(key) if type(key) is str else None
        if info is not None:
            return info
        raw = key if type(key) is str else str(key)
        full = clean(raw[: self._window])  # judged whole: cutting a long key could cut off "password"
        name = self.text(raw)
        if self.is_sensitive_key(full):
            info = (name, _DENIED)
        elif self._allow is None or normalise_key(full) in self._allow:
            info = (name, _KEPT)
        else:
            info = (name, _HIDDEN)
        if type(key) is str:
            if len(self._keys) >= _KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[key] = info
        return info

    def _walk(self, value: Any, depth: int, keep: bool) -> Any:
        kind = type(value)
        if kind is str:  # the common cases first, by exact type
            return self.text(value) if keep else REDACTED
        if kind is dict or kind is list:
            if depth >= self._max_depth:
                return TRUNCATED
            return self._walk_dict(value, depth) if kind is dict else self._walk_list(value, depth, keep)
        if not keep:
            return REDACTED
        if value is None or kind is bool or kind is float:
            return value
        if kind is int:
            if self._detect and 10**12 <= value < 10**19 and is_card_number(str(value)):
                return REDACTED
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
        if isinstance(value, Mapping | list | tuple):
            if depth >= self._max_depth:
                return TRUNCATED
            return self._walk_dict(value, depth) if isinstance(value, Mapping) else self._walk_list(value, depth, keep)
        if isinstance(value, bytes | bytearray):
            return f"<{len(value)} bytes>"  # raw bytes are never stored
        return self.text(str(value))

    def _walk_dict(self, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        limit = self._max_items
        for count, (key, item) in enumerate(value.items()):
            if count >= limit:
                out[TRUNCATED] = len(value) - count
                break
            name, status = self._key(key)
            out[name] = REDACTED if status is _DENIED else self._walk(item, depth + 1, status is _KEPT)
        if not _PAIR_VALUES.isdisjoint(out):
            self._redact_pair(value, out)
        return out

    def _redact_pair(self, value: Mapping[Any, Any], out: dict[str, Any]) -> None:
        """Redact the value entries of a name/value pair whose name entry names a secret."""
        for name_key in _PAIR_NAMES:
            name = value.get(name_key)
            if type(name) is str and len(name) <= _MAX_PAIR_NAME and self.is_sensitive_key(name):
                for key in _PAIR_VALUES.intersection(out):
                    out[key] = REDACTED
                return

    def _walk_list(self, value: Sequence[Any], depth: int, keep: bool) -> list[Any]:
        limit = self._max_items
        items = [self._walk(item, depth + 1, keep) for item in value[:limit]]
        if len(value) > limit:
            items.append(f"{TRUNCATED} {len(value) - limit} more items")
        return items

    # -- request parts -------------------------------------------------------------------------------

    def headers(self, raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
        """Keep the captured headers of ASGI-style ``(name, value)`` pairs; credentials always ``REDACTED``.

        Names are lower-cased; repeated headers are joined with ``", "``; Referer and Origin go through
        :meth:`url`, every other value through :meth:`text`.
        """
        found: dict[bytes, list[bytes]] = {}
        captured = self._captured
        for raw_name, value in raw:
            lowered = raw_name.lower()
            if lowered in captured:
                found.setdefault(lowered, []).append(value)
        out: dict[str, str] = {}
        for lowered, values in found.items():
            name, kind = captured[lowered]
            if kind is _HeaderKind.REDACT:
                out[name] = REDACTED
                continue
            joined = bytes(values[0]) if len(values) == 1 else b", ".join(values)
            # User agents, hosts, content types repeat across requests: remember what they became.
            cache = self._header_cache[kind]
            result = cache.get(joined)
            if result is None:
                text = joined.decode("latin-1")
                result = self.url(text) if kind is _HeaderKind.URL else self.text(text)
                if len(joined) <= _CACHED_HEADER_BYTES:
                    if len(cache) >= _HEADER_CACHE_SIZE:
                        cache.clear()
                    cache[joined] = result
            out[name] = result
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
        total_size: int | None = None,
    ) -> dict[str, Any]:
        """Describe a captured request body, redacted; never returns raw bytes of an opaque body.

        Returns ``{"content_type", "size", "truncated", "fields"}`` when the body was parsed (JSON,
        urlencoded or multipart form), else ``{"content_type", "size", "omitted": reason}`` with reason
        one of ``empty``, ``compressed``, ``truncated``, ``unparseable``, ``binary``, ``unsupported``
        (see :mod:`audit_middleware.bodies`). ``size`` is ``total_size`` when the caller counted the
        whole body as it streamed through, else ``len(body)``. A body longer than ``max_body_bytes`` is
        treated as cut there.

        Example:
            >>> out = Redactor().body("application/json", b'{"user": "al", "password": "x"}', complete=True)
            >>> out["size"], out["truncated"], out["fields"]
            (31, False, {'user': 'al', 'password': '[REDACTED]'})
        """
        size = len(body) if total_size is None else total_size
        limit = self._config.max_body_bytes
        if len(body) > limit:
            body, complete = body[:limit], False
        parsed = parse_body(
            content_type,
            body,
            complete=complete,
            content_encoding=content_encoding,
            max_items=self._max_items,
            max_value=self._window * 4,
        )
        media = None if parsed.media_type is None else self._media_text(parsed.media_type)
        if parsed.omitted is not None:
            return {"content_type": media, "size": size, "omitted": parsed.omitted}
        fields = self.mapping(parsed.fields, allow_fields)
        return {"content_type": media, "size": size, "truncated": parsed.truncated, "fields": fields}

    def _media_text(self, media: str) -> str:
        result = self._media.get(media)
        if result is None:
            result = self.text(media)
            if len(self._media) >= _HEADER_CACHE_SIZE:
                self._media.clear()  # bounded: clients choose their content types
            self._media[media] = result
        return result

    def url(self, url: str) -> str:
        """Drop userinfo, mask token-looking path segments (a Referer can carry ``/reset/<token>``) and
        redact sensitive query (and fragment) keys of a URL, then :meth:`text` it."""
        return self.text(redact_url(url[: self._window], self._hides, looks_like_token), fields=False)

    def _hides(self, key: str) -> bool:
        return not self._keeps(key)

    def path(self, path: str, template: str | None = None, *, secret_params: bool = False) -> str:
        """Return ``path`` with secret segments masked, bounded and cleaned.

        With the route ``template`` (``/reset/{token}``, aligned on its end so a mount prefix does not
        matter) a segment whose parameter name is sensitive is masked; a sensitive ``{x:path}`` parameter
        masks all the segments it spans. ``secret_params`` masks every parameter whatever its name, and a
        trailing ``/**`` of a preset route as one: on an auth route (``/verify-email/{t}``) a path
        parameter is a secret unless shown otherwise, and a UUID or a 12-character token looks like an id.
        With or without a template, segments that look like credentials (JWTs, 16+ hex runs, 20+
        mixed-case-and-digit strings; not UUIDs or slugs) are masked, as are the value detectors' hits.
        """
        segments = path[: self._window].split("/")
        trailing = len(segments) > 2 and segments[-1] == ""
        if trailing:
            segments.pop()
        if template is not None:
            if secret_params:
                if template.endswith("/**"):
                    template = template[:-3] + "/{rest:path}"
                mask_template(segments, template, _every_name)
            else:
                mask_template(segments, template, self.is_sensitive_key)
        mask_segments(segments, looks_like_token)
        return self.text("/".join(segments) + ("/" if trailing else ""), fields=False)


def _every_name(name: str) -> bool:
    return True
