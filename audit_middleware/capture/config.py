"""Plain values shared by the middlewares and the core: the options, and what a request looked like.

``MiddlewareConfig`` holds every option of ``AuditMiddleware`` and ``AuditWSGIMiddleware``;
``RequestInfo`` and ``ResponseInfo`` are what a middleware saw of one request, with no framework
objects in them (re-exported by ``core.py``); ``Exchange`` is what both middlewares' wrappers
collect while the request runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ConfigurationError
from ..redaction.redactor import RedactionConfig
from ..writer.records import MAX_ACTION_LENGTH
from .evidence import AuthEvidence
from .identity import TrustedProxies

__all__ = ["Exchange", "HeaderPairs", "MiddlewareConfig", "RequestInfo", "ResponseInfo", "route_path"]

HeaderPairs = Sequence[tuple[bytes, bytes]] | Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class MiddlewareConfig:
    """Options of ``AuditMiddleware`` and ``AuditWSGIMiddleware`` (each is described in docs/configuration.md).

    Attributes:
        dsn: PostgreSQL DSN for the middleware's own writer (or ``AUDIT_DSN``); ignored with ``writer``.
        writer: an existing ``AuditWriter`` shared with hand-recorded events (not closed by the middleware).
        writer_options: extra ``WriterConfig`` fields for the middleware's own writer.
        routes: ``{"METHOD /path": action | spec | callable | None}`` (see ``routing.py``).
        preset: also audit the usual auth endpoints (``preset.py``); user routes win.
        audit_unmapped: record requests no route matches, as ``unmapped_action``.
        trusted_proxies: peers whose ``proxy_header`` is believed (IPs, CIDRs or ``"*"``).
        proxy_header: ``"x-forwarded-for"`` or ``"forwarded"``.
        request_id_header: request header holding a request id (validated), else one is generated.
        user_resolver: ``fn(request) -> user | id | None`` (sync or async; the ASGI middleware passes the
            scope, the WSGI one the environ), called after the app (before it on logout-type routes).
        user_from_response: on login-type routes, take the user from the app's successful response.
        outcome_actions: record ``<action><failed_suffix>`` when a request fails.
        failed_suffix: suffix of failed actions.
        failure_status: the lowest status counted as failed.
        capture_body: capture (redacted) request bodies of audited routes.
        max_response_peek: bytes of a login-type JSON response kept to find the user (never buffered).
        redaction: a ``RedactionConfig``; None uses the defaults.
        processors: steps over the final metadata, ``fn(metadata) -> metadata`` (return None or raise
            ``SkipAudit`` to drop the event); see ``redaction.build_chain``.
        strict_timeout: seconds a ``strict`` route waits for its event's commit before answering 503.
    """

    dsn: str | None = None
    writer: Any = None
    writer_options: Mapping[str, Any] = field(default_factory=dict)
    routes: Mapping[str, Any] | None = None
    preset: bool = True
    audit_unmapped: bool = False
    unmapped_action: str = "http_request"
    trusted_proxies: Sequence[str] | str = ("127.0.0.1", "::1")
    proxy_header: str = "x-forwarded-for"
    request_id_header: str | None = "x-request-id"
    user_resolver: Callable[[Any], Any] | None = None
    user_from_response: bool = True
    outcome_actions: bool = True
    failed_suffix: str = "_failed"
    failure_status: int = 400
    capture_body: bool = True
    max_response_peek: int = 16 * 1024
    redaction: RedactionConfig | None = None
    processors: Sequence[Callable[[dict[str, Any]], dict[str, Any] | None]] = ()
    strict_timeout: float = 2.0

    def __post_init__(self) -> None:
        for name in ("preset", "audit_unmapped", "user_from_response", "outcome_actions", "capture_body"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.dsn is not None and (not isinstance(self.dsn, str) or not self.dsn):
            raise ConfigurationError("dsn must be a non-empty string")
        if not isinstance(self.writer_options, Mapping):
            raise ConfigurationError("writer_options must be a mapping of WriterConfig fields")
        if self.routes is not None and not isinstance(self.routes, Mapping):
            raise ConfigurationError("routes must be a mapping of 'METHOD /path' to actions")
        if not isinstance(self.unmapped_action, str) or not 0 < len(self.unmapped_action) <= MAX_ACTION_LENGTH:
            raise ConfigurationError(f"unmapped_action must be 1-{MAX_ACTION_LENGTH} characters")
        if not isinstance(self.failed_suffix, str) or len(self.failed_suffix) > 40:
            raise ConfigurationError("failed_suffix must be a string of at most 40 characters")
        if isinstance(self.failure_status, bool) or not isinstance(self.failure_status, int):
            raise ConfigurationError(f"failure_status must be an integer, got {self.failure_status!r}")
        if not 100 <= self.failure_status <= 600:
            raise ConfigurationError(f"failure_status must be an HTTP status, got {self.failure_status!r}")
        rid = self.request_id_header
        if rid is not None and (not isinstance(rid, str) or not rid):
            raise ConfigurationError("request_id_header must be a header name or None")
        if self.user_resolver is not None and not callable(self.user_resolver):
            raise ConfigurationError("user_resolver must be callable")
        peek = self.max_response_peek
        if isinstance(peek, bool) or not isinstance(peek, int) or not 0 <= peek <= 1024 * 1024:
            raise ConfigurationError(f"max_response_peek must be an integer 0..1048576, got {peek!r}")
        if not isinstance(self.processors, Sequence) or not all(callable(p) for p in self.processors):
            raise ConfigurationError("processors must be a sequence of callables")
        object.__setattr__(self, "processors", tuple(self.processors))
        if self.redaction is not None and not isinstance(self.redaction, RedactionConfig):
            raise ConfigurationError(f"redaction must be a RedactionConfig, got {type(self.redaction).__name__}")
        timeout = self.strict_timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
            raise ConfigurationError(f"strict_timeout must be a number of seconds in (0, 300], got {timeout!r}")
        TrustedProxies(self.trusted_proxies, self.proxy_header)  # validates both

    @classmethod
    def from_options(cls, **options: Any) -> MiddlewareConfig:
        """Build a config from keyword options; an unknown option raises ``ConfigurationError`` naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigurationError(f"unknown option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        return cls(**options)


@dataclass(slots=True)
class RequestInfo:
    """What the middleware saw of the request, as plain values.

    ``headers`` are (name, value) pairs, bytes (ASGI) or str (WSGI); names are compared lower-case.
    ``body`` is the captured prefix (at most the redaction capture cap), ``body_complete`` whether it
    is the whole body, ``body_size`` how many bytes the app was sent in total. ``user`` is a user
    object or id seen before the app ran (framework auth or ``user_resolver``).
    """

    method: str
    path: str
    root_path: str = ""
    query_string: bytes | str = b""
    headers: HeaderPairs = ()
    client: str | None = None
    body: bytes = b""
    body_complete: bool = True
    body_size: int = 0
    user: Any = None
    interrupted: bool = False  # the client went away before sending the whole body


@dataclass(slots=True)
class ResponseInfo:
    """What the middleware saw of the response.

    ``status`` is None if no response started (client gone); ``exception`` the type name of an
    exception the app raised (recorded as status 500). ``body`` is a capped prefix of the response
    body, kept only for login-type routes. ``route_template`` is the framework's matched template;
    ``user`` a user object or id seen after the app ran. ``evidence`` is what framework glue reported
    (:mod:`~audit_middleware.capture.evidence`), ``watching`` the actions whose signals it had connected.
    """

    status: int | None = None
    headers: HeaderPairs = ()
    body: bytes = b""
    bytes_sent: int = 0
    duration: float = 0.0
    completed: bool = False
    disconnected: bool = False
    exception: str | None = None
    route_template: str | None = None
    routed: bool | None = None  # the framework said it matched a route (True) or none (False); None: unknown
    user: Any = None
    evidence: Sequence[AuthEvidence] = ()
    watching: AbstractSet[str] = frozenset()


def route_path(path: str, root_path: str) -> str:
    """``path`` relative to the mount point ``root_path`` (ASGI puts the mount in both)."""
    if root_path and path.startswith(root_path) and (len(path) == len(root_path) or path[len(root_path)] == "/"):
        return path[len(root_path) :] or "/"
    return path


class Exchange:
    """What one request's wrappers saw, in either middleware (per request: never state on the middleware)."""

    __slots__ = (
        "body",
        "body_complete",
        "body_size",
        "bytes_sent",
        "completed",
        "disconnected",
        "error",
        "interrupted",
        "kept",
        "peek",
        "peeked",
        "response_body",
        "response_headers",
        "status",
    )

    def __init__(self, peek: int) -> None:
        self.body: list[bytes] = []
        self.kept = 0
        self.body_size = 0
        self.body_complete = False
        self.status: int | None = None
        self.response_headers: Any = ()  # as the server gave them: ASGI bytes pairs, WSGI str pairs
        self.response_body: list[bytes] = []
        self.peek = peek
        self.peeked = 0
        self.bytes_sent = 0
        self.completed = False
        self.disconnected = False
        self.interrupted = False  # the client left before the end of the request body
        self.error: str | None = None

    def sent(self, chunk: bytes) -> None:
        """Count a chunk of response body and keep it while the peek (login responses) wants more."""
        self.bytes_sent += len(chunk)
        if self.peek and self.peeked < self.peek:
            piece = chunk[: self.peek - self.peeked]
            self.response_body.append(bytes(piece))
            self.peeked += len(piece)
