"""Run the minimal Django example: one command, on ``$AUDIT_DSN`` or an embedded PostgreSQL.

    pip install -e ".[examples]" && python examples/django_app/run.py            # serve on 127.0.0.1:8001
    python examples/django_app/run.py --demo     # scripted signup/login/logout/reset, then print the rows
    python examples/django_app/run.py --show     # print the latest audit rows
    python examples/django_app/run.py --asgi     # the same under uvicorn: AuditMiddleware, django_app/asgi.py

Django's own tables (users, sessions) live in SQLite (``.audit-data/django.sqlite3``); audit rows go
to PostgreSQL (embedded in ``.audit-data/pg`` unless ``AUDIT_DSN`` is set). Django's user ids are
integers, so rows keep them in ``metadata.user_ref`` (``user_id`` is the uuid column of the users
table the product's schema references).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the django_app package
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: audit_middleware

import _audit_rows  # examples/: what the example apps share

DATA_DIR = Path(__file__).resolve().parents[2] / ".audit-data"  # the clone's, like settings.py's SQLite file
EMBEDDED_IN = _audit_rows.embedded_in(DATA_DIR / "pg")  # read before database() sets $AUDIT_DSN


def database() -> str:
    dsn = _audit_rows.database(DATA_DIR / "pg")
    os.environ["AUDIT_DSN"] = dsn  # what wsgi.py and asgi.py pass to the middleware
    return dsn


async def prepare_audit_table(dsn: str) -> None:
    import asyncpg

    from audit_middleware import init_db

    conn = await asyncpg.connect(dsn)
    try:
        await init_db(conn, users_table=None)  # Django's users live in SQLite: no foreign key to them
    finally:
        await conn.close()


def how_to_look(dsn: str) -> str:
    return _audit_rows.how_to_look(dsn, "examples/django_app/run.py", EMBEDDED_IN)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")


def post(base: str, path: str, body: dict[str, str], opener: urllib.request.OpenerDirector) -> int:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with opener.open(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def demo(base: str) -> None:
    from http.cookiejar import CookieJar

    from django_app.views import LAST_RESET_LINK

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    name = f"demo{os.getpid()}"
    password = "correct horse battery staple"
    post(base, "/accounts/signup/", {"username": name, "email": f"{name}@example.com", "password": password}, opener)
    post(base, "/accounts/logout/", {}, opener)
    post(base, "/accounts/login/", {"username": name, "password": password}, opener)
    post(base, "/accounts/login/", {"username": name, "password": "wrong password"}, opener)
    post(base, "/accounts/logout/", {}, opener)
    post(base, "/accounts/password/reset/", {"email": f"{name}@example.com"}, opener)
    post(base, LAST_RESET_LINK[0], {"password": "new " + password}, opener)


def serve_asgi(dsn: str, port: int, *, scripted: bool) -> None:
    """``django_app.asgi`` under uvicorn; its lifespan shutdown flushes the writer before exit."""
    import socket

    import uvicorn

    from django_app.asgi import application

    listener = socket.socket()
    listener.bind(("127.0.0.1", port))
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning", lifespan="on"))
    if not scripted:
        print(how_to_look(dsn))
        print(
            f"serving on {base} (ASGI, uvicorn); try:  "
            f"curl -X POST {base}/accounts/login/ -d username=ann -d password=pw"
        )
        server.run(sockets=[listener])
        return
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():  # a server that failed to start ends its thread
        time.sleep(0.05)
    demo(base)
    server.should_exit = True
    thread.join(30)  # lifespan shutdown: the writer has flushed
    asyncio.run(_audit_rows.show(dsn, 7))
    print("\n" + how_to_look(dsn))


def main() -> None:
    parser = argparse.ArgumentParser(description="the audited Django example")
    parser.add_argument("--demo", action="store_true", help="run a scripted auth flow and print its audit rows")
    parser.add_argument("--show", action="store_true", help="print the latest audit rows and exit")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--asgi", action="store_true", help="serve asgi.py under uvicorn instead of wsgi.py")
    args = parser.parse_args()
    DATA_DIR.mkdir(exist_ok=True)
    dsn = database()
    if args.show:
        asyncio.run(_audit_rows.show(dsn))
        return
    asyncio.run(prepare_audit_table(dsn))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_app.settings")
    from django.core.management import call_command

    from django_app.wsgi import application

    call_command("migrate", verbosity=0)
    if args.asgi:
        serve_asgi(dsn, 0 if args.demo else args.port, scripted=args.demo)
        return
    server = make_server("127.0.0.1", 0 if args.demo else args.port, application, handler_class=QuietHandler)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        if args.demo:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            demo(base)
            server.shutdown()
            application.close(10)  # flush before reading the rows back
            asyncio.run(_audit_rows.show(dsn, 7))
        else:
            print(how_to_look(dsn))
            print(f"serving on {base}; try:  curl -X POST {base}/accounts/login/ -d username=ann -d password=pw")
            server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        application.close(10)  # flush while the embedded server still runs
    if args.demo:
        print("\n" + how_to_look(dsn))


if __name__ == "__main__":
    main()
