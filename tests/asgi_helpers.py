"""Small raw ASGI apps and drivers shared by the ASGI middleware tests."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

import httpx

UID = "0d5f6f36-1f7b-4c9e-8d2a-6f0e3b7b9c11"
PASSWORD = "hunter2-Sup3rSecret!"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhdHRhY2tlciJ9.c2lnbmF0dXJl"


def make_jwt(payload: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(payload)}.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def client(app: Any, peer: str = "10.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(peer, 1234)), base_url="http://testserver")


async def read_body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def respond(send: Any, status: int = 200, body: bytes = b"ok", content_type: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


def ok_app(status: int = 200, *, read: bool = True, body: bytes = b"ok", content_type: bytes = b"text/plain") -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        if read:
            await read_body(receive)
        await respond(send, status, body, content_type)

    return app


def http_scope(
    method: str = "POST",
    path: str = "/login",
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    root_path: str = "",
    query_string: bytes = b"",
    client: tuple[str, int] | None = ("10.0.0.1", 1234),
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": query_string,
        "headers": list(headers),
        "client": client,
        "server": ("testserver", 80),
    }


class Driver:
    """Drive an ASGI app directly: scripted receive messages, recorded send messages."""

    def __init__(self, messages: Iterable[dict[str, Any]] = ({"type": "http.request", "body": b""},)) -> None:
        self.incoming = list(messages)
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.receive_calls = 0

    async def receive(self) -> dict[str, Any]:
        self.receive_calls += 1
        message = self.incoming.pop(0) if self.incoming else {"type": "http.disconnect"}
        self.received.append(message)
        return message

    async def send(self, message: Any) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.sent if m["type"] == "http.response.start"), None)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
