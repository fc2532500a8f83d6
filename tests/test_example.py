"""The FastAPI example really works: zero-configuration auditing of its auth endpoints on PostgreSQL."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PgTarget

pytestmark = pytest.mark.anyio
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastapi_app.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("fastapi_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_example_auth_flow_is_audited(empty_schema: PgTarget) -> None:
    example = load_example()
    app = example.create_app(empty_schema.dsn, schema=empty_schema.schema)
    password = "correct horse battery staple"
    transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 50000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://x") as c:
        user = (await c.post("/auth/register", json={"email": "eve@example.com", "password": password})).json()
        token = (await c.post("/auth/jwt/login", data={"username": "eve@example.com", "password": password})).json()
        assert (
            await c.post("/auth/jwt/login", data={"username": "eve@example.com", "password": "nope"})
        ).status_code == 400
        logout = await c.post("/auth/jwt/logout", headers={"authorization": f"Bearer {token['access_token']}"})
        assert logout.status_code == 204
        await c.post("/auth/forgot-password", json={"email": "eve@example.com"})
        reset = await c.post("/auth/reset-password", json={"token": app.state.last_reset_token, "password": "new pw!"})
        assert reset.status_code == 200
        await example._flush(app.middleware_stack)
    rows = await empty_schema.fetch("SELECT user_id, action, metadata FROM {t} ORDER BY created_at, id")
    assert [r["action"] for r in rows] == [
        "signup",
        "login",
        "login_failed",
        "logout",
        "password_reset_requested",
        "password_reset",
    ]
    assert [str(r["user_id"]) if r["user_id"] else None for r in rows] == [user["id"]] * 2 + [None] + [user["id"]] * 3
    metadata = [json.loads(r["metadata"]) for r in rows]
    assert metadata[4]["method"] == "email_link" and all(m["ip"] == "203.0.113.10" for m in metadata)
    text = " ".join(r["metadata"] for r in rows)
    for secret in (password, "new pw!", token["access_token"], app.state.last_reset_token):
        assert secret not in text
