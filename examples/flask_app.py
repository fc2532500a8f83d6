"""A small Flask app with real auth endpoints over a users table, audited by ``AuditWSGIMiddleware``.

Run it (one command; uses ``$AUDIT_DSN`` if set, else an embedded PostgreSQL in ``.audit-data/pg``)::

    pip install -e ".[examples]" && python examples/flask_app.py

Or run a scripted demo (register, login, failed login, logout, password reset) and print the rows::

    python examples/flask_app.py --demo

The audit setup is two lines at the bottom of ``create_app``: wrap ``app.wsgi_app`` and
``install_flask(app)`` (hands the session's user to the middleware). The auth preset recognises
``/register``, ``/login``, ``/logout``, ``/reset`` and ``/reset/<token>`` (Flask-Security-Too
conventions) on its own. Under gunicorn each worker gets its own writer thread and pool.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import secrets
import sys
import threading
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from flask import Flask, g, request, session

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: audit_middleware
sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/: _audit_rows

from _audit_rows import database, embedded_in, how_to_look, show

from audit_middleware import AuditWSGIMiddleware, audit_context, init_db, install_flask

T = TypeVar("T")
DATA_DIR = Path(".audit-data/pg")
SCRIPT = "examples/flask_app.py"
USERS_SQL = """
CREATE TABLE IF NOT EXISTS users (id uuid PRIMARY KEY, email text UNIQUE NOT NULL, password_hash text NOT NULL);
CREATE TABLE IF NOT EXISTS password_resets (token text PRIMARY KEY, user_id uuid NOT NULL REFERENCES users(id));
"""


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"{salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    salt, _, _digest = stored.partition("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)


class Database:
    """asyncpg for sync Flask views: one event loop on a thread (keeps the example free of another driver)."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="example-db", daemon=True)
        self.thread.start()
        self.pool: asyncpg.Pool = self.run(_create_pool(dsn, schema))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def fetchval(self, sql: str, *args: Any) -> Any:
        return self.run(self.pool.fetchval(sql, *args))

    def fetchrow(self, sql: str, *args: Any) -> Any:
        return self.run(self.pool.fetchrow(sql, *args))

    def execute(self, sql: str, *args: Any) -> str:
        return self.run(self.pool.execute(sql, *args))

    def close(self) -> None:
        self.run(self.pool.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


async def _create_pool(dsn: str, schema: str) -> asyncpg.Pool:
    return await asyncpg.create_pool(dsn, min_size=1, max_size=4, server_settings={"search_path": schema})


async def _setup(pool: asyncpg.Pool, schema: str) -> None:
    conn: Any
    async with pool.acquire() as conn:
        await conn.execute(USERS_SQL)
        await init_db(conn, schema=schema, users_table="users", users_schema=schema)


def create_app(dsn: str, *, schema: str = "public") -> Flask:
    """The app; its tables and the audit table live in ``schema``."""
    db = Database(dsn, schema)
    db.run(_setup(db.pool, schema))
    app = Flask(__name__)
    app.secret_key = secrets.token_bytes(32)
    app.config["LAST_RESET_TOKEN"] = None  # for --demo only
    app.extensions["example_db"] = db

    @app.before_request
    def load_user() -> None:
        g.user = session.get("user_id")  # install_flask reads g.user (or flask_login.current_user)

    @app.post("/register")
    def register() -> tuple[dict[str, str], int]:
        body = request.get_json(force=True)
        user_id = uuid.uuid4()
        try:
            db.execute(
                "INSERT INTO users (id, email, password_hash) VALUES ($1, $2, $3)",
                user_id,
                body["email"],
                hash_password(body["password"]),
            )
        except asyncpg.UniqueViolationError:
            return {"error": "already registered"}, 400
        return {"id": str(user_id), "email": body["email"]}, 201

    @app.post("/login")
    def login() -> tuple[dict[str, str], int]:
        form = request.get_json(silent=True) or request.form
        row = db.fetchrow("SELECT id, password_hash FROM users WHERE email = $1", form.get("email", ""))
        if row is None or not check_password(form.get("password", ""), row["password_hash"]):
            return {"error": "bad credentials"}, 401
        session["user_id"] = g.user = str(row["id"])
        return {"status": "logged in"}, 200

    @app.post("/logout")
    def logout() -> tuple[str, int]:
        session.clear()  # the user was taken before the view ran
        g.user = None
        return "", 204

    @app.post("/reset")
    def forgot_password() -> tuple[str, int]:
        email = (request.get_json(silent=True) or request.form).get("email", "")
        user_id = db.fetchval("SELECT id FROM users WHERE email = $1", email)
        audit_context(request).update(method="email_link")  # the seed's example metadata
        if user_id is not None:
            token = secrets.token_urlsafe(24)
            db.execute("INSERT INTO password_resets VALUES ($1, $2)", token, user_id)
            audit_context(request).set_user(user_id)
            print(f"[mail] reset link for {email}: /reset/{token}")
            app.config["LAST_RESET_TOKEN"] = token
        return "", 202

    @app.post("/reset/<token>")
    def reset_password(token: str) -> tuple[dict[str, str], int]:
        password = (request.get_json(silent=True) or request.form).get("password", "")
        user_id = db.fetchval("DELETE FROM password_resets WHERE token = $1 RETURNING user_id", token)
        if user_id is None:
            return {"error": "bad token"}, 400
        db.execute("UPDATE users SET password_hash = $1 WHERE id = $2", hash_password(password), user_id)
        audit_context(request).update(user=user_id, method="email_link")
        return {"status": "password updated"}, 200

    app.wsgi_app = AuditWSGIMiddleware(  # type: ignore[method-assign]  # <- the audit setup
        app.wsgi_app, dsn=dsn, writer_options={"schema": schema}
    )
    install_flask(app)  # <- and the session's user for it
    return app


def shutdown(app: Flask) -> None:
    """Flush the audit writer and close the app's pool while the (embedded) server still runs."""
    wrapped = app.wsgi_app
    if isinstance(wrapped, AuditWSGIMiddleware):
        wrapped.close(10)
    app.extensions["example_db"].close()


def demo(dsn: str) -> None:
    app = create_app(dsn)
    email, password = f"demo-{secrets.token_hex(3)}@example.com", "correct horse battery staple"
    client = app.test_client()
    # buffered=True: the test client then closes each response, as servers do (the event is recorded on close)
    env = {"REMOTE_ADDR": "203.0.113.10"}
    client.post("/register", json={"email": email, "password": password}, environ_base=env, buffered=True)
    client.post("/login", json={"email": email, "password": password}, environ_base=env, buffered=True)
    client.post("/login", json={"email": email, "password": "wrong password"}, environ_base=env, buffered=True)
    client.post("/logout", environ_base=env, buffered=True)
    client.post("/reset", json={"email": email}, environ_base=env, buffered=True)
    token = app.config["LAST_RESET_TOKEN"]
    client.post(f"/reset/{token}", json={"password": "new " + password}, environ_base=env, buffered=True)
    shutdown(app)  # flush before reading the rows back
    asyncio.run(show(dsn, 6))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--demo", action="store_true", help="run a scripted auth flow and print its audit rows")
    parser.add_argument("--show", action="store_true", help="print the latest audit rows and exit")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    dsn = database(DATA_DIR)
    if args.demo or args.show:
        demo(dsn) if args.demo else asyncio.run(show(dsn))
        print("\n" + how_to_look(dsn, SCRIPT, embedded_in(DATA_DIR)))
        return
    app = create_app(dsn)
    print(how_to_look(dsn, SCRIPT, embedded_in(DATA_DIR)))
    print(
        f"try:  curl -X POST localhost:{args.port}/register -H 'content-type: application/json' "
        '-d \'{"email": "a@example.com", "password": "pw"}\''
    )
    try:
        app.run(host="127.0.0.1", port=args.port, threaded=True)
    finally:
        shutdown(app)


if __name__ == "__main__":
    main()
