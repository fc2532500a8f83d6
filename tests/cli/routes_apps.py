"""Small real apps for ``audit-middleware routes`` (tests/cli/test_routes.py imports them by module:attr)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI
from flask import Flask
from litestar import Litestar, Router, get, post
from litestar.params import Parameter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from audit_middleware import AuditMiddleware, AuditWriter, AuditWSGIMiddleware
from audit_middleware.testing import MemorySink

ROUTES: dict[str, Any] = {"POST /export": "export_data", "POST /token": None}


def make_fastapi() -> FastAPI:
    app = FastAPI()
    auth = APIRouter()

    @auth.post("/login")
    async def login() -> dict[str, str]:
        return {}

    @auth.post("/logout")
    async def logout() -> None:
        return None

    @app.post("/settings/change")
    async def change_settings() -> dict[str, str]:
        return {}

    @app.post("/export")
    async def export() -> dict[str, str]:
        return {}

    @app.post("/token")
    async def token() -> dict[str, str]:
        return {}

    @app.get("/users/{user_id}")
    async def user(user_id: int) -> dict[str, int]:
        return {"id": user_id}

    app.include_router(auth, prefix="/auth/jwt")
    app.add_middleware(AuditMiddleware, dsn="postgresql://localhost/unused", routes=ROUTES)
    return app


fastapi_app = make_fastapi()
bare_fastapi = FastAPI()


@bare_fastapi.post("/api/token")
async def api_token() -> dict[str, str]:
    return {}


async def text(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


starlette_app = AuditMiddleware(
    Starlette(
        routes=[Route("/login", text, methods=["POST"]), Mount("/v1", routes=[Route("/reset", text, methods=["POST"])])]
    ),
    writer=AuditWriter(sink=MemorySink()),
    routes={"POST /v1/reset": "counter_reset"},
)

flask_app = Flask(__name__)


@flask_app.post("/register")
def register() -> str:
    return "ok"


@flask_app.route("/logout", methods=["GET", "POST"])
def flask_logout() -> str:
    return "ok"


@flask_app.delete("/items/<int:item_id>")
def delete_item(item_id: int) -> str:
    return "ok"


flask_app.wsgi_app = AuditWSGIMiddleware(  # type: ignore[method-assign]
    flask_app.wsgi_app, writer=AuditWriter(sink=MemorySink()), routes={"DELETE /items/<int:id>": "item_deleted"}
)


@post("/login")
async def litestar_login() -> dict[str, str]:
    return {}


@get("/users/{user_id:int}")
async def litestar_user(user_id: Annotated[int, Parameter()]) -> dict[str, int]:
    return {"id": user_id}


litestar_app = AuditMiddleware(
    Litestar(
        [Router("/auth", route_handlers=[litestar_login]), litestar_user], openapi_config=None, logging_config=None
    ),
    writer=AuditWriter(sink=MemorySink()),
)
