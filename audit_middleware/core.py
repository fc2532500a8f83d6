"""The framework-neutral core shared by the ASGI and WSGI middlewares.

The middlewares only translate their framework's objects into plain values:

* :class:`MiddlewareConfig`: every option of both middlewares, validated (an unknown option raises
  ``ConfigurationError`` naming it);
* :class:`AuditCore`: compiled once; ``match(method, path, root_path)`` decides (cheaply) whether a
  request is audited, ``build_event(request, response, match, context)`` turns a finished request
  into a redacted :class:`~audit_middleware.records.AuditEvent` (or None);
* :class:`RequestInfo` / :class:`ResponseInfo`: what the middleware saw, as plain values.

``build_event`` never raises: a failure inside auditing (a redaction bug, a user's callable) is
logged (rate-limited), counted in ``AuditCore.errors`` and still yields a minimal event.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, cast

from ._memo import RedactionMemo
from .context import AuditContext
from .errors import ConfigurationError
from .identity import (
    IDENTIFIER_FIELDS,
    MAX_IDENTIFIER,
    TrustedProxies,
    attempted_identifier,
    user_from_response,
    user_id_of,
)
from .preset import AUTH_PRESET
from .records import MAX_ACTION_LENGTH, AuditEvent
from .redaction import REDACTED, RedactionConfig, Redactor, build_chain
from .routing import RouteMatch, RouteSpec, compile_routes

__all__ = ["AuditCore", "MiddlewareConfig", "RequestInfo", "ResponseInfo"]

logger = logging.getLogger("audit_middleware.middleware")

MSG_AUDIT_FAILED = "auditing %s %s failed (%s: %s); recorded a minimal event (%s failures so far)"
MSG_HOOK_FAILED = "audit %s failed (%s: %s); the request is unaffected (%s failures so far)"
WARN_EVERY = 10.0
MAX_USER_AGENT = 512
MAX_PATH = 2048
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:+/=@-]{1,128}$")

HeaderPairs = Sequence[tuple[bytes, bytes]] | Sequence[tuple[str, str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class MiddlewareConfig:
    """Options of ``AuditMiddleware`` and ``AuditWSGIMiddleware`` (see the README for each).

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


@dataclass(slots=True)
class ResponseInfo:
    """What the middleware saw of the response.

    ``status`` is None if no response started (client gone); ``exception`` the type name of an
    exception the app raised (recorded as status 500). ``body`` is a capped prefix of the response
    body, kept only for login-type routes. ``route_template`` is the framework's matched template;
    ``user`` a user object or id seen after the app ran.
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
    user: Any = None


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else value


def _identifier_from(body: Any) -> str | None:
    """The attempted identifier among a redacted body's fields (already cleaned and masked)."""
    fields = body.get("fields") if isinstance(body, dict) else None
    if not isinstance(fields, dict):
        return None
    for name in IDENTIFIER_FIELDS:
        value = fields.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()[:MAX_IDENTIFIER]
    return None


def route_path(path: str, root_path: str) -> str:
    """``path`` relative to the mount point ``root_path`` (ASGI puts the mount in both)."""
    if root_path and path.startswith(root_path) and (len(path) == len(root_path) or path[len(root_path)] == "/"):
        return path[len(root_path) :] or "/"
    return path


class _RateLimited:
    def __init__(self) -> None:
        self._last = -WARN_EVERY

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last >= WARN_EVERY:
            self._last = now
            return True
        return False


