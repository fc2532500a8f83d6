"""A bounded memo of what the Redactor makes of repeated request header values.

Most header values repeat from request to request (User-Agent, Accept, Host, Content-Type), and
running the value detectors over each of them is a large share of an audited request's cost. The
Redactor is deterministic for a given configuration, so its answer per (name, value) can be reused.
Values of headers the Redactor always redacts (Authorization, cookies, API keys) are never used as
cache keys, so no secret is kept in memory longer than its request; long values are not cached.
"""

from __future__ import annotations

from collections.abc import Sequence

from .redactor import REDACTED, Redactor

__all__ = ["RedactionMemo"]

MAX_ENTRIES = 4096
MAX_VALUE = 512
_PROBE = b"audit-middleware-probe-value"


class RedactionMemo:
    """``headers()`` and ``text()`` with the same results as the Redactor's, cached for repeated values."""

    __slots__ = ("_captured", "_headers", "_paths", "_redactor", "_secret", "_texts")

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._captured = frozenset(name.encode("latin-1") for name in redactor.config.captured_headers)
        # The Redactor redacts these by name whatever the value: ask it once per captured name.
        self._secret = frozenset(
            name
            for name in self._captured
            if redactor.headers([(name, _PROBE)]).get(name.decode("latin-1")) == REDACTED
        )
        self._headers: dict[tuple[bytes, bytes], dict[str, str]] = {}
        self._texts: dict[str, str] = {}
        self._paths: dict[str, str] = {}

    def headers(self, raw: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
        """Same as ``Redactor.headers(raw)`` (lower-case bytes names, as ASGI sends them)."""
        captured, cache = self._captured, self._headers
        out: dict[str, str] = {}
        seen: set[bytes] = set()
        uncached: list[tuple[bytes, bytes]] = []
        for pair in raw:
            name, value = pair
            if name not in captured:
                continue
            if name in seen:  # a repeated header: the Redactor joins the values
                return self._redactor.headers(raw)
            seen.add(name)
            if name in self._secret or len(value) > MAX_VALUE:
                uncached.append(pair)
                continue
            hit = cache.get(pair)
            if hit is None:
                hit = self._redactor.headers([pair])
                if len(cache) >= MAX_ENTRIES:
                    cache.clear()  # bounded: clients control these values
                cache[(name, value)] = hit
            out.update(hit)
        if uncached:
            out.update(self._redactor.headers(uncached))
        return out

    def text(self, value: str) -> str:
        """Same as ``Redactor.text(value)``, cached for short values (e.g. User-Agent)."""
        hit = self._texts.get(value)
        if hit is not None:
            return hit
        result = self._redactor.text(value)
        if len(value) <= MAX_VALUE:
            if len(self._texts) >= MAX_ENTRIES:
                self._texts.clear()
            self._texts[value] = result
        return result

    def path(self, path: str, template: str | None, *, secret_params: bool = False) -> str:
        """Same as ``Redactor.path(path, template, secret_params=...)``; cached when the path is its own (static)
        route template."""
        if template is None or path != template:  # concrete values may be secrets: never cached
            return self._redactor.path(path, template, secret_params=secret_params)
        if secret_params and ("{" in template or template.endswith("/**")):  # only parameters can differ with
            return self._redactor.path(path, template, secret_params=True)  # it: a static route (/login) is cached
        hit = self._paths.get(path)
        if hit is None:
            hit = self._redactor.path(path, template)
            if len(self._paths) >= MAX_ENTRIES:
                self._paths.clear()
            self._paths[path] = hit
        return hit
