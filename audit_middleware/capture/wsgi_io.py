"""What the WSGI middleware wraps: the request body tee, the response iterable, the file wrapper hook.

Each observes and never alters: the bytes, chunks and calls pass through as they are; only a
per-request :class:`~audit_middleware.options.Exchange` records what was seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ._types_wsgi import Environ
from .config import Exchange

__all__ = [
    "AuditedResponse",
    "TeeInput",
    "content_length",
    "hook_file_wrapper",
    "request_headers",
    "wsgi_path",
]


class TeeInput:
    """``wsgi.input`` as the app sees it, keeping a capped prefix of what the app reads.

    Every reading method the app (or its framework) can find goes through the tee; ``readinto`` is
    offered only when the server's stream has it (werkzeug picks it when present). Other attributes
    are the server stream's own.
    """

    _HIDDEN = frozenset({"read1", "readinto1", "peek"})  # would bypass the tee; PEP 3333 does not offer them

    def __init__(self, stream: Any, exchange: Exchange, cap: int, length: int | None) -> None:
        self._stream = stream
        self._lines: Iterator[bytes] | None = None
        self._exchange = exchange
        self._cap = cap
        self._length = length
        readinto = getattr(stream, "readinto", None)
        if readinto is not None:  # an instance attribute: no __getattr__ round and no new closure per lookup
            self._readinto = readinto
            self.readinto = self._readinto_with_audit

    def _gone(self) -> None:
        """The server's stream failed mid-body (gunicorn's NoMoreData, a reset connection): the client left."""
        self._exchange.interrupted = True

    def _readinto_with_audit(self, buffer: Any) -> Any:
        try:
            count = self._readinto(buffer)
        except OSError:
            self._gone()
            raise
        if count is not None:
            self._seen(memoryview(buffer)[:count], len(buffer))
        return count

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
                exchange.interrupted = False
        elif asked != 0:  # EOF
            if self._length is not None and exchange.body_size < self._length:
                exchange.interrupted = True  # before Content-Length: the client went away mid-body
            else:
                exchange.body_complete = True

    # Sizes by position or by keyword (gunicorn's Body and io.BytesIO take ``size=``), passed on as given.
    def read(self, *args: Any, **kwargs: Any) -> bytes:
        try:
            data = self._stream.read(*args, **kwargs)
        except OSError:
            self._gone()
            raise
        asked = _asked(args, kwargs)
        self._seen(data, asked)
        if data and asked is not None and len(data) < asked and not self._exchange.body_complete:
            # read(n) returns less only at EOF (wsgiref, gunicorn): the body stopped before its Content-Length
            # (a later read that brings the rest clears this)
            self._exchange.interrupted = self._length is not None
        return data  # type: ignore[no-any-return]

    def readline(self, *args: Any, **kwargs: Any) -> bytes:
        try:
            data = self._stream.readline(*args, **kwargs)
        except OSError:
            self._gone()
            raise
        self._seen(data, _asked(args, kwargs))
        return data  # type: ignore[no-any-return]

    def readlines(self, *args: Any, **kwargs: Any) -> list[bytes]:
        lines: list[bytes] = self._stream.readlines(*args, **kwargs)
        for line in lines:
            self._seen(line, None)
        return lines

    def __iter__(self) -> TeeInput:
        return self

    def __next__(self) -> bytes:  # next(wsgi.input) works on gunicorn's Body and io.BytesIO
        if self._lines is None:
            self._lines = iter(self._stream)
        line: bytes = next(self._lines)
        self._seen(line, None)
        return line

    def __getattr__(self, name: str) -> Any:
        if name in self._HIDDEN or name == "readinto":  # readinto: set in __init__ when the stream has it
            raise AttributeError(name)
        return getattr(self._stream, name)


def _asked(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    size = args[0] if args else kwargs.get("size")
    return size if size is not None and size >= 0 else None


class AuditedResponse:
    """The app's iterable, passed through chunk by chunk; ``close()`` closes it once, then records once."""

    __slots__ = ("_closed", "_exchange", "_finish", "_iterable", "_iterator")

    def __init__(self, iterable: Iterable[bytes], exchange: Exchange, finish: Callable[[], None]) -> None:
        self._iterable = iterable
        self._iterator: Iterator[bytes] | None = None
        self._exchange = exchange
        self._finish = finish
        self._closed = False

    def __iter__(self) -> AuditedResponse:
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


def wsgi_path(value: str) -> str:
    """PEP 3333 paths are bytes decoded as latin-1; ASGI (and the route table) use UTF-8."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return value


_NOT_A_HEADER = ""
_HEADER_NAMES: dict[str, str] = {}  # environ key -> header name ("" for other keys); bounded below
_MAX_CACHED_NAMES = 512  # header names are client-chosen: never let them grow the cache without bound


def _header_name(key: str) -> str:
    if key.startswith("HTTP_"):
        return key[5:].replace("_", "-").lower()
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return key.replace("_", "-").lower()
    return _NOT_A_HEADER


def request_headers(environ: Environ) -> list[tuple[str, str]]:
    """The request headers as (lower-case name, value) pairs, from the environ's CGI-style keys."""
    names = _HEADER_NAMES
    pairs: list[tuple[str, str]] = []
    for key, value in environ.items():
        name = names.get(key)
        if name is None:
            name = _header_name(key)
            if len(names) < _MAX_CACHED_NAMES:
                names[key] = name
        if name and value and isinstance(value, str):
            pairs.append((name, value))
    return pairs


def content_length(environ: Environ) -> int | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


def hook_file_wrapper(result: Any, exchange: Exchange, finish: Callable[[], None]) -> Any:
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


class SizedAuditedResponse(AuditedResponse):
    """An :class:`AuditedResponse` over a list or tuple: ``len()`` stays available, since PEP 3333 lets a
    server set Content-Length when it is 1 (wsgiref, waitress and gevent do)."""

    __slots__ = ()

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]
