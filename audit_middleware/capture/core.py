"""The framework-neutral core shared by the ASGI and WSGI middlewares.

The middlewares only translate their framework's objects into plain values:

* :class:`MiddlewareConfig`: every option of both middlewares, validated (an unknown option raises
  ``ConfigurationError`` naming it);
* :class:`AuditCore`: compiled once; ``match(method, path, root_path)`` decides (cheaply) whether a
  request is audited, ``build_event(request, response, match, context)`` turns a finished request
  into a redacted :class:`~audit_middleware.records.AuditEvent` (or None);
* :class:`RequestInfo` / :class:`ResponseInfo`: what the middleware saw, as plain values.

``MiddlewareConfig``, ``RequestInfo`` and ``ResponseInfo`` live in ``options.py`` and are re-exported here.

``build_event`` never raises: a failure inside auditing (a redaction bug, a user's callable) is
logged (rate-limited), counted in ``AuditCore.errors`` and still yields a minimal event.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, cast

from ..errors import ConfigurationError, describe_failure
from ..redaction.detectors import looks_like_token
from ..redaction.memo import RedactionMemo
from ..redaction.redactor import REDACTED, RedactionConfig, Redactor, build_chain
from ..writer.records import MAX_ACTION_LENGTH, AuditEvent
from .config import HeaderPairs, MiddlewareConfig, RequestInfo, ResponseInfo, route_path
from .context import AuditContext
from .evidence import LOGIN_TYPE, AuthEvidence
from .identity import (
    IDENTIFIER_FIELDS,
    MAX_IDENTIFIER,
    TrustedProxies,
    attempted_identifier,
    user_from_response,
    user_id_of,
)
from .outcome import FAILED, FORM_ACTIONS, MFA_PENDING, SUCCEEDED, TOKEN_ACTIONS, mfa_hint, response_outcome
from .preset import AUTH_ACTIONS, AUTH_PRESET, Corroborated
from .routing import RouteMatch, RouteSpec, compile_routes, normalize_path

__all__ = [
    "AuditCore",
    "CoreMiddleware",
    "HeaderPairs",
    "MiddlewareConfig",
    "RequestInfo",
    "ResponseInfo",
    "route_path",
]

logger = logging.getLogger("audit_middleware.middleware")

MSG_AUDIT_FAILED = "auditing %s %s failed (%s); recorded a minimal event (%s failures so far)"
MSG_HOOK_FAILED = "audit %s failed (%s); the request is unaffected (%s failures so far)"
MSG_STARTED = "audit middleware: %s routes audited (%s user routes + %s preset rows) into %s%s"
WARN_EVERY = 10.0
MAX_USER_AGENT = 512
MAX_PATH = 2048
# What a strict route answers when its event is not committed in time (both middlewares).
UNAVAILABLE_BODY = b'{"detail":"audit trail unavailable, try again"}'
UNAVAILABLE_RETRY_AFTER = "5"
# What a router answers when no view takes the path (404) or the method (405), or when it sends the client
# to the canonical URL first (308: Werkzeug's /register -> /register/, which then records the real event)
_ROUTER_REFUSED = (404, 405, 308)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:+/=@-]{1,128}$")
_UUID_TEXT = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


_UNROUTED = (404, 405)
_UNASKED: Any = object()  # (_action's third value) nobody looked for the user in the response yet
_UNTRUSTED: Any = object()  # the outcome is not a success: the response must not name the user
_ATTEMPT = "_attempt"  # a preset action whose outcome nothing tells: login_attempt, signup_attempt...
_MFA_PENDING_ACTION = "login_mfa_pending"


def _reached(request: RequestInfo, response: ResponseInfo) -> bool:
    """Whether a 404/405 came from a view rather than the router: ``//login`` never reaches the login view.

    The framework knows (its matched route); without it, a 405 is the router's (the method was refused
    before any view), and a 404 on a path that is not in normal form (``//login``, ``/./login``,
    ``/api/../login``, ``/login/``) is the router's too.
    """
    if response.routed is not None:
        return response.routed and response.status != 405
    if response.status == 405:
        return False
    return normalize_path(request.path) == request.path


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else value


def _lowered(headers: Sequence[tuple[Any, Any]]) -> list[tuple[str, str]]:
    """(lower-case name, value) text pairs; ASGI bytes pairs decoded inline, without two calls per pair."""
    if headers and type(headers[0][0]) is bytes:
        try:
            return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in headers]
        except AttributeError:  # a str or memoryview among the bytes: the general way below
            pass
    return [(_text(k).lower(), _text(v)) for k, v in headers]


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


def _chosen_evidence(reported: Sequence[AuthEvidence], spec: RouteSpec | None) -> AuthEvidence | None:
    """The evidence that decides the event: the one about the matched route's own action, else the first
    (a sign-up that also signs the user in is a sign-up; a view that calls ``login()`` is a login). An action
    that failed and then succeeded in the same request (a view trying the name as a username, then as an
    e-mail) succeeded."""
    wanted = getattr(spec.action, "action", spec.action) if spec is not None else None  # (a Corroborated row too)
    first = next((e for e in reported if e.action == wanted), reported[0] if reported else None)
    if first is None:
        return None
    if not first.succeeded:
        first = next((e for e in reported if e.action == first.action and e.succeeded), first)
    if first.action != wanted and wanted == "signup" and first.action == "login" and first.succeeded:
        # a sign-up view that signs the new user in (Django's login()): nothing announces the sign-up
        # itself, and the user signed in is the one just created
        return replace(first, action="signup")
    return first


class _RateLimited:
    def __init__(self) -> None:
        self._last = -WARN_EVERY

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last >= WARN_EVERY:
            self._last = now
            return True
        return False


class CoreMiddleware:
    """What the ASGI and WSGI middlewares both keep of their configuration: the compiled core and the
    options they read on every request (plain attributes, no lookups through the config)."""

    core: AuditCore

    def _compile(self, config: MiddlewareConfig) -> AuditCore:
        self.core = AuditCore(config)
        self._unmapped = config.audit_unmapped
        self._peek = config.max_response_peek
        self._has_resolver = config.user_resolver is not None
        self._strict_timeout = config.strict_timeout
        return self.core

    @property
    def config(self) -> MiddlewareConfig:
        """The validated configuration."""
        return self.core.config

    def _announce(self, writer: Any) -> None:
        """Say once, at startup, where rows go and how many routes are audited (the user's, the preset's)."""
        config = self.core.config
        user_routes = {key for key, value in (config.routes or {}).items() if value is not None}
        preset_rows = len(set(AUTH_PRESET) - set(config.routes or ())) if config.preset else 0
        logger.info(
            MSG_STARTED,
            len(user_routes) + preset_rows,
            len(user_routes),
            preset_rows,
            _target_table(writer, config),
            f", and every other request as {config.unmapped_action!r}" if config.audit_unmapped else "",
        )


def _target_table(writer: Any, config: MiddlewareConfig) -> str:
    """``schema.table`` of the writer (or of the one the middleware will build from its options)."""
    found = getattr(writer, "config", None)
    if found is None:
        from ..writer.config import WriterConfig

        try:
            found = WriterConfig.from_env(dsn=config.dsn, **dict(config.writer_options))
        except Exception:  # (the writer built later says what is wrong with its options)
            return "the writer's table"
    return f"{found.schema}.{found.table}"


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
        # The preset's specs, by identity: its routes are guesses, so they record less when in doubt.
        self._preset = frozenset(id(spec) for spec in AUTH_PRESET.values()) if config.preset else frozenset()
        self._user_keys = frozenset(config.routes or ())  # RouteMatch.key of the user's own routes
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
        # On an auth route a path parameter is a secret unless shown otherwise (a verification or reset token
        # can be a UUID or 12 characters, which pass for ids): events of the preset's actions mask every one.
        self._auth_actions = frozenset(AUTH_ACTIONS) | {action + config.failed_suffix for action in AUTH_ACTIONS}
        self.errors = 0
        self.skipped = 0
        self._warn = _RateLimited()

    def make_writer(self) -> tuple[Any, bool]:
        """Return (writer, owned): the configured writer, or a new one on ``dsn`` the middleware owns."""
        if self.config.writer is not None:
            return self.config.writer, False
        from ..writer.writer import AuditWriter

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
            # by class and place, never by message: a message can quote a session id
            logger.warning(MSG_HOOK_FAILED, where, describe_failure(exc), self.errors)

    # -- matching (request path: keep it cheap) ------------------------------------------------

    def match(self, method: str, path: str, root_path: str = "") -> RouteMatch | None:
        """The route a request maps to (None: not mapped). ``path`` is the decoded path, mount included."""
        if root_path:
            path = route_path(path, root_path)
        return self.routes.match(method, path)

    def rematch(self, method: str, template: str | None, before: RouteMatch | None) -> RouteMatch | None:
        """Prefer the route matching the framework's own template (known after the app returned).

        The user's routes always win over the preset: when the request's path matched one of them, a
        preset route matching the template does not replace it (a template can lack a prefix the path
        has, as FastAPI 0.137-0.165 route objects do under ``include_router(prefix=...)``: ``/login`` for
        a route the user mapped as ``"POST /auth/cookie/login": "cookie_login"`` or ``None``).
        """
        if template:
            found = self.routes.match(method, template)
            if found is not None and (
                before is None or found.key in self._user_keys or before.key not in self._user_keys
            ):
                return found
        return before

    def wants_body(self, match: RouteMatch | None) -> bool:
        """Whether to keep a prefix of the request body for this match (to store, or to corroborate a preset row)."""
        spec = match.spec if match is not None else None
        if spec is not None and type(spec.action) is Corroborated:
            return True  # read by the check; stored only with capture_body
        return self.config.capture_body and (spec is None or spec.body is not False)

    def wants_response_body(self, match: RouteMatch | None) -> bool:
        """Whether to keep the response headers and peek at a JSON body (login-type routes: the user and the
        outcome; corroborated preset rows: what the app answered)."""
        spec = match.spec if match is not None else None
        return spec is not None and (spec.user_from_response or getattr(spec.action, "peek", False))

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
            evidence = _chosen_evidence(response.evidence, spec) if response.evidence else None
            action, auth, named = self._action(request, response, spec, context, evidence)
            if action is None:
                return None
            user = self._user(request, response, spec, context, evidence, named)
            event = AuditEvent(action, self._redacted_user(user))
            event.metadata = self._metadata(request, response, match, spec, context, event)
            if evidence is not None:
                self._add_evidence(event.metadata, response.evidence, evidence)
            elif auth is not None:
                event.metadata["auth"] = auth
            if self._chain is not None:
                result = self._chain(event.metadata)
                if result is None:
                    self.skipped += 1
                    return None
                event.metadata = result
            return event
        except Exception as exc:
            return self._minimal(request, response, match, action, exc)

    def _action(
        self,
        request: RequestInfo,
        response: ResponseInfo,
        spec: RouteSpec | None,
        context: AuditContext | None,
        evidence: AuthEvidence | None,
    ) -> tuple[str | None, dict[str, Any] | None, Any]:
        """(action or None for no row, ``metadata.auth`` or None, the user the response names: ``_UNASKED``
        when not looked up yet, ``_UNTRUSTED`` when the response must not name one)."""
        if context is not None and context.action:
            return context.action, None, _UNASKED
        if evidence is not None:  # the framework said what happened: it beats anything the response suggests
            # ...except the name of a route the user mapped themselves ("POST /auth/cookie/login": "cookie_login"):
            # the user's routes always win; the evidence then decides only the outcome and the user.
            own = (
                spec.action
                if spec is not None and isinstance(spec.action, str) and id(spec) not in self._preset
                else None
            )
            if evidence.succeeded:
                return own or evidence.action, None, _UNASKED
            if spec is not None and spec.failed_action and (own is not None or spec.action == evidence.action):
                return spec.failed_action, None, _UNTRUSTED  # the route's own name for its failure
            return ((own or evidence.action) + self._suffix)[:MAX_ACTION_LENGTH], None, _UNTRUSTED
        if spec is None:
            if self.config.audit_unmapped or (context is not None and (context.metadata or context.has_user)):
                return self.config.unmapped_action, None, _UNASKED
            return None, None, _UNTRUSTED
        action: str
        if callable(spec.action):
            computed = spec.action(request, response)
            if computed is None:
                return None, None, _UNTRUSTED
            action = str(computed)
        else:
            action = spec.action
        guess = id(spec) in self._preset
        if guess and response.status in _UNROUTED and not _reached(request, response):
            return None, None, _UNTRUSTED  # the router answered (//login, /api/../login): no auth view ran
        if action in response.watching and response.route_template is None and response.status in _ROUTER_REFUSED:
            return None, None, _UNTRUSTED  # the glue watches this action, yet its router matched no view
        if request.interrupted:  # the client left mid-body: nothing was decided, whatever the app did next
            return (action + _ATTEMPT if guess else action), {"outcome": "client_disconnected"}, _UNTRUSTED
        if action in response.watching and response.route_template is not None:
            # The glue listens for this action and the request reached a view, yet nothing was announced:
            # it did not happen. A login-type POST is a failed attempt; anything else (a GET that only shows
            # a logout confirmation page) is no auth event at all.
            if action in LOGIN_TYPE and request.method == "POST":
                return spec.failed_action or (action + self._suffix)[:MAX_ACTION_LENGTH], None, _UNTRUSTED
            return None, None, _UNTRUSTED
        outcome = self.config.outcome_actions if spec.outcome is None else spec.outcome
        if not outcome:
            return action, None, _UNASKED
        if response.exception is not None and not response.completed:  # (after a complete response, a failing
            # background task, the outcome is what the client received; http.exception says the rest)
            return spec.failed_action or (action + self._suffix)[:MAX_ACTION_LENGTH], None, _UNTRUSTED
        status = response.status
        if action in FORM_ACTIONS and response.headers and status is not None:
            # The status alone does not tell: form stacks answer a wrong password with 200 and the form again
            named = self._response_user(response, spec) if action in TOKEN_ACTIONS else _UNASKED
            if named is not None and named is not _UNASKED and 200 <= status < 300 and not mfa_hint(response.body):
                return action, None, named  # the usual JSON login: the response names who signed in
            signed_in = user_id_of(response.user) is not None and user_id_of(request.user) is None
            seen = signed_in or (named is not None and named is not _UNASKED)
            verdict, reason = response_outcome(action, request, response, self.config.failure_status, seen)
            if verdict is SUCCEEDED:
                return action, None, named
            failed = spec.failed_action or (action + self._suffix)[:MAX_ACTION_LENGTH]
            if verdict is FAILED:
                below = status < self.config.failure_status
                auth = {"source": "response", "outcome": FAILED, "reason": reason} if below else None
                return failed, auth, _UNTRUSTED
            if verdict is MFA_PENDING:
                return _MFA_PENDING_ACTION, {"source": "response", "outcome": MFA_PENDING, "reason": reason}, _UNTRUSTED
            if guess:  # the preset guessed the route and the response cannot tell: record the attempt only
                return action + _ATTEMPT, {"source": "response", "outcome": "unknown", "reason": reason}, _UNTRUSTED
            return action, None, _UNASKED  # the user's own route: its status stands
        if status is not None and status >= self.config.failure_status:
            return spec.failed_action or (action + self._suffix)[:MAX_ACTION_LENGTH], None, _UNTRUSTED
        return action, None, _UNASKED

    def _user(
        self,
        request: RequestInfo,
        response: ResponseInfo,
        spec: RouteSpec | None,
        context: AuditContext | None,
        evidence: AuthEvidence | None = None,
        named: Any = _UNASKED,
    ) -> Any:
        if context is not None and context.has_user:
            return user_id_of(context.user)
        if evidence is not None:
            # The user the framework signed in or out; after a failure, only an already authenticated actor
            # (a wrong old password on a password change), never a user named by the response.
            announced = user_id_of(evidence.user) if evidence.succeeded else None
            return announced if announced is not None else user_id_of(response.user) or user_id_of(request.user)
        # The framework's authenticated user comes first: a response body can echo what the client sent
        # ({"id": "admin"} from a device registration on a preset "register" route), and must never rename
        # an authenticated actor. Only when nobody is known (a login, a sign-up) does the response name them.
        known = user_id_of(response.user) or user_id_of(request.user)
        if known is not None:
            return known
        if named is _UNTRUSTED:
            return None
        return self._response_user(response, spec) if named is _UNASKED else named

    def _response_user(self, response: ResponseInfo, spec: RouteSpec | None) -> Any:
        """The user a successful response names, on the routes that read it (login, signup, token)."""
        if (
            spec is not None
            and spec.user_from_response
            and self.config.user_from_response
            and response.status is not None
            and response.status < 400
            and (response.exception is None or response.completed)
        ):
            return user_from_response(_lowered(response.headers), response.body)
        return None

    def _redacted_user(self, user: Any) -> Any:
        """A user that is not a UUID is stored as ``metadata.user_ref``: it goes through the value detectors
        first (a resolver that hands back a JWT or a bearer credential must not store it)."""
        if type(user) is str and not user.isdigit() and not _UUID_TEXT.match(user):  # (all digits: an id, even
            return self.redactor.text(user)  # when it passes Luhn, like many 18-digit Discord/Twitter ids)
        return user

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
        if not request_id or not _REQUEST_ID.match(request_id) or redactor.text(request_id) != request_id:
            request_id = str(event.id)  # absent, malformed, or a credential (the charset lets a JWT through)
        template = response.route_template or (match.template if match is not None else None)
        path = route_path(request.path, request.root_path)[:MAX_PATH]
        status = response.status
        exception = response.exception
        if request.interrupted:  # the client left mid-body: it got no answer, and the app's error is its echo
            status = exception = None
        elif status is None and exception is not None:
            status = 500
        http: dict[str, Any] = {
            "method": request.method[:16],
            "path": self._memo.path(path, template, secret_params=event.action in self._auth_actions),
            "route": template,
            "status": status,
            "duration_ms": round(response.duration * 1000, 3),
        }
        if exception is not None:
            http["exception"] = exception[:200]
        if request.interrupted or (response.disconnected and not response.completed):
            http["outcome"] = "client_disconnected"
        metadata: dict[str, Any] = {
            "ip": ip,
            "user_agent": self._memo.text(user_agent[:MAX_USER_AGENT]) if user_agent is not None else None,
            "request_id": request_id,
            "http": http,
        }
        if chain:  # client-controlled free text (each hop is bounded by TrustedProxies)
            metadata["forwarded_for"] = [redactor.text(hop) for hop in chain]
        if request.query_string:
            metadata["query"] = redactor.query(request.query_string)
        headers = self._memo.headers(raw_headers)
        for name in self._top_level_headers:  # already stored at the top level
            headers.pop(name, None)
        if headers:
            metadata["headers"] = headers
        body: Any = None
        if request.body_size and self.config.capture_body and (spec is None or spec.body is not False):
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

    def _add_evidence(self, metadata: dict[str, Any], reported: Sequence[AuthEvidence], chosen: AuthEvidence) -> None:
        """``metadata.auth``: who announced the outcome, and every auth event of the request in order."""
        auth: dict[str, Any] = {"evidence": [e.action if e.succeeded else e.action + self._suffix for e in reported]}
        if chosen.source:
            auth["source"] = chosen.source[:100]
        metadata["auth"] = auth
        if chosen.identifier and "identifier" not in metadata:
            identifier = self.redactor.text(str(chosen.identifier).strip()[:MAX_IDENTIFIER])
            # evidence can carry a name taken from a credential the request never lets us store (DRF's Basic
            # authentication passes the Authorization header's user part, where API clients put their key)
            if identifier and identifier != REDACTED and not looks_like_token(identifier):
                metadata["identifier"] = identifier

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
                MSG_AUDIT_FAILED, request.method, match.key if match else "-", describe_failure(exc), self.errors
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
