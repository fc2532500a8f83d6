"""``AuditWSGIMiddleware``: the ASGI middleware's auditing for WSGI apps (Flask, Django, any callable).

All decisions (route match, action, user, IP, redaction, metadata layout) come from the shared
:class:`~audit_middleware.core.AuditCore`; this module only observes the WSGI exchange:

* ``start_response`` is wrapped to see the status (``exc_info`` passes through as given);
* ``wsgi.input`` is wrapped by a tee that keeps a capped prefix of exactly what the app reads: the
  middleware itself never reads the body, so a request without a length can never block on it;
* the app's iterable is returned wrapped: chunks pass through one by one as the server pulls them
  (never buffered), and ``close()`` closes the app's iterable once and then records the event once.
  A ``wsgi.file_wrapper`` response is returned as is (the server's sendfile path keeps working),
  with its ``close`` hooked to record the event.

An exception from the app propagates unchanged and is recorded as status 500. Events go to a
:class:`~audit_middleware.threaded.BackgroundWriter`: a writer thread per process, started on the
first audited request (after a pre-fork server forked), flushed at exit or on :meth:`close`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ..errors import ConfigurationError, WriterClosedError
from ..writer.records import AuditEvent
from ..writer.threaded import BackgroundWriter
from ..writer.writer import AuditWriter
from ._types_wsgi import Environ, StartResponse, WSGIApp
from .config import Exchange
from .context import AUDITED_KEY, CONTEXT_KEY, INSTALLED_KEY, ROUTE_KEY, USER_KEY, AuditContext, current_carrier
from .core import (
    UNAVAILABLE_BODY,
    UNAVAILABLE_RETRY_AFTER,
    AuditCore,
    CoreMiddleware,
    MiddlewareConfig,
    RequestInfo,
    ResponseInfo,
)
from .evidence import EVIDENCE_KEY, WATCHING_KEY, evidence_of, watching_of
from .routing import RouteMatch
from .wsgi_io import (
    AuditedResponse,
    SizedAuditedResponse,
    TeeInput,
    content_length,
    hook_file_wrapper,
    request_headers,
    wsgi_path,
)

__all__ = ["AUDITED_KEY", "ROUTE_KEY", "USER_KEY", "AuditWSGIMiddleware"]

_NO_ACTIONS: frozenset[str] = frozenset()  # what watching_of answers for a request no glue watched


def _background(writer: Any, core: AuditCore) -> BackgroundWriter:
    """The middleware's BackgroundWriter for the ``writer`` option."""
    if isinstance(writer, BackgroundWriter):
        return writer
    if isinstance(writer, AuditWriter):
        shared = writer
        return BackgroundWriter(lambda: shared)
    if writer is None:
        core.make_writer()  # validates the DSN now (nothing is opened): errors belong at construction
        return BackgroundWriter(lambda: core.make_writer()[0])
    if callable(writer):
        return BackgroundWriter(writer)
    raise ConfigurationError(
        f"writer must be an AuditWriter, a BackgroundWriter or a callable returning an AuditWriter, got {writer!r}"
    )


