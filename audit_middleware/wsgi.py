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

from ._types_wsgi import Environ, StartResponse, WSGIApp
from .buffer import AuditWriter
from .context import CONTEXT_KEY, INSTALLED_KEY, AuditContext, current_carrier
from .core import AuditCore, MiddlewareConfig, RequestInfo, ResponseInfo
from .errors import ConfigurationError, WriterClosedError
from .routing import RouteMatch
from .threaded import BackgroundWriter

__all__ = ["ROUTE_KEY", "USER_KEY", "AuditWSGIMiddleware"]

USER_KEY = "audit_middleware.user"
"""Environ key where framework glue (or the app) leaves the request's user (object or id)."""
ROUTE_KEY = "audit_middleware.route"
"""Environ key where framework glue leaves the matched route template (e.g. ``/users/<int:id>``)."""
AUDITED_KEY = "audit_middleware.audited"
"""Set (True) in the environ of requests the middleware audits, for framework glue to check cheaply."""


class _Exchange:
    """What one request's wrappers saw (per request: never state on the middleware)."""

    __slots__ = (
        "body",
        "body_complete",
        "body_size",
        "bytes_sent",
        "completed",
        "disconnected",
        "error",
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
        self.response_headers: list[tuple[str, str]] = []
        self.response_body: list[bytes] = []
        self.peek = peek
        self.peeked = 0
        self.bytes_sent = 0
        self.completed = False
        self.disconnected = False
        self.error: str | None = None

    def sent(self, chunk: bytes) -> None:
        self.bytes_sent += len(chunk)
        if self.peek and self.peeked < self.peek:
            piece = chunk[: self.peek - self.peeked]
            self.response_body.append(bytes(piece))
            self.peeked += len(piece)


class _TeeInput:
    """``wsgi.input`` as the app sees it, keeping a capped prefix of what the app reads.

    Every reading method the app (or its framework) can find goes through the tee; ``readinto`` is
    offered only when the server's stream has it (werkzeug picks it when present). Other attributes
    are the server stream's own.
    """

    _HIDDEN = frozenset({"read1", "readinto1", "peek"})  # would bypass the tee; PEP 3333 does not offer them

    def __init__(self, stream: Any, exchange: _Exchange, cap: int, length: int | None) -> None:
        self._stream = stream
        self._exchange = exchange
        self._cap = cap
        self._length = length

    def _seen(self, data: bytes | memoryview, asked: int | None) -> None:
        exchange = self._exchange
        if data:
            exchange.body_size += len(data)
            if exchange.kept < self._cap:
                piece = bytes(data[: self._cap - exchange.kept])
                exchange.body.append(piece)
                exchange.kept += len(piece)
            if self._length is not None and exchange.body_size >= self._length:
                exchange.body_complete = True
        elif asked != 0:
            exchange.body_complete = True  # EOF

    def read(self, *args: Any) -> bytes:
        data = self._stream.read(*args)
        self._seen(data, args[0] if args and args[0] is not None and args[0] >= 0 else None)
        return data  # type: ignore[no-any-return]

    def readline(self, *args: Any) -> bytes:
        data = self._stream.readline(*args)
        self._seen(data, args[0] if args and args[0] is not None and args[0] >= 0 else None)
        return data  # type: ignore[no-any-return]

    def readlines(self, *args: Any) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(*args)
        for line in lines:
            self._seen(line, None)
        return lines

    def __iter__(self) -> Iterator[bytes]:
        for line in self._stream:
            self._seen(line, None)
            yield line

    def __getattr__(self, name: str) -> Any:
        if name in self._HIDDEN:
            raise AttributeError(name)
        if name == "readinto":
            readinto = self._stream.readinto  # AttributeError when the server's stream has none

            def readinto_with_audit(buffer: Any) -> Any:
                count = readinto(buffer)
                if count is not None:
                    self._seen(memoryview(buffer)[:count], len(buffer))
                return count

            return readinto_with_audit
        return getattr(self._stream, name)


class _AuditedResponse:
    """The app's iterable, passed through chunk by chunk; ``close()`` closes it once, then records once."""

    __slots__ = ("_closed", "_exchange", "_finish", "_iterable", "_iterator")

    def __init__(self, iterable: Iterable[bytes], exchange: _Exchange, finish: Callable[[], None]) -> None:
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._exchange = exchange
        self._finish = finish
        self._closed = False

    def __iter__(self) -> _AuditedResponse:
        if self._iterator is None:
            self._iterator = iter(self._iterable)
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = iter(self._iterable)
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._exchange.completed = True
            raise
        except BaseException as exc:
            self._exchange.error = type(exc).__name__
            raise
        self._exchange.sent(chunk)
        return chunk

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._iterable, "close", None)
            if close is not None:
                close()
        except BaseException as exc:
            self._exchange.error = self._exchange.error or type(exc).__name__
            raise
        finally:
            if not self._exchange.completed and self._exchange.error is None:
                self._exchange.disconnected = True
            self._finish()


