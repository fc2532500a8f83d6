"""Apps for the lifespan tests, importable by a real server (``uvicorn tests.writer.lifespan_apps:wrapped``)."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from audit_middleware import AuditMiddleware, AuditWriter
from audit_middleware.testing import MemorySink


class Broken:
    """A middleware that fails while Starlette builds its stack (on the first call: the lifespan)."""

    def __init__(self, app: Any) -> None:
        raise RuntimeError("broken middleware")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never built
        raise AssertionError("unreachable")


def broken_app() -> Starlette:
    return Starlette(middleware=[Middleware(Broken)])


def wrapped_broken_app() -> AuditMiddleware:
    return AuditMiddleware(broken_app(), writer=AuditWriter(sink=MemorySink()))


bare = broken_app()
wrapped = wrapped_broken_app()