class AuditWSGIMiddleware(CoreMiddleware):
    """Record an audit event for every mapped request (and the usual auth endpoints) of a WSGI app.

    Same options, route mapping, preset, identity, redaction, outcome-aware actions and metadata
    layout as :class:`~audit_middleware.AuditMiddleware`. The ``user_resolver`` receives the environ.

    Args:
        app: the WSGI application.
        dsn: PostgreSQL DSN for the middleware's own writer (default ``AUDIT_DSN``).
        writer: a :class:`~audit_middleware.threaded.BackgroundWriter` to share with hand-recorded events
            (the WSGI way to share one buffer), a callable building an ``AuditWriter`` (called once per
            process, so each forked worker gets its own), or an ``AuditWriter`` not started yet (for a
            single-process server: it runs on the middleware's thread, which closes it).
        routes: ``{"METHOD /path": action | spec | callable | None}``; see docs/asgi.md, "Routes".
        trusted_proxies: peers whose ``X-Forwarded-For`` (or ``Forwarded``) is believed.
        **options: the other :class:`~audit_middleware.core.MiddlewareConfig` fields.

    Raises:
        ConfigurationError: an option is invalid or unknown; the message names it.

    Example:
        >>> flask_app.wsgi_app = AuditWSGIMiddleware(flask_app.wsgi_app, dsn=DSN)  # doctest: +SKIP
        >>> application = AuditWSGIMiddleware(get_wsgi_application(), dsn=DSN)  # doctest: +SKIP
    """

    def __init__(
        self,
        app: WSGIApp,
        *,
        dsn: str | None = None,
        writer: Any = None,
        routes: Mapping[str, Any] | None = None,
        trusted_proxies: Iterable[str] | str = ("127.0.0.1", "::1"),
        **options: Any,
    ) -> None:
        self.app = app
        if not isinstance(trusted_proxies, str):
            trusted_proxies = tuple(trusted_proxies)
        config = MiddlewareConfig.from_options(dsn=dsn, routes=routes, trusted_proxies=trusted_proxies, **options)
        self.writer = _background(writer, self._compile(config))
        self._announce(writer if isinstance(writer, AuditWriter) else None)

    def flush(self, timeout: float | None = None) -> None:
        """Block until this process's recorded events are written (tests, scripts; not in a request)."""
        self.writer.flush(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop this process's writer thread (also done at interpreter exit)."""
        self.writer.close(timeout)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if INSTALLED_KEY in environ:
            return self.app(environ, start_response)
        environ[INSTALLED_KEY] = True
        method = environ.get("REQUEST_METHOD", "GET")
        root_path = wsgi_path(environ.get("SCRIPT_NAME", ""))
        path = root_path + wsgi_path(environ.get("PATH_INFO", "") or "/")
        match = self.core.match(method, path, root_path)
        if match is None and not self._unmapped:
            token = current_carrier.set(environ)
            try:
                result = self.app(environ, start_response)
            finally:
                current_carrier.reset(token)
            if CONTEXT_KEY in environ or EVIDENCE_KEY in environ:  # a handler enriched an unmapped request, or
                # framework glue announced an auth event on it (a custom view calling login()): record it
                self._record(environ, None, Exchange(0), None, 0.0, None, method, path, root_path)
            return result
        if match is not None and match.spec is not None and match.spec.strict:
            return self._strict(environ, start_response, match, method, path, root_path)
        return self._audited(environ, start_response, match, method, path, root_path)

    def _strict(
        self,
        environ: Environ,
        start_response: StartResponse,
        match: RouteMatch,
        method: str,
        path: str,
        root_path: str,
    ) -> Iterable[bytes]:
        """A strict route: hold the app's response until its event is committed; 503 if not in time.

        The response is buffered (strict routes are small auth responses). On 503 the app's status,
        headers (any ``Set-Cookie``) and body are discarded; its event stays buffered and lands later.
        """
        held: list[Any] = []
        body: list[bytes] = []
        events: list[AuditEvent] = []

        def hold(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            held[:] = [status, headers, exc_info]
            return body.append  # the legacy write() callable: its bytes come before the iterable's

        close_error: Exception | None = None
        try:
            result = self._audited(environ, hold, match, method, path, root_path, deliver=events.append)
            try:
                body.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    try:
                        close()
                    except Exception as exc:  # the body is complete (Flask's call_on_close raising): a server
                        close_error = exc  # would have sent it, then met this in close(); so do we
        except BaseException:
            for event in events:  # the app raised: nothing is sent for it, its event is still recorded
                self._submit(event)
            raise
        committed = True
        for event in events:
            try:
                committed = self.writer.commit_event(event, self._strict_timeout)
            except Exception as exc:  # a closed writer: fail closed (and say why)
                self.core.note_error("strict commit", exc)
                committed = False
        if not committed:
            headers = [("Content-Type", "application/json"), ("Retry-After", UNAVAILABLE_RETRY_AFTER)]
            start_response("503 Service Unavailable", headers)
            return [UNAVAILABLE_BODY]
        if held:
            status, headers, exc_info = held
            if exc_info is None:
                start_response(status, headers)
            else:
                start_response(status, headers, exc_info)
        return body if close_error is None else _FailingClose(body, close_error)

    def _submit(self, event: AuditEvent) -> None:
        try:
            self.writer.submit(event)
        except Exception as exc:
            self.core.note_error("recording", exc)

    # -- one audited request ---------------------------------------------------------------------

    def _audited(
        self,
        environ: Environ,
        start_response: StartResponse,
        match: RouteMatch | None,
        method: str,
        path: str,
        root_path: str,
        deliver: Callable[[AuditEvent], Any] | None = None,
    ) -> Iterable[bytes]:
        core = self.core
        environ[AUDITED_KEY] = True
        spec = match.spec if match is not None else None
        user_before = environ.get(USER_KEY) or environ.get("REMOTE_USER")
        if spec is not None and spec.user_before and self._has_resolver:
            user_before = core.resolve_user(environ) or user_before
        exchange = Exchange(self._peek if core.wants_response_body(match) else 0)
        cap = core.body_cap if core.wants_body(match) else 0
        stream = environ.get("wsgi.input")
        if cap and stream is not None:
            environ["wsgi.input"] = TeeInput(stream, exchange, cap, content_length(environ))

        def start_response_with_audit(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            # exc_info by position or keyword (PEP 3333 names it); passed on only when given (then the server
            # raises, per PEP 3333, if headers were already sent)
            given = () if exc_info is None else (exc_info,)
            write = start_response(status, headers, *given)
            try:
                exchange.status = int(status[:3])
            except (TypeError, ValueError):
                exchange.status = None
            if exchange.peek:
                exchange.response_headers = list(headers)
                if not any(k.lower() == "content-type" and "json" in v for k, v in headers):
                    exchange.peek = 0  # only JSON bodies name a user; cookies are in the headers

            def write_with_audit(data: bytes) -> Any:
                exchange.sent(data)
                return write(data)

            return write_with_audit

        token = current_carrier.set(environ)
        started = time.perf_counter()
        user_after: Any = None
        try:
            result = self.app(environ, start_response_with_audit)
            if self._has_resolver and not (spec is not None and spec.user_before):
                user_after = core.resolve_user(environ)
        except BaseException as exc:
            exchange.error = type(exc).__name__
            duration = time.perf_counter() - started
            self._record(environ, match, exchange, user_before, duration, None, method, path, root_path, deliver)
            raise
        finally:
            current_carrier.reset(token)

        def finish() -> None:
            duration = time.perf_counter() - started
            self._record(environ, match, exchange, user_before, duration, user_after, method, path, root_path, deliver)

        wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(wrapper, type) and isinstance(result, wrapper) and hasattr(result, "__dict__"):
            return hook_file_wrapper(result, exchange, finish)  # type: ignore[no-any-return]
        if isinstance(result, list | tuple):
            return SizedAuditedResponse(result, exchange, finish)
        return AuditedResponse(result, exchange, finish)

    def _record(
        self,
        environ: Environ,
        match: RouteMatch | None,
        exchange: Exchange,
        user_before: Any,
        duration: float,
        user_after: Any,
        method: str,
        path: str,
        root_path: str,
        deliver: Callable[[AuditEvent], Any] | None = None,
    ) -> None:
        """Build the event and buffer it (or hand it to ``deliver``). Never raises."""
        core = self.core
        try:
            template = environ.get(ROUTE_KEY)
            template = template if isinstance(template, str) and template.startswith("/") else None
            match = core.rematch(method, template, match)
            request = RequestInfo(
                method=method,
                path=path,
                root_path=root_path,
                query_string=environ.get("QUERY_STRING", ""),
                headers=request_headers(environ),
                client=environ.get("REMOTE_ADDR") or None,
                body=b"".join(exchange.body),
                body_complete=exchange.body_complete and exchange.kept == exchange.body_size,
                body_size=exchange.body_size,
                user=user_before,
                interrupted=exchange.interrupted,
            )
            response = ResponseInfo(
                status=exchange.status,
                headers=exchange.response_headers,
                body=b"".join(exchange.response_body),
                bytes_sent=exchange.bytes_sent,
                duration=duration,
                completed=exchange.completed,
                disconnected=exchange.disconnected,
                exception=exchange.error,
                route_template=template,
                routed=True if template is not None else (False if WATCHING_KEY in environ else None),
                user=user_after or environ.get(USER_KEY),
                evidence=evidence_of(environ) if EVIDENCE_KEY in environ else (),  # (only glue-wrapped requests
                watching=watching_of(environ) if WATCHING_KEY in environ else _NO_ACTIONS,  # carry them)
            )
            context = environ.get(CONTEXT_KEY)
            event = core.build_event(request, response, match, context if isinstance(context, AuditContext) else None)
            if event is not None:
                (deliver or self.writer.submit)(event)
        except WriterClosedError as exc:
            core.note_error("recording after the writer closed", exc)
        except Exception as exc:
            core.note_error("recording", exc)


class _FailingClose:
    """A held body whose app failed in close(): served as is, then the failure is raised in close()."""

    def __init__(self, body: list[bytes], error: Exception) -> None:
        self._body, self._error = body, error

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def __len__(self) -> int:  # a one-chunk body keeps its Content-Length (PEP 3333)
        return len(self._body)

    def close(self) -> None:
        raise self._error