def _wsgi_path(value: str) -> str:
    """PEP 3333 paths are bytes decoded as latin-1; ASGI (and the route table) use UTF-8."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value


def _headers(environ: Environ) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            pairs.append((key[5:].replace("_", "-").lower(), value))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            pairs.append((key.replace("_", "-").lower(), value))
    return pairs


def _content_length(environ: Environ) -> int | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


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


class AuditWSGIMiddleware:
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
        routes: ``{"METHOD /path": action | spec | callable | None}``; see the README.
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
        self.core = AuditCore(config)
        self.writer = _background(writer, self.core)
        self._unmapped = config.audit_unmapped
        self._peek = config.max_response_peek
        self._has_resolver = config.user_resolver is not None

    @property
    def config(self) -> MiddlewareConfig:
        """The validated configuration."""
        return self.core.config

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
        root_path = _wsgi_path(environ.get("SCRIPT_NAME", ""))
        path = root_path + _wsgi_path(environ.get("PATH_INFO", "") or "/")
        match = self.core.match(method, path, root_path)
        if match is None and not self._unmapped:
            token = current_carrier.set(environ)
            try:
                result = self.app(environ, start_response)
            finally:
                current_carrier.reset(token)
            if CONTEXT_KEY in environ:  # a handler enriched an unmapped request: record it (status unknown)
                self._record(environ, None, _Exchange(0), None, 0.0, None, method, path, root_path)
            return result
        return self._audited(environ, start_response, match, method, path, root_path)

    # -- one audited request ---------------------------------------------------------------------

    def _audited(
        self,
        environ: Environ,
        start_response: StartResponse,
        match: RouteMatch | None,
        method: str,
        path: str,
        root_path: str,
    ) -> Iterable[bytes]:
        core = self.core
        environ[AUDITED_KEY] = True
        context = environ.get(CONTEXT_KEY)
        if not isinstance(context, AuditContext):
            environ[CONTEXT_KEY] = AuditContext()
        spec = match.spec if match is not None else None
        user_before = environ.get(USER_KEY) or environ.get("REMOTE_USER")
        if spec is not None and spec.user_before and self._has_resolver:
            user_before = core.resolve_user(environ) or user_before
        exchange = _Exchange(self._peek if core.wants_response_body(match) else 0)
        cap = core.body_cap if core.wants_body(match) else 0
        stream = environ.get("wsgi.input")
        if cap and stream is not None:
            environ["wsgi.input"] = _TeeInput(stream, exchange, cap, _content_length(environ))

        def start_response_with_audit(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            write = start_response(status, headers, *exc_info)  # raises per PEP 3333 if headers were sent
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
            self._record(
                environ, match, exchange, user_before, time.perf_counter() - started, None, method, path, root_path
            )
            raise
        finally:
            current_carrier.reset(token)

        def finish() -> None:
            duration = time.perf_counter() - started
            self._record(environ, match, exchange, user_before, duration, user_after, method, path, root_path)

        wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(wrapper, type) and isinstance(result, wrapper) and hasattr(result, "__dict__"):
            return _hook_file_wrapper(result, exchange, finish)  # type: ignore[no-any-return]
        return _AuditedResponse(result, exchange, finish)

    def _record(
        self,
        environ: Environ,
        match: RouteMatch | None,
        exchange: _Exchange,
        user_before: Any,
        duration: float,
        user_after: Any,
        method: str,
        path: str,
        root_path: str,
    ) -> None:
        """Build and buffer the event. Never raises."""
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
                headers=_headers(environ),
                client=environ.get("REMOTE_ADDR") or None,
                body=b"".join(exchange.body),
                body_complete=exchange.body_complete,
                body_size=exchange.body_size,
                user=user_before,
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
                user=user_after or environ.get(USER_KEY),
            )
            context = environ.get(CONTEXT_KEY)
            event = core.build_event(request, response, match, context if isinstance(context, AuditContext) else None)
            if event is not None:
                self.writer.submit(event)
        except WriterClosedError as exc:
            core.note_error("recording after the writer closed", exc)
        except Exception as exc:
            core.note_error("recording", exc)


def _hook_file_wrapper(result: Any, exchange: _Exchange, finish: Callable[[], None]) -> Any:
    """Keep the server's own file wrapper (its sendfile path) and record when the server closes it."""
    inner_close = getattr(result, "close", None)
    done = False

    def close_with_audit() -> None:
        nonlocal done
        if done:
            return
        done = True
        try:
            if inner_close is not None:
                inner_close()
        finally:
            exchange.completed = True
            finish()

    result.close = close_with_audit
    return result
