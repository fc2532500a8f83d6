"""AuditMiddleware inside Starlette and FastAPI apps: route templates, mounts, lifespan, add_middleware."""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
import pytest
from fastapi import FastAPI, Form, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from audit_middleware import AuditWriter, audit_context
from audit_middleware.capture.asgi import AuditMiddleware
from audit_middleware.testing import MemorySink
from tests.asgi_helpers import PASSWORD, UID, client, make_jwt

pytestmark = pytest.mark.anyio


async def text(request: Any) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette_app(**kwargs: Any) -> Starlette:
    api = Starlette(routes=[Route("/items/{item_id:int}", text, methods=["PUT"])])
    return Starlette(
        routes=[
            Route("/login", text, methods=["POST"]),
            Route("/users/{user_id:int}", text, methods=["PUT", "DELETE"]),
            Mount("/v1", app=api),
        ],
        **kwargs,
    )


async def test_starlette_route_template_is_recorded(writer: AuditWriter, sink: MemorySink) -> None:
    app = starlette_app()
    app.add_middleware(AuditMiddleware, writer=writer, routes={"PUT|DELETE /users/{user_id}": "user_changed"})
    async with client(app) as c:
        assert (await c.put("/users/42")).text == "ok"
        await c.delete("/users/7")
    await writer.flush()
    assert sink.actions() == ["user_changed", "user_changed"]
    http = sink.events[0].metadata["http"]
    assert http["route"] == "/users/{user_id}" and http["path"] == "/users/42"


async def test_mounted_sub_app_template_includes_the_mount(writer: AuditWriter, sink: MemorySink) -> None:
    app = starlette_app()
    app.add_middleware(AuditMiddleware, writer=writer, routes={"PUT /v1/items/{item_id}": "item_changed"})
    async with client(app) as c:
        await c.put("/v1/items/3")
    await writer.flush()
    assert sink.actions() == ["item_changed"]
    assert sink.events[0].metadata["http"]["route"] == "/v1/items/{item_id}"


async def test_trailing_slash_redirect_is_not_a_login(writer: AuditWriter, sink: MemorySink) -> None:
    app = starlette_app()
    app.add_middleware(AuditMiddleware, writer=writer)
    async with client(app) as c:
        response = await c.post("/login/", follow_redirects=True)
    assert response.status_code == 200
    await writer.flush()
    assert sink.actions() == ["login_attempt"]  # the 307 itself is not recorded; the follow-up is (its text
    # answer does not say whether the login succeeded)


async def test_lifespan_starts_and_flushes_the_writer_and_keeps_the_apps_own(sink: MemorySink) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        events.append("app startup")
        yield
        events.append("app shutdown")

    writer = AuditWriter(sink=sink, flush_interval=60)
    app = starlette_app(lifespan=lifespan)
    app.add_middleware(AuditMiddleware, writer=writer)
    send_stream, receive_stream = anyio.create_memory_object_stream[dict[str, Any]](10)
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            sent.append({"rows_at_complete": len(sink.rows)})
        sent.append(message)

    async with send_stream, receive_stream, anyio.create_task_group() as tg:
        tg.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive_stream.receive, send)
        await send_stream.send({"type": "lifespan.startup"})
        with anyio.fail_after(5):
            while not sent:
                await anyio.sleep(0.01)
        assert writer.started and events == ["app startup"]
        async with client(app) as c:
            await c.post("/login")
        await send_stream.send({"type": "lifespan.shutdown"})
    assert events == ["app startup", "app shutdown"]
    assert {"rows_at_complete": 1} in sent  # flushed before shutdown.complete went out
    assert [m.get("type") for m in sent if "type" in m] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    await writer.aclose()


async def test_app_without_lifespan_support_raises_to_the_server_as_without_us(sink: MemorySink) -> None:
    # Answering the lifespan for it would hide a start-up failure (tests/writer/test_lifespan.py): the
    # server decides, from the exception, whether the app speaks lifespan (ASGI spec, uvicorn --lifespan).
    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"

    writer = AuditWriter(sink=sink)
    middleware = AuditMiddleware(http_only, writer=writer)
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        sent.append(message["type"])

    with anyio.fail_after(5), pytest.raises(AssertionError):
        await middleware({"type": "lifespan"}, receive, send)
    assert sent == []
    await writer.aclose()


async def test_owned_writer_is_closed_on_shutdown(pg_dsn: str) -> None:
    async def lifespan_app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    middleware = AuditMiddleware(lifespan_app, dsn=pg_dsn)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        pass

    await middleware({"type": "lifespan"}, receive, send)
    assert not middleware.writer.started
    with pytest.raises(Exception, match="closed"):
        middleware.writer.record_nowait("x")


async def test_startup_failure_of_the_app_still_propagates(writer: AuditWriter) -> None:
    async def broken(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise RuntimeError("startup failed")

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        pass

    with pytest.raises(RuntimeError, match="startup failed"):
        await AuditMiddleware(broken, writer=writer)({"type": "lifespan"}, receive, send)


# -- FastAPI ---------------------------------------------------------------------------------------


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.post("/auth/token")
    async def token(username: str = Form(), password: str = Form()) -> dict[str, str]:
        if password != PASSWORD:
            return JSONResponse({"detail": "bad credentials"}, status_code=401)  # type: ignore[return-value]
        return {"access_token": make_jwt({"sub": UID}), "token_type": "bearer"}

    @app.post("/auth/forgot-password")
    async def forgot(request: Request) -> dict[str, str]:
        audit_context(request).update(method="email_link")
        return {"status": "sent"}

    @app.get("/items/{item_id}")
    def item(item_id: int) -> dict[str, int]:  # sync: runs in a thread, the ContextVar still works
        audit_context().update(action="item_viewed", item=item_id)
        return {"item": item_id}

    return app


async def test_fastapi_zero_code_login_flow(writer: AuditWriter, sink: MemorySink) -> None:
    app = fastapi_app()
    app.add_middleware(AuditMiddleware, writer=writer)
    async with client(app) as c:
        ok = await c.post("/auth/token", data={"username": "alice@example.com", "password": PASSWORD})
        bad = await c.post("/auth/token", data={"username": "mallory", "password": "wrong-guess-123"})
        forgot = await c.post("/auth/forgot-password", json={"email": "alice@example.com"})
        item = await c.get("/items/5")
    assert ok.status_code == 200 and "access_token" in ok.json()
    assert (bad.status_code, forgot.status_code, item.json()) == (401, 200, {"item": 5})
    await writer.flush()
    assert sink.actions() == ["login", "login_failed", "password_reset_requested", "item_viewed"]
    login, failed, reset, viewed = sink.events
    assert str(login.user_id) == UID and login.metadata["identifier"] == "alice@example.com"
    assert failed.user_id is None and failed.metadata["identifier"] == "mallory"
    assert reset.metadata["method"] == "email_link"
    assert viewed.metadata["item"] == 5 and viewed.metadata["http"]["route"] == "/items/{item_id}"
    sink.assert_no_secret(PASSWORD, "wrong-guess-123", ok.json()["access_token"])