class AuditCore:
    """Compiled configuration plus the request -> event logic. Holds no per-request state.

    Attributes:
        config: the validated :class:`MiddlewareConfig`.
        routes: the compiled :class:`~audit_middleware.routing.RouteTable` (user routes, then the preset).
        redactor: the ``Redactor`` every captured value goes through.
        body_cap: bytes of request body the middleware keeps (``RedactionConfig.max_body_bytes``).
        errors: how many requests hit a failure inside auditing.
        skipped: how many events a processor dropped.
    """

    def __init__(self, config: MiddlewareConfig | None = None, **options: Any) -> None:
        if config is None:
            config = MiddlewareConfig.from_options(**options)
        elif options:
            raise ConfigurationError("pass either a MiddlewareConfig or keyword options, not both")
        self.config = config
        self.routes = compile_routes(config.routes, AUTH_PRESET if config.preset else None)
        redaction = config.redaction if config.redaction is not None else RedactionConfig()
        self.redactor = Redactor(redaction)
        self._memo = RedactionMemo(self.redactor)
        self.body_cap: int = redaction.max_body_bytes
        self._chain = build_chain(cast(Any, config.processors)) if config.processors else None
        self.proxies = TrustedProxies(config.trusted_proxies, config.proxy_header)
        names = {"user-agent": "user_agent", "content-type": "content_type", "content-encoding": "content_encoding"}
        names[self.proxies.header] = "forwarded"
        if config.request_id_header:
            names[config.request_id_header.lower()] = "request_id"
        self._wanted = {k.encode("latin-1"): v for k, v in names.items()}  # header name -> what it is to us
        self._top_level_headers = tuple(k for k, v in names.items() if v in ("user_agent", "forwarded", "request_id"))
        self._suffix = config.failed_suffix
        self.errors = 0
        self.skipped = 0
        self._warn = _RateLimited()

    def make_writer(self) -> tuple[Any, bool]:
        """Return (writer, owned): the configured writer, or a new one on ``dsn`` the middleware owns."""
        if self.config.writer is not None:
            return self.config.writer, False
        from .buffer import AuditWriter

        return AuditWriter(self.config.dsn, **dict(self.config.writer_options)), True

    def resolve_user(self, carrier: Any) -> Any:
        """Call ``user_resolver(carrier)``; its result (maybe awaitable), or None if there is none or it raised."""
        resolver = self.config.user_resolver
        if resolver is None:
            return None
        try:
            return resolver(carrier)
        except Exception as exc:
            self.note_error("user_resolver", exc)
            return None

    def note_error(self, where: str, exc: BaseException) -> None:
        """Count and log (rate-limited) a failure inside auditing that the request must not see."""
        self.errors += 1
        if self._warn.ready():
            logger.warning(MSG_HOOK_FAILED, where, type(exc).__name__, exc, self.errors)

    # -- matching (request path: keep it cheap) ------------------------------------------------

    def match(self, method: str, path: str, root_path: str = "") -> RouteMatch | None:
        """The route a request maps to (None: not mapped). ``path`` is the decoded path, mount included."""
        if root_path:
            path = route_path(path, root_path)
        return self.routes.match(method, path)

    def rematch(self, method: str, template: str | None, before: RouteMatch | None) -> RouteMatch | None:
        """Prefer the route matching the framework's own template (known after the app returned)."""
        if template:
            found = self.routes.match(method, template)
            if found is not None:
                return found
        return before

    def wants_body(self, match: RouteMatch | None) -> bool:
        """Whether to keep a prefix of the request body for this match."""
        return self.config.capture_body and (match is None or match.spec is None or match.spec.body is not False)

    def wants_response_body(self, match: RouteMatch | None) -> bool:
        """Whether to peek at the response body (login-type routes, to find the user)."""
        spec = match.spec if match is not None else None
        return spec is not None and spec.user_from_response and self.config.user_from_response

    # -- events (after the response) -----------------------------------------------------------

    def build_event(
        self,
        request: RequestInfo,
        response: ResponseInfo,
        match: RouteMatch | None,
        context: AuditContext | None = None,
    ) -> AuditEvent | None:
        """The redacted event for a finished request, or None if it is not audited. Never raises."""
        action: str | None = None
        try:
            if context is not None and context.skipped:
                return None
            spec = match.spec if match is not None else None
            if match is not None and spec is None and (context is None or context.action is None):
                return None  # explicitly excluded route
            action = self._action(request, response, spec, context)
            if action is None:
                return None
            event = AuditEvent(action, self._user(request, response, spec, context))
            event.metadata = self._metadata(request, response, match, spec, context, event)
            if self._chain is not None:
                result = self._chain(event.metadata)
                if result is None:
                    self.skipped += 1
                    return None
                event.metadata = result
            return event
        except Exception as exc:
            return self._minimal(request, response, match, action, exc)

    def _failed(self, response: ResponseInfo) -> bool:
        if response.exception is not None:
            return True
        return response.status is not None and response.status >= self.config.failure_status

    def _action(
        self, request: RequestInfo, response: ResponseInfo, spec: RouteSpec | None, context: AuditContext | None
    ) -> str | None:
        if context is not None and context.action:
            return context.action
        if spec is None:
            if self.config.audit_unmapped or (context is not None and (context.metadata or context.has_user)):
                return self.config.unmapped_action
            return None
        action: str
        if callable(spec.action):
            computed = spec.action(request, response)
            if computed is None:
                return None
            action = str(computed)
        else:
            action = spec.action
        outcome = self.config.outcome_actions if spec.outcome is None else spec.outcome
        if outcome and self._failed(response):
            return spec.failed_action or (action + self._suffix)[:MAX_ACTION_LENGTH]
        return action

    def _user(
        self, request: RequestInfo, response: ResponseInfo, spec: RouteSpec | None, context: AuditContext | None
    ) -> Any:
        if context is not None and context.has_user:
            return user_id_of(context.user)
        if (
            spec is not None
            and spec.user_from_response
            and self.config.user_from_response
            and response.status is not None
            and response.status < 400
            and response.exception is None
        ):
            found = user_from_response([(_text(k).lower(), _text(v)) for k, v in response.headers], response.body)
            if found is not None:
                return found
        return user_id_of(response.user) or user_id_of(request.user)

    def _metadata(
        self,
        request: RequestInfo,
        response: ResponseInfo,
        match: RouteMatch | None,
        spec: RouteSpec | None,
        context: AuditContext | None,
        event: AuditEvent,
    ) -> dict[str, Any]:
        redactor = self.redactor
        given: Sequence[tuple[Any, Any]] = request.headers
        raw_headers: Sequence[tuple[bytes, bytes]] = given
        if given and type(given[0][0]) is str:  # WSGI: the redactor takes ASGI-style bytes pairs
            raw_headers = [(str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in given]
        wanted = self._wanted
        found: dict[str, str] = {}
        forwarded: list[str] = []
        for raw_name, raw_value in raw_headers:
            key = wanted.get(raw_name)  # ASGI header names are lower-case (the WSGI ones were lowered above)
            if key is None:
                continue
            value = raw_value.decode("latin-1")
            if key == "forwarded":
                forwarded.append(value)
            else:
                found[key] = value
        user_agent = found.get("user_agent")
        request_id = found.get("request_id", "").strip()
        content_type = found.get("content_type")
        ip, chain = self.proxies.client_ip(request.client, forwarded)
        if not request_id or not _REQUEST_ID.match(request_id):
            request_id = str(event.id)
        template = response.route_template or (match.template if match is not None else None)
        path = route_path(request.path, request.root_path)[:MAX_PATH]
        status = response.status
        if status is None and response.exception is not None:
            status = 500
        http: dict[str, Any] = {
            "method": request.method[:16],
            "path": self._memo.path(path, template),
            "route": template,
            "status": status,
            "duration_ms": round(response.duration * 1000, 3),
        }
        if response.exception is not None:
            http["exception"] = response.exception[:200]
        if response.disconnected and not response.completed:
            http["outcome"] = "client_disconnected"
        metadata: dict[str, Any] = {
            "ip": ip,
            "user_agent": self._memo.text(user_agent[:MAX_USER_AGENT]) if user_agent is not None else None,
            "request_id": request_id,
            "http": http,
        }
        if chain:
            metadata["forwarded_for"] = chain
        if request.query_string:
            metadata["query"] = redactor.query(request.query_string)
        headers = self._memo.headers(raw_headers)
        for name in self._top_level_headers:  # already stored at the top level
            headers.pop(name, None)
        if headers:
            metadata["headers"] = headers
        body: Any = None
        if request.body_size and self.wants_body(match):
            allow = spec.body if spec is not None and isinstance(spec.body, tuple) else None
            body = metadata["body"] = redactor.body(
                content_type,
                request.body,
                complete=request.body_complete,
                content_encoding=found.get("content_encoding"),
                allow_fields=allow,
                total_size=request.body_size,
            )
        if spec is not None and spec.identifier and request.body and content_type:
            identifier = _identifier_from(body)
            if identifier is None:  # the body was not captured, or its allowlist dropped the field
                identifier = attempted_identifier(content_type, request.body)
                if identifier is not None:
                    identifier = redactor.text(identifier)
            if identifier is not None and identifier != REDACTED:
                metadata["identifier"] = identifier
        if spec is not None and spec.metadata:
            metadata.update(spec.metadata)
        if context is not None and context.metadata:
            metadata.update(redactor.mapping(context.metadata))
        return metadata

    def _minimal(
        self,
        request: RequestInfo,
        response: ResponseInfo,
        match: RouteMatch | None,
        action: str | None,
        exc: Exception,
    ) -> AuditEvent:
        """The event recorded when auditing itself failed: no captured content, nothing client-sent but the IP."""
        self.errors += 1
        if self._warn.ready():
            logger.warning(
                MSG_AUDIT_FAILED, request.method, match.key if match else "-", type(exc).__name__, exc, self.errors
            )
        if action is None:
            spec_action = match.spec.action if match is not None and match.spec is not None else None
            action = spec_action if isinstance(spec_action, str) else self.config.unmapped_action
        status = response.status if response.status is not None else (500 if response.exception else None)
        return AuditEvent(
            action,
            None,
            {
                "ip": request.client,
                "http": {
                    "method": request.method[:16],
                    "route": response.route_template or (match.template if match is not None else None),
                    "status": status,
                    "duration_ms": round(response.duration * 1000, 3),
                },
                "_audit": {"error": type(exc).__name__},
            },
        )
