"""Raw WSGI apps and a driver shared by the WSGI middleware tests."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.validate import validator

from werkzeug.test import Client

from audit_middleware import AuditWriter
from audit_middleware.capture.wsgi import AuditWSGIMiddleware
from audit_middleware.testing import MemorySink, StoredEvent

UID = "0d5f6f36-1f7b-4c9e-8d2a-6f0e3b7b9c11"
PASSWORD = "hunter2-Sup3rSecret!"

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
App = Callable[[Environ, StartResponse], Iterable[bytes]]


def read_all(environ: Environ) -> bytes:
    """Read the body the way PEP 3333 apps do (Content-Length, else until EOF when terminated)."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        return bytes(stream.read(int(length)))
    if environ.get("wsgi.input_terminated"):
        chunks = []
        while chunk := stream.read(4096):
            chunks.append(chunk)
        return b"".join(chunks)
    return b""


def ok_app(
    status: str = "200 OK", *, read: bool = True, body: bytes = b"ok", content_type: str = "text/plain"
) -> tuple[App, list[bytes]]:
    """An app answering ``status``; the bodies it read are appended to the returned list."""
    seen: list[bytes] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if read:
            seen.append(read_all(environ))
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app, seen


def json_app(payload: dict[str, Any], status: str = "200 OK") -> App:
    body = json.dumps(payload).encode()
    app, _ = ok_app(status, body=body, content_type="application/json")
    return app


class Closing:
    """An iterable that counts ``close()`` calls and the chunks pulled from it."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.pulled = 0
        self.closes = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk

    def close(self) -> None:
        self.closes += 1


class Audited:
    """A middleware over ``app`` (both sides checked by ``wsgiref.validate``) recording into a MemorySink."""

    def __init__(self, app: App, *, validate: bool = True, **options: Any) -> None:
        self.sink = MemorySink()
        inner = validator(app) if validate else app
        self.middleware = AuditWSGIMiddleware(inner, writer=AuditWriter(sink=self.sink), **options)
        self.app = validator(self.middleware) if validate else self.middleware
        self.client = Client(self.app)

    def request(self, method: str, path: str, *, peer: str = "10.0.0.1", **kwargs: Any) -> Any:
        environ_base = {"REMOTE_ADDR": peer, **kwargs.pop("environ_base", {})}
        return self.client.open(path, method=method, environ_base=environ_base, buffered=True, **kwargs)

    def events(self) -> list[StoredEvent]:
        self.middleware.flush(5)
        return self.sink.events

    def close(self) -> None:
        self.middleware.close(5)


def environ_for(method: str, path: str, body: Any = b"", **extra: Any) -> Environ:
    """A hand-made environ (for bodies werkzeug's client would not send as is, e.g. chunked)."""
    environ: Environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "10.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    environ.update(extra)
    return environ


def start_response_recorder() -> tuple[StartResponse, list[tuple[str, list[tuple[str, str]]]]]:
    calls: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        calls.append((status, headers))
        return lambda data: None

    return start_response, calls
