"""Requests that never reached an auth view (router 404/405) and clients that left mid-body, on real apps.

Paths such as ``//login`` are sent as raw ASGI scopes (an HTTP client would normalise them first).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Form
from flask import Flask, request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route

from audit_middleware import AuditWriter
from audit_middleware.capture.asgi import AuditMiddleware
from audit_middleware.capture.evidence import watch
from audit_middleware.capture.wsgi import AuditWSGIMiddleware
from audit_middleware.testing import MemorySink
from tests.asgi_helpers import Driver, http_scope, ok_app, read_body
from tests.wsgi_helpers import environ_for, start_response_recorder

pytestmark = pytest.mark.anyio

UNNORMAL = ["//login", "/api/../login", "/./login"]
FORM = [(b"content-type", b"application/x-www-form-urlencoded")]


async def login(request: Request) -> JSONResponse:
    form = await request.form()
    if form.get("password") != "right":
        return JSONResponse({"detail": "bad credentials"}, status_code=401)
    return JSONResponse({"access_token": "opaque", "user_id": 7})


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/login", login, methods=["POST"]), Mount("/api", routes=[])])


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.post("/login")
    async def fastapi_login(username: str = Form(), password: str = Form()) -> dict[str, Any]:
        return {"access_token": "opaque", "user_id": 7}

    return app


async def drive(app: Any, path: str, body: bytes = b"password=wrong", method: str = "POST") -> Driver:
    driver = Driver([{"type": "http.request", "body": body}])
    await app(http_scope(method, path, headers=FORM), driver.receive, driver.send)
    return driver


# -- item 10: the router answered, no auth view ran --------------------------------------------------


@pytest.mark.parametrize("make", [starlette_app, fastapi_app])
@pytest.mark.parametrize("path", UNNORMAL)
async def test_a_path_the_router_404s_is_no_failed_login(
    make: Any, path: str, writer: AuditWriter, sink: MemorySink
) -> None:
    driver = await drive(AuditMiddleware(make(), writer=writer), path)
    assert driver.status == 404
    await writer.flush()
    assert sink.actions() == []


@pytest.mark.parametrize("make", [starlette_app, fastapi_app])
async def test_the_login_view_refusing_a_password_is_still_a_failed_login(
    make: Any, writer: AuditWriter, sink: MemorySink
) -> None:
    app = AuditMiddleware(make(), writer=writer)
    driver = await drive(app, "/login", b"username=ann&password=wrong" if make is starlette_app else b"username=ann")
    assert driver.status in (401, 422)
    await writer.flush()
    assert sink.actions() == ["login_failed"]


async def show_form(request: Request) -> PlainTextResponse:
    return PlainTextResponse("the form")


async def test_a_method_the_router_refuses_is_no_auth_event(writer: AuditWriter, sink: MemorySink) -> None:
    app = Starlette(routes=[Route("/login", show_form, methods=["GET"])])
    driver = await drive(AuditMiddleware(app, writer=writer), "/login")  # POST: the route exists, the method not
    assert driver.status == 405
    await writer.flush()
    assert sink.actions() == []


async def test_a_user_route_still_records_a_refused_method(writer: AuditWriter, sink: MemorySink) -> None:
    app = Starlette(routes=[Route("/login", show_form, methods=["GET"])])
    driver = await drive(AuditMiddleware(app, writer=writer, routes={"POST /login": "sign_in"}), "/login")
    assert driver.status == 405
    await writer.flush()
    assert sink.actions() == ["sign_in_failed"]  # the user's own map is not second-guessed


async def test_a_mount_whose_inner_router_404s_is_no_auth_event(writer: AuditWriter, sink: MemorySink) -> None:
    driver = await drive(AuditMiddleware(starlette_app(), writer=writer), "/api/login")
    assert driver.status == 404
    await writer.flush()
    assert sink.actions() == []


@pytest.mark.parametrize("path", UNNORMAL)
async def test_a_raw_app_404_on_a_path_not_in_normal_form_is_no_auth_event(
    path: str, writer: AuditWriter, sink: MemorySink
) -> None:
    driver = await drive(AuditMiddleware(ok_app(404), writer=writer), path)
    assert driver.status == 404
    await writer.flush()
    assert sink.actions() == []


async def test_a_raw_app_404_on_the_login_path_itself_is_a_failed_login(writer: AuditWriter, sink: MemorySink) -> None:
    # ("no such user" answered 404 by the login view: nothing says the view was not reached)
    await drive(AuditMiddleware(ok_app(404), writer=writer), "/login")
    await writer.flush()
    assert sink.actions() == ["login_failed"]


# -- item 11: the client left mid-body ---------------------------------------------------------------

CUT: list[dict[str, Any]] = [
    {"type": "http.request", "body": b"username=ann&pass", "more_body": True},
    {"type": "http.disconnect"},
]


async def body_login(request: Request) -> PlainTextResponse:
    await request.body()
    return PlainTextResponse("ok")


@pytest.mark.parametrize(
    "app",
    [
        Starlette(routes=[Route("/login", login, methods=["POST"])]),  # request.form()
        Starlette(routes=[Route("/login", body_login, methods=["POST"])]),  # request.body()
        fastapi_app(),  # Form(): FastAPI answers its ClientDisconnect with a 400
    ],
    ids=["starlette-form", "starlette-body", "fastapi-form"],
)
async def test_a_client_gone_mid_body_is_client_disconnected(app: Any, writer: AuditWriter, sink: MemorySink) -> None:
    driver = Driver(CUT)
    try:
        await AuditMiddleware(app, writer=writer)(
            http_scope("POST", "/login", headers=FORM), driver.receive, driver.send
        )
    except Exception as exc:  # Starlette re-raises ClientDisconnect: the middleware passes it on unchanged
        assert type(exc).__name__ == "ClientDisconnect"
    await writer.flush()
    [event] = sink.events
    http = event.metadata["http"]
    assert (event.action, http["status"], http.get("exception"), http["outcome"]) == (
        "login_attempt",
        None,
        None,
        "client_disconnected",
    )
    assert event.metadata["auth"] == {"outcome": "client_disconnected"}


async def test_a_raw_app_whose_client_left_mid_body_on_a_user_route(writer: AuditWriter, sink: MemorySink) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)  # ends at http.disconnect
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"incomplete body"})

    driver = Driver(CUT)
    await AuditMiddleware(app, writer=writer, routes={"POST /upload": "upload"})(
        http_scope("POST", "/upload"), driver.receive, driver.send
    )
    await writer.flush()
    [event] = sink.events
    assert (event.action, event.metadata["http"]["status"], event.metadata["http"]["outcome"]) == (
        "upload",  # neither done nor failed: the user's own action, with the outcome saying what happened
        None,
        "client_disconnected",
    )


async def test_a_disconnect_after_the_whole_body_is_no_interrupted_request(
    writer: AuditWriter, sink: MemorySink
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await read_body(receive)
        await send({"type": "http.response.start", "status": 401, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    driver = Driver([{"type": "http.request", "body": b"password=wrong"}])
    await AuditMiddleware(app, writer=writer)(http_scope("POST", "/login", headers=FORM), driver.receive, driver.send)
    await writer.flush()
    assert sink.actions() == ["login_failed"]


@pytest.fixture
def flask_login() -> Iterator[tuple[AuditWSGIMiddleware, MemorySink]]:
    app = Flask(__name__)

    @app.post("/login")
    def view() -> tuple[dict[str, str], int]:
        return {"seen": request.form.get("username", "")}, 200  # werkzeug raises ClientDisconnected (400)

    sink = MemorySink()
    middleware = AuditWSGIMiddleware(app.wsgi_app, writer=AuditWriter(sink=sink))
    yield middleware, sink
    middleware.close(5)


@pytest.mark.parametrize("given", [b"username=ann&pass", b""])
def test_wsgi_truncated_input_is_client_disconnected(
    flask_login: tuple[AuditWSGIMiddleware, MemorySink], given: bytes
) -> None:
    middleware, sink = flask_login
    environ = environ_for(
        "POST",
        "/login",
        CONTENT_TYPE="application/x-www-form-urlencoded",
        CONTENT_LENGTH="40",  # the client announced 40 bytes and sent fewer before it went away
        **{"wsgi.input": io.BytesIO(given)},
    )
    start_response, calls = start_response_recorder()
    result = middleware(environ, start_response)
    b"".join(result)
    result.close()  # type: ignore[attr-defined]
    assert calls[0][0].startswith("400")  # what werkzeug answers
    middleware.flush(5)
    [event] = sink.events
    http = event.metadata["http"]
    assert (event.action, http["status"], http["outcome"]) == ("login_attempt", None, "client_disconnected")


def test_wsgi_a_complete_body_is_no_disconnect(flask_login: tuple[AuditWSGIMiddleware, MemorySink]) -> None:
    middleware, sink = flask_login
    body = b"username=ann&password=x"
    environ = environ_for(
        "POST",
        "/login",
        body,
        CONTENT_TYPE="application/x-www-form-urlencoded",
        CONTENT_LENGTH=str(len(body)),
    )
    start_response, _calls = start_response_recorder()
    result = middleware(environ, start_response)
    b"".join(result)
    result.close()  # type: ignore[attr-defined]
    middleware.flush(5)
    [event] = sink.events
    assert "outcome" not in event.metadata["http"] and event.metadata["http"]["status"] == 200


def _wsgi_404(watching: bool) -> Any:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if watching:  # framework glue that found no route: it watches, and sets no ROUTE_KEY
            watch(environ, ["login"])
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found"]

    return app


@pytest.mark.parametrize(("watching", "actions"), [(True, []), (False, ["login_failed"])])
def test_wsgi_glue_that_resolved_no_route_means_the_router_answered(watching: bool, actions: list[str]) -> None:
    sink = MemorySink()
    middleware = AuditWSGIMiddleware(_wsgi_404(watching), writer=AuditWriter(sink=sink))
    try:
        start_response, _calls = start_response_recorder()
        result = middleware(environ_for("POST", "/login"), start_response)
        b"".join(result)
        result.close()  # type: ignore[attr-defined]
        middleware.flush(5)
    finally:
        middleware.close(5)
    assert sink.actions() == actions
