"""``AuditMiddleware``: pure ASGI, observes requests and records audit events without altering them.

Per audited request it wraps ``receive`` (keeping a capped prefix of the body the app reads, passing
every message through unchanged) and ``send`` (seeing the status and counting bytes, peeking at a
capped prefix of a login response without holding it back), then builds the event in ``finally``:
after a normal response, a client disconnect or an exception (status 500; the exception is re-raised
unchanged). Unaudited requests cost one cached route lookup. Nothing per request lives on ``self``.

Lifespan: the writer starts on ``lifespan.startup`` and is flushed before ``lifespan.shutdown.complete``
is forwarded; the app's own lifespan handlers keep working. Whatever the app raises reaches the server
unchanged, also before it reads a message (a Starlette middleware failing to build): the server then
does what it would without us (``--lifespan on`` refuses to start; ``auto`` goes on without lifespan).
Without lifespan events the writer starts on the first audited request, and what it holds at exit is
spooled for the next start.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..errors import WriterClosedError
from ..redaction.redactor import RedactionConfig
from ..writer.records import AuditEvent
from ..writer.writer import AuditWriter
from ._types_asgi import AnyASGIApp, ASGIApp, Message, Receive, Scope, Send
from .config import Exchange
from .context import AUDITED_KEY, CONTEXT_KEY, INSTALLED_KEY, ROUTE_KEY, USER_KEY, AuditContext, current_carrier
from .core import (
    UNAVAILABLE_BODY,
    UNAVAILABLE_RETRY_AFTER,
    CoreMiddleware,
    MiddlewareConfig,
    RequestInfo,
    ResponseInfo,
)
from .evidence import EVIDENCE_KEY, WATCHING_KEY, evidence_of, watching_of
from .routing import RouteMatch

__all__ = ["AuditMiddleware"]

logger = logging.getLogger("audit_middleware.middleware")

MSG_SHUTDOWN_FAILED = "flushing audit events on shutdown failed (%s: %s)"
_UNAVAILABLE_HEADERS = [(b"content-type", b"application/json"), (b"retry-after", UNAVAILABLE_RETRY_AFTER.encode())]
_REDIRECTS = frozenset({301, 302, 307, 308})
_NOT_ROUTES = ("Mount", "Host")
_FASTAPI_ROUTE_CONTEXT = "effective_route_context"  # scope["fastapi"][...] on FastAPI >= 0.137
_NO_ACTIONS: frozenset[str] = frozenset()  # what watching_of answers for a request no glue watched


class AuditMiddleware(CoreMiddleware):
    """Record an audit event for every mapped request (and the usual auth endpoints) of an ASGI app.

    Args:
        app: the ASGI application.
        dsn: PostgreSQL DSN for the middleware's own writer (default ``AUDIT_DSN``).
        writer: an existing :class:`~audit_middleware.AuditWriter` to share (the middleware flushes it on
            shutdown but does not close it).
        routes: ``{"METHOD /path": action | spec | callable | None}``; see docs/asgi.md, "Routes".
        trusted_proxies: peers whose ``X-Forwarded-For`` (or ``Forwarded``) is believed.

    The other keywords (``preset``, ``audit_unmapped``, ...) are the fields of
    :class:`~audit_middleware.capture.config.MiddlewareConfig`, documented there and on the ASGI middleware page.

    Raises:
        ConfigurationError: an option is invalid; the message names it (an unknown keyword is a
            ``TypeError`` naming it).

    Example:
        >>> app.add_middleware(AuditMiddleware, dsn="postgresql://localhost/app")  # doctest: +SKIP
        >>> app.add_middleware(AuditMiddleware, writer=writer, routes={"POST /export": "export_data"})  # doctest: +SKIP
    """

    def __init__(
        self,
        app: AnyASGIApp,
        *,
        dsn: str | None = None,
        writer: AuditWriter | None = None,
        routes: Mapping[str, Any] | None = None,
        trusted_proxies: Iterable[str] | str = ("127.0.0.1", "::1"),
        preset: bool = True,
        audit_unmapped: bool = False,
        unmapped_action: str = "http_request",
        proxy_header: str = "x-forwarded-for",
        request_id_header: str | None = "x-request-id",
        user_resolver: Callable[[Any], Any] | None = None,
        user_from_response: bool = True,
        outcome_actions: bool = True,
        failed_suffix: str = "_failed",
        failure_status: int = 400,
        capture_body: bool = True,
        max_response_peek: int = 16 * 1024,
        redaction: RedactionConfig | None = None,
        processors: Sequence[Callable[[dict[str, Any]], dict[str, Any] | None]] = (),
        writer_options: Mapping[str, Any] | None = None,
        strict_timeout: float = 2.0,
    ) -> None:
        # Explicit keywords (not **options) so Starlette's typed add_middleware() accepts the class;
        # an unknown keyword is a TypeError naming it. The values are validated by MiddlewareConfig.
        self.app: ASGIApp = app
        config = MiddlewareConfig(
            dsn=dsn,
            writer=writer,
            writer_options=writer_options or {},
            routes=routes,
            preset=preset,
            audit_unmapped=audit_unmapped,
            unmapped_action=unmapped_action,
            trusted_proxies=trusted_proxies if isinstance(trusted_proxies, str) else tuple(trusted_proxies),
            proxy_header=proxy_header,
            request_id_header=request_id_header,
            user_resolver=user_resolver,
            user_from_response=user_from_response,
            outcome_actions=outcome_actions,
            failed_suffix=failed_suffix,
            failure_status=failure_status,
            capture_body=capture_body,
            max_response_peek=max_response_peek,
            redaction=redaction,
            processors=processors,
            strict_timeout=strict_timeout,
        )
        self.writer, self._owns_writer = self._compile(config).make_writer()
        self._announce(self.writer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" or INSTALLED_KEY in scope:
            if kind == "lifespan":
                await self._lifespan(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        scope[INSTALLED_KEY] = True
        match = self.core.match(scope["method"], scope["path"], scope.get("root_path", ""))
        if match is None and not self._unmapped:
            token = current_carrier.set(scope)
            try:
                await self.app(scope, receive, send)
            finally:
                current_carrier.reset(token)
            if CONTEXT_KEY in scope or EVIDENCE_KEY in scope:  # a handler enriched an unmapped request, or
                # framework glue announced an auth event on it (a custom view calling login()): record it
                self._record(scope, None, Exchange(0), None, None, 0.0, None, None)
            return
        await self._audited(scope, receive, send, match)

    # -- one audited request ---------------------------------------------------------------------

    async def _audited(self, scope: Scope, receive: Receive, send: Send, match: RouteMatch | None) -> None:
        core, writer = self.core, self.writer
        if not writer.started:
            self._start_writer()
        scope[AUDITED_KEY] = True  # framework glue (DjangoAuditMiddleware) works only on audited requests
        spec = match.spec if match is not None else None
        user_before = scope.get("user")
        if spec is not None and spec.user_before and self._has_resolver:
            user_before = await self._resolve(scope) or user_before
        root_path = scope.get("root_path", "")
        cap = core.body_cap if core.wants_body(match) else 0
        exchange = Exchange(self._peek if core.wants_response_body(match) else 0)
        held: list[Message] | None = [] if spec is not None and spec.strict else None  # strict: sent after commit

        async def receive_with_audit() -> Message:
            message = await receive()
            kind = message["type"]
            if kind == "http.request":
                body = message.get("body", b"")
                if body:
                    exchange.body_size += len(body)
                    if exchange.kept < cap:
                        piece = body[: cap - exchange.kept]
                        exchange.body.append(piece)
                        exchange.kept += len(piece)
                if not message.get("more_body", False):
                    exchange.body_complete = True
            elif kind == "http.disconnect":
                exchange.disconnected = True
                if not exchange.body_complete:  # gone mid-body: what the app does next (Starlette's
                    exchange.interrupted = True  # ClientDisconnect, FastAPI's 400) is no outcome of the request
            return message

        async def send_with_audit(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                exchange.status = message["status"]
                if exchange.peek:
                    headers = message.get("headers", ())
                    if isinstance(headers, list | tuple):  # never consume an iterator the server still needs
                        exchange.response_headers = headers
                        if not any(k.lower() == b"content-type" and b"json" in v for k, v in headers):
                            exchange.peek = 0  # only JSON bodies name a user; cookies are in the headers
                    else:
                        exchange.peek = 0
            elif kind == "http.response.body":
                exchange.sent(message.get("body", b""))
                if not message.get("more_body", False):
                    exchange.completed = True
            elif kind == "http.response.pathsend":  # the server sends a file: that completes the response
                exchange.completed = True
            if held is not None:
                held.append(message)
                return
            try:
                await send(message)
            except OSError:  # the server reports a client that went away
                exchange.disconnected = True
                raise

        token = current_carrier.set(scope)
        started = time.perf_counter()
        error: str | None = None
        user_after: Any = None
        failure: BaseException | None = None
        try:
            await self.app(scope, receive_with_audit, send_with_audit)
            if self._has_resolver and not (spec is not None and spec.user_before):
                user_after = await self._resolve(scope)
        except BaseException as exc:
            failure = exc
            if isinstance(exc, asyncio.CancelledError):
                exchange.disconnected = True
            else:
                error = type(exc).__name__
        finally:
            current_carrier.reset(token)
        # A strict route commits its event, then sends what it held: also when the app raised after its
        # response was complete (a failing background task), since without us the client had it. A client
        # that left gets nothing, and its event is submitted once, like any other.
        strict = (
            held is not None
            and not exchange.disconnected
            and (failure is None or (isinstance(failure, Exception) and exchange.completed))
        )
        event = self._record(
            scope,
            match,
            exchange,
            error,
            user_before,
            time.perf_counter() - started,
            user_after,
            root_path,
            submit=not strict,
        )
        if strict:
            assert held is not None
            await self._send_strict(event, held, send)
        if failure is not None:
            raise failure  # the app's own exception object, unchanged

    async def _send_strict(self, event: AuditEvent | None, held: list[Message], send: Send) -> None:
        """Send the held response once ``event`` is committed; 503 if it is not within ``strict_timeout``."""
        committed = True
        if event is not None:
            try:
                committed = await self.writer.commit_event(event, self._strict_timeout)
            except Exception as exc:  # a closed writer: fail closed
                self.core.note_error("strict commit", exc)
                committed = False
        if committed:
            for message in held:
                await send(message)
            return
        # (the writer logs the missed commit, rate-limited: never one line per refused request)
        await send({"type": "http.response.start", "status": 503, "headers": _UNAVAILABLE_HEADERS})
        await send({"type": "http.response.body", "body": UNAVAILABLE_BODY})

    async def _resolve(self, scope: Scope) -> Any:
        result = self.core.resolve_user(scope)
        if inspect.isawaitable(result):
            try:
                result = await result
            except Exception as exc:
                self.core.note_error("user_resolver", exc)
                return None
        return result

    def _record(
        self,
        scope: Scope,
        match: RouteMatch | None,
        exchange: Exchange,
        error: str | None,
        user_before: Any,
        duration: float,
        user_after: Any,
        root_path: str | None,
        *,
        submit: bool = True,
    ) -> AuditEvent | None:
        """Build the event and (with ``submit``) buffer it; return it. Never raises."""
        core = self.core
        try:
            if root_path is None:
                root_path = scope.get("root_path", "")
            template = _template(scope, root_path)
            if template is None and exchange.status in _REDIRECTS and "router" in scope and "route" not in scope:
                return None  # the router only redirected (e.g. a trailing slash): the follow-up request is audited
            method = scope["method"]
            match = core.rematch(method, template, match)
            client = scope.get("client")
            request = RequestInfo(
                method=method,
                path=scope["path"],
                root_path=root_path,
                query_string=scope.get("query_string", b""),
                headers=scope.get("headers", ()),
                client=client[0] if client else None,
                body=b"".join(exchange.body),
                body_complete=exchange.body_complete and exchange.kept == exchange.body_size,
                body_size=exchange.body_size,
                user=user_before,
                interrupted=exchange.interrupted,
            )
            headers = exchange.response_headers
            response = ResponseInfo(
                status=exchange.status,
                headers=headers if isinstance(headers, list | tuple) else (),
                body=b"".join(exchange.response_body),
                bytes_sent=exchange.bytes_sent,
                duration=duration,
                completed=exchange.completed,
                disconnected=exchange.disconnected,
                exception=error,
                route_template=template,
                routed=True if template is not None else _routed(scope),
                user=user_after or scope.get(USER_KEY) or scope.get("user"),
                # (only glue-wrapped requests carry these: two calls and a frozenset saved on every other one)
                evidence=evidence_of(scope) if EVIDENCE_KEY in scope else (),
                watching=watching_of(scope) if WATCHING_KEY in scope else _NO_ACTIONS,
            )
            context = scope.get(CONTEXT_KEY)
            event = core.build_event(request, response, match, context if isinstance(context, AuditContext) else None)
            if event is not None and submit:
                self.writer.submit(event)
            return event
        except WriterClosedError as exc:
            core.note_error("recording after the writer closed", exc)
        except Exception as exc:  # pragma: no cover - build_event never raises; this guards submit()
            core.note_error("recording", exc)
        return None

    # -- lifespan --------------------------------------------------------------------------------

    def _start_writer(self) -> None:
        try:
            self.writer.start_soon()
        except Exception as exc:  # e.g. closed after shutdown: logged (rate-limited) and counted
            self.core.note_error("starting the writer", exc)

    async def _stop_writer(self) -> None:
        try:
            if self._owns_writer:
                await self.writer.aclose()
            elif self.writer.started:
                await self.writer.flush(self.writer.config.close_timeout)
        except Exception as exc:
            logger.error(MSG_SHUTDOWN_FAILED, type(exc).__name__, exc)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_lifespan() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start_writer()
            return message

        async def send_lifespan(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self._stop_writer()
            await send(message)

        # No fallback that answers the lifespan for the app when it raises: an app that raises before
        # reading a message may be one without lifespan support or one whose start-up failed, and only
        # the server, seeing the exception, knows which to assume (uvicorn --lifespan on vs auto).
        await self.app(scope, receive_lifespan, send_lifespan)


def _routed(scope: Scope) -> bool | None:
    """With no route template: False if a framework router ran and matched nothing, None if nothing tells.

    Starlette and FastAPI set ``scope["router"]`` when their router runs, and ``scope["route"]`` only on a
    match (a Mount alone is no match); Litestar sets ``litestar_app``, and ``path_template`` only on a match.
    """
    return False if "router" in scope or "litestar_app" in scope or WATCHING_KEY in scope else None


def _template(scope: Scope, root_path: str) -> str | None:
    """The framework's matched route template (router prefixes and mount included), if it told us.

    Starlette and FastAPI leave the route in ``scope["route"]``; Litestar leaves the template
    (``/users/{user_id}``) in ``scope["path_template"]``; framework glue (Django's, which knows only
    its URLconf's route) leaves one under ``ROUTE_KEY``.

    FastAPI >= 0.137 no longer copies a router's routes under ``include_router(prefix=...)``: one
    ``APIRoute`` serves every prefix it is included under, so its ``path`` is ``/login`` for both
    ``/auth/jwt/login`` and ``/auth/cookie/login``. The prefixed template is then only on the route
    context FastAPI leaves in ``scope["fastapi"]`` (what its own telemetry, Sentry and Apitally read),
    taken only when it describes the very route that ran (a mount inside an included router leaves the
    mount's context behind).
    """
    route = scope.get("route")
    if route is None:
        given = scope.get("path_template") or scope.get(ROUTE_KEY)
        return given if isinstance(given, str) and given.startswith("/") else None
    if type(route).__name__ in _NOT_ROUTES:
        return None
    path_format = getattr(route, "path_format", None) or getattr(route, "path", None)
    included = scope.get("fastapi")
    if included:
        context = included.get(_FASTAPI_ROUTE_CONTEXT) if isinstance(included, dict) else None
        if context is not None and getattr(context, "original_route", None) is route:
            path_format = getattr(context, "path_format", None) or path_format
    if not isinstance(path_format, str) or not path_format.startswith("/"):
        return None
    final_root = scope.get("root_path", "")
    mount = final_root[len(root_path) :] if isinstance(final_root, str) and final_root.startswith(root_path) else ""
    return mount + path_format
