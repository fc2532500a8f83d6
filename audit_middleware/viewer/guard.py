"""The viewer's front door: security headers on every response, and ``authorize`` before every route.

Pure ASGI (no ``BaseHTTPMiddleware``). The static files (CSS, the live view's script) and, with
:class:`~audit_middleware.viewer.auth.TokenAuth`, the sign-in page are the only paths served without
``authorize``; they hold nothing from the table. A hook that raises, or returns anything but ``True``,
denies: there is no open door.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import TokenAuth

__all__ = ["CSP", "SECURITY_HEADERS", "Authorize", "Guard"]

logger = logging.getLogger("audit_middleware.viewer")

Authorize = Callable[[HTTPConnection], bool | Awaitable[bool]]
"""``authorize(request) -> bool`` (sync or async): True lets the request in."""

MSG_AUTHORIZE_FAILED = "viewer authorize hook failed: %s"
# No inline script or style anywhere: the templates link one stylesheet and one script of the app's own.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",  # audit rows stay out of browser and proxy caches
}


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class Guard:
    """Pure ASGI: security headers on every response, and ``authorize`` before every route."""

    def __init__(self, app: ASGIApp, authorize: Authorize) -> None:
        self.app, self.authorize = app, authorize
        self.token = authorize if isinstance(authorize, TokenAuth) else None
        self.open_paths = ("/static/", "/login") if self.token is not None else ("/static/",)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        path = _route_path(scope)
        if not any(path == p.rstrip("/") or path.startswith(p) for p in self.open_paths):
            conn = HTTPConnection(scope)
            if not await self._allowed(conn):
                await self._deny(conn)(scope, receive, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)

    async def _allowed(self, conn: HTTPConnection) -> bool:
        try:
            result = self.authorize(conn)
            if inspect.isawaitable(result):
                result = await result
            return result is True
        except Exception as exc:  # a failing hook denies: never an open door
            logger.error(MSG_AUTHORIZE_FAILED, type(exc).__name__)
            return False

    def _deny(self, conn: HTTPConnection) -> Response:
        if self.token is not None:
            if conn.scope["method"] == "GET" and "text/html" in conn.headers.get("accept", ""):
                login = conn.url_for("login").path
                return RedirectResponse(login, status_code=303)
            return Response(
                "sign in or send Authorization: Bearer <token>\n",
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        return Response("forbidden\n", status_code=403)
