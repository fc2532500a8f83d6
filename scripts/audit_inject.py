"""A pytest plugin that wraps every app a framework's own test suite builds in audit_middleware.

Loaded by ``scripts/framework-suites`` with ``-p audit_inject``. Every Starlette (and so FastAPI)
application gets an ``AuditMiddleware`` around it on its first call, every Flask application an
``AuditWSGIMiddleware`` around its ``wsgi_app``; both audit every request (``audit_unmapped``) and
capture bodies, into an in-memory sink (no database: the suites build thousands of apps). The
middleware owns its writer, so the lifespan path starts and closes it as it would in production.
"""

from __future__ import annotations

import functools
from typing import Any

from audit_middleware import AuditMiddleware, AuditWriter, AuditWSGIMiddleware
from audit_middleware.testing import MemorySink
from audit_middleware.writer.threaded import BackgroundWriter

OPTIONS: dict[str, Any] = {"audit_unmapped": True, "capture_body": True}
_KEY = "_audit_inject_wrapper"


def _patch_starlette() -> None:
    try:
        from starlette.applications import Starlette
    except ImportError:
        return
    original = Starlette.__call__

    async def audited_call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        wrapper = self.__dict__.get(_KEY)
        if wrapper is None:
            wrapper = AuditMiddleware(
                functools.partial(original, self), writer=AuditWriter(sink=MemorySink()), **OPTIONS
            )
            wrapper._owns_writer = True  # closed on lifespan shutdown, as a writer built from a dsn is
            self.__dict__[_KEY] = wrapper
        await wrapper(scope, receive, send)

    Starlette.__call__ = audited_call  # type: ignore[method-assign]


def _patch_flask() -> None:
    try:
        from flask import Flask
    except ImportError:
        return
    original = Flask.wsgi_app
    background = BackgroundWriter(lambda: AuditWriter(sink=MemorySink()))

    def audited_wsgi_app(self: Any, environ: Any, start_response: Any) -> Any:
        wrapper = self.__dict__.get(_KEY)
        if wrapper is None:
            wrapper = AuditWSGIMiddleware(functools.partial(original, self), writer=background, **OPTIONS)
            self.__dict__[_KEY] = wrapper
        return wrapper(environ, start_response)

    Flask.wsgi_app = audited_wsgi_app  # type: ignore[method-assign]


def pytest_configure(config: Any) -> None:
    _patch_starlette()
    _patch_flask()
    config.stash_audit_injected = True
