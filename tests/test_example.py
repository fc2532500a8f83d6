"""The FastAPI example really works: zero-configuration auditing of its auth endpoints on PostgreSQL."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import sys
import tomllib
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


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """The distributions ``names`` install, with their dependencies (extras and markers not followed)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo.extend(_requirement_name(r) for r in requires if ";" not in r)
    return seen


def test_the_examples_extra_installs_everything_the_examples_import() -> None:
    # scripts/example installs only the "examples" extra: an import served by the dev extra alone
    # (httpx for the FastAPI demo was one) passes every test and fails on a fresh machine.
    root = EXAMPLE.parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    installed = _closure({_requirement_name(r) for r in project["project"]["optional-dependencies"]["examples"]})
    installed |= _closure({_requirement_name(r) for r in project["project"]["dependencies"]})
    providers = importlib.metadata.packages_distributions()
    local = {"audit_middleware", "examples"} | {p.stem for p in (root / "examples").iterdir()}  # examples/ itself
    missing = set()
    for path in (root / "examples").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            for module in (m.partition(".")[0] for m in modules):
                if module in sys.stdlib_module_names or module in local:
                    continue
                dists = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
                if not dists & installed:
                    missing.add(f"{module} ({path.relative_to(root)})")
    assert not missing, f"imported by the examples but not installed by the examples extra: {sorted(missing)}"
