"""URL and path helpers for :class:`~audit_middleware.redaction.Redactor` (kept apart to keep modules small).

Both take a predicate saying whether a key or parameter name is sensitive; neither cleans or bounds
the result: the redactor passes it through :meth:`~audit_middleware.redaction.Redactor.text` after.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote_plus

from .detectors import REDACTED

__all__ = ["mask_segments", "mask_template", "redact_url"]

_TEMPLATE_PARAM = re.compile(r"^\{([^}:]+)(?::([^}]*))?\}$")


def redact_url(url: str, hides: Callable[[str], bool], masks: Callable[[str], bool] | None = None) -> str:
    """Drop the userinfo of ``url`` and replace values of query and fragment keys that ``hides``
    (and path segments that ``masks``, when given).

    Example:
        >>> redact_url("https://u:p@x.example/cb?code=1&state=2", lambda key: key == "code")
        'https://x.example/cb?code=[REDACTED]&state=2'
    """
    scheme, sep, rest = url.partition("://")
    if sep and "/" not in scheme:
        authority, tail = _split_authority(rest)
        if "@" in authority:
            authority = authority.rpartition("@")[2]
        url = scheme + sep + authority + tail
    head, qmark, query = url.partition("?")
    query, hash_, fragment = query.partition("#")
    if not qmark:
        head, hash_, fragment = head.partition("#")
    if masks is not None:
        segments = head.split("/")
        mask_segments(segments, masks, start=3 if sep and "/" not in scheme else 0)  # after scheme:, "", authority
        head = "/".join(segments)
    return head + qmark + _redact_pairs(query, hides) + hash_ + _redact_pairs(fragment, hides)


def mask_segments(segments: list[str], masks: Callable[[str], bool], start: int = 0) -> None:
    """Replace, from ``start`` on, the path segments that ``masks`` (a URL's path, or a request's)."""
    for index in range(start, len(segments)):
        if masks(segments[index]):
            segments[index] = REDACTED


def _redact_pairs(query: str, hides: Callable[[str], bool]) -> str:
    if "=" not in query:
        return query
    pairs = query.split("&")
    for index, pair in enumerate(pairs):
        name, eq, _ = pair.partition("=")
        if eq and hides(unquote_plus(name, errors="replace")):
            pairs[index] = name + "=" + REDACTED
    return "&".join(pairs)


def _split_authority(rest: str) -> tuple[str, str]:
    for index, char in enumerate(rest):
        if char in "/?#":
            return rest[:index], rest[index:]
    return rest, ""


def mask_template(segments: list[str], template: str, is_sensitive: Callable[[str], bool]) -> None:
    """Mask the segments bound to sensitive template parameters, aligned on the template's end.

    Right alignment keeps a mount prefix (``root_path``) from shifting the match. A ``{name:path}``
    parameter spans several segments: literal parts before it locate its start.
    """
    parts = template.rstrip("/").split("/") if template.strip("/") else [""]
    params = [_TEMPLATE_PARAM.match(part) for part in parts]
    spans = [index for index, match in enumerate(params) if match is not None and match.group(2) == "path"]
    if len(segments) < len(parts):
        return  # this path cannot come from this template
    if not spans:
        offset = len(segments) - len(parts)
        for index, match in enumerate(params):
            if match is not None and is_sensitive(match.group(1).strip()):
                segments[offset + index] = REDACTED
        return
    span = spans[0]
    tail = len(parts) - span - 1
    start = span  # the path parameter's first segment: after the literal head, wherever it is mounted
    for offset in range(len(segments) - len(parts) + 1):
        if all(params[i] is not None or parts[i] in ("", segments[offset + i]) for i in range(span)):
            start = offset + span
            break
    end = len(segments) - tail
    for index in range(len(parts) - 1, span, -1):  # parameters after the span, from the end
        match = params[index]
        position = len(segments) - (len(parts) - index)
        if match is not None and is_sensitive(match.group(1).strip()):
            segments[position] = REDACTED
    for index in range(span):  # parameters before the span, from its start
        match = params[index]
        if match is not None and is_sensitive(match.group(1).strip()):
            segments[start - span + index] = REDACTED
    match = params[span]
    if match is not None and is_sensitive(match.group(1).strip()):
        segments[start:end] = [REDACTED]
