"""A small FastAPI app with real auth endpoints, audited with zero configuration.

Run it (one command; uses ``$AUDIT_DSN`` if set, else an embedded PostgreSQL in ``.audit-data/pg``)::

    pip install -e ".[examples]" && python examples/fastapi_app.py

Or run a scripted demo (register, login, failed login, logout, password reset) and print the rows::

    python examples/fastapi_app.py --demo

The only audit-related line is ``app.add_middleware(AuditMiddleware, dsn=DSN)``; the auth preset
recognises ``/auth/register``, ``/auth/jwt/login``, ``/auth/jwt/logout``, ``/auth/forgot-password`` and
``/auth/reset-password`` (FastAPI-Users conventions) on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import secrets
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
from fastapi import FastAPI, Form, HTTPException, Request
from pydantic import BaseModel
from starlette.authentication import AuthCredentials, AuthenticationBackend, BaseUser, SimpleUser
from starlette.middleware.authentication import AuthenticationMiddleware

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: audit_middleware
sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/: _audit_rows

from _audit_rows import database, embedded_in, how_to_look, show

from audit_middleware import AuditMiddleware, audit_context, init_db

DATA_DIR = Path(".audit-data/pg")
SCRIPT = "examples/fastapi_app.py"
USERS_SQL = """
CREATE TABLE IF NOT EXISTS users (id uuid PRIMARY KEY, email text UNIQUE NOT NULL, password_hash text NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (token text PRIMARY KEY, user_id uuid NOT NULL REFERENCES users(id));
CREATE TABLE IF NOT EXISTS password_resets (token text PRIMARY KEY, user_id uuid NOT NULL REFERENCES users(id));
"""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"{salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    salt, _, _digest = stored.partition("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)


class Credentials(BaseModel):
    email: str
    password: str


class ResetRequest(BaseModel):
    email: str


class ResetConfirm(BaseModel):
    token: str
    password: str


class TokenBackend(AuthenticationBackend):
    """Bearer session tokens looked up in the sessions table: sets ``scope["user"]``."""

    async def authenticate(self, conn: Any) -> tuple[AuthCredentials, BaseUser] | None:
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        user_id = await conn.app.state.db.fetchval("SELECT user_id FROM sessions WHERE token = $1", token)
        if user_id is None:
            return None
        return AuthCredentials(["authenticated"]), SimpleUser(str(user_id))


def create_app(dsn: str, *, schema: str = "public") -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = {"search_path": schema}
        app.state.db = await asyncpg.create_pool(dsn, min_size=1, max_size=4, server_settings=settings)
        async with app.state.db.acquire() as conn:
            await conn.execute(USERS_SQL)
            await init_db(conn, schema=schema, users_table="users", users_schema=schema)
        yield
        await app.state.db.close()

    app = FastAPI(title="audit_middleware example", lifespan=lifespan)

    @app.post("/auth/register", status_code=201)
    async def register(body: Credentials, request: Request) -> dict[str, str]:
        user_id = uuid.uuid4()
        try:
            await request.app.state.db.execute(
                "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)",
                user_id,
                body.email,
                hash_password(body.password),
            )
        except asyncpg.UniqueViolationError:
            raise HTTPException(400, "REGISTER_USER_ALREADY_EXISTS") from None
        return {"id": str(user_id), "email": body.email}

    @app.post("/auth/jwt/login")
    async def login(request: Request, username: str = Form(), password: str = Form()) -> dict[str, str]:
        row = await request.app.state.db.fetchrow("SELECT id, password_hash FROM users WHERE email = $1", username)
        if row is None or not check_password(password, row["password_hash"]):
            raise HTTPException(400, "LOGIN_BAD_CREDENTIALS")
        token = secrets.token_urlsafe(32)
        await request.app.state.db.execute("INSERT INTO sessions VALUES ($1, $2)", token, row["id"])
        return {"access_token": token, "token_type": "bearer", "user_id": str(row["id"])}

    @app.post("/auth/jwt/logout", status_code=204)
    async def logout(request: Request) -> None:
        if not request.user.is_authenticated:
            raise HTTPException(401, "Unauthorized")
        token = request.headers["authorization"].partition(" ")[2]
        await request.app.state.db.execute("DELETE FROM sessions WHERE token = $1", token)

    @app.post("/auth/forgot-password", status_code=202)
    async def forgot_password(body: ResetRequest, request: Request) -> None:
        user_id = await request.app.state.db.fetchval("SELECT id FROM users WHERE email = $1", body.email)
        audit_context(request).update(method="email_link")  # the seed's example metadata
        if user_id is not None:
            token = secrets.token_urlsafe(24)
            await request.app.state.db.execute("INSERT INTO password_resets VALUES ($1, $2)", token, user_id)
            audit_context(request).set_user(user_id)
            print(f"[mail] reset link for {body.email}: /reset?token={token}")
            request.app.state.last_reset_token = token  # for --demo only

    @app.post("/auth/reset-password")
    async def reset_password(body: ResetConfirm, request: Request) -> dict[str, str]:
        db = request.app.state.db
        user_id = await db.fetchval("DELETE FROM password_resets WHERE token = $1 RETURNING user_id", body.token)
        if user_id is None:
            raise HTTPException(400, "RESET_PASSWORD_BAD_TOKEN")
        await db.execute("UPDATE users SET password_hash = $1 WHERE id = $2", hash_password(body.password), user_id)
        audit_context(request).update(user=user_id, method="email_link")
        return {"status": "password updated"}

    @app.get("/users/me")
    async def me(request: Request) -> dict[str, str]:
        if not request.user.is_authenticated:
            raise HTTPException(401, "Unauthorized")
        return {"id": request.user.username}

    app.add_middleware(AuditMiddleware, dsn=dsn, writer_options={"schema": schema})  # <- the whole audit setup
    app.add_middleware(AuthenticationMiddleware, backend=TokenBackend())
    return app


async def demo(dsn: str) -> None:
    import httpx

    app = create_app(dsn)
    email, password = f"demo-{secrets.token_hex(3)}@example.com", "correct horse battery staple"
    transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 50000))
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://demo") as c:
        await c.post("/auth/register", json={"email": email, "password": password})
        token = (await c.post("/auth/jwt/login", data={"username": email, "password": password})).json()
        await c.post("/auth/jwt/login", data={"username": email, "password": "wrong password"})
        await c.post("/auth/jwt/logout", headers={"authorization": f"Bearer {token['access_token']}"})
        await c.post("/auth/forgot-password", json={"email": email})
        await c.post("/auth/reset-password", json={"token": app.state.last_reset_token, "password": "new " + password})
        await _flush(app.middleware_stack)  # built on the first request; lifespan_context bypasses middleware
    await show(dsn, 6)


async def _flush(app: Any) -> None:
    """Write what the middleware buffered and close its writer (what lifespan shutdown does under uvicorn)."""
    while app is not None and not isinstance(app, AuditMiddleware):
        app = getattr(app, "app", None)
    if app is not None:
        await app.writer.aclose(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", action="store_true", help="run a scripted auth flow and print its audit rows")
    parser.add_argument("--show", action="store_true", help="print the latest audit rows and exit")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    dsn = database(DATA_DIR)
    if args.demo or args.show:
        asyncio.run(demo(dsn) if args.demo else show(dsn))
        print("\n" + how_to_look(dsn, SCRIPT, embedded_in(DATA_DIR)))
        return
    import uvicorn

    print(how_to_look(dsn, SCRIPT, embedded_in(DATA_DIR)))
    print(
        f"try:  curl -X POST localhost:{args.port}/auth/register -H 'content-type: application/json' "
        '-d \'{"email": "a@example.com", "password": "pw"}\''
    )
    uvicorn.run(create_app(dsn), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
