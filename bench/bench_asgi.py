"""ASGI middleware speed: the same login app bare and wrapped, in process and over HTTP.

Usage:
    python bench/bench_asgi.py [--dsn DSN] [--app raw|fastapi] [--requests 20000] [--duration 10] [--connections 32]
                               [--rounds 2] [--skip-http] [--ceiling]

Without --dsn (or AUDIT_DSN) an embedded PostgreSQL is started in a temporary directory. Rows go to
the schema ``bench_asgi``, dropped at the end.

(a) In process: drives the ASGI callable directly (no server), µs per request for the bare app,
    the wrapped app on an audited route (POST /login) and on an unaudited one (GET /items), timed
    until the writer has drained (``flush()``), with a MemorySink (CPU cost of the middleware and
    row conversion) and with the PostgreSQL sink.
(b) Over HTTP: uvicorn in a subprocess on 127.0.0.1, load from wrk (``apt-get install wrk``) or, if
    absent, a Python client in another process; variants bare / audited / naive (a middleware that
    awaits one INSERT per request). Reports requests/s and p99, and checks that every request the
    app handled is a row in the table (the server counts them and writes the count at shutdown).

With ``--ceiling`` two diagnostic variants join the HTTP runs: ``wrapper-only`` (the middleware wraps
every request but builds no event) and ``free-event`` (building the redacted event costs nothing; the
buffer and the writer stay real). They bound what any faster event building could ever gain.

Each HTTP variant runs ``--duration`` seconds, ``--rounds`` times, the variants alternating; the
summary gives each variant's best and median as a fraction of bare's. The whole run is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import CEILING_HELP, CEILINGS, apply_ceiling

from audit_middleware import AuditMiddleware, AuditWriter, init_db
from audit_middleware.testing import MemorySink

SCHEMA = "bench_asgi"
USER_ID = str(uuid.UUID(int=1))
LOGIN_BODY = b"username=alice%40example.com&password=correct-horse-battery"


# -- the app -------------------------------------------------------------------------------------


def login_app(counter: list[int] | None = None) -> Any:
    """A raw ASGI login app: reads the form, answers JSON naming the user (as real login endpoints do)."""
    response = json.dumps({"user_id": USER_ID, "access_token": "opaque-session-token", "token_type": "bearer"})
    login_body = response.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(login_body)).encode())]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        if scope["path"] == "/login":
            form = dict(parse_qsl(body.decode()))
            status = 200 if form.get("password") else 400
            if counter is not None:
                counter[0] += 1
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": login_body})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"items"})

    return app


def fastapi_login_app(counter: list[int] | None = None) -> Any:
    """The same login endpoint as a FastAPI app (form parsing, validation, JSON response)."""
    from fastapi import FastAPI, Form
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post("/login")
    async def login(username: str = Form(), password: str = Form()) -> Any:
        if counter is not None:
            counter[0] += 1
        if not password:
            return JSONResponse({"detail": "bad credentials"}, status_code=400)
        return {"user_id": USER_ID, "access_token": "opaque-session-token", "token_type": "bearer"}

    @app.get("/items")
    async def items() -> str:
        return "items"

    return app


def scope_for(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"user-agent", b"bench/1.0"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(LOGIN_BODY)).encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }


# -- (a) in process --------------------------------------------------------------------------------


async def drive(app: Any, method: str, path: str, n: int) -> float:
    message = {"type": "http.request", "body": LOGIN_BODY, "more_body": False}

    async def receive() -> dict[str, Any]:
        return message

    async def send(message: dict[str, Any]) -> None:
        return None

    start = time.perf_counter()
    for _ in range(n):
        await app(dict(scope_for(method, path)), receive, send)
    return time.perf_counter() - start


async def scope_copy_cost(n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        dict(scope_for("POST", "/login"))
    return time.perf_counter() - start


async def in_process(dsn: str, n: int, kind: str, rounds: int = 3) -> dict[str, float]:
    results: dict[str, float] = {}
    make = fastapi_login_app if kind == "fastapi" else login_app
    bare = make()
    for label, sink_kind in (("memory", "memory"), ("postgres", "postgres")):
        writer = (
            AuditWriter(sink=MemorySink())
            if sink_kind == "memory"
            else AuditWriter(dsn, schema=SCHEMA, batch_size=2000)
        )
        await writer.start()
        wrapped = AuditMiddleware(make(), writer=writer)
        await drive(wrapped, "POST", "/login", 500)  # warm up caches and the pool
        await writer.flush(60)
        best: dict[str, float] = {}
        for _ in range(rounds):
            for name, app, method, path in (
                ("bare_login", bare, "POST", "/login"),
                ("bare_items", bare, "GET", "/items"),
                ("wrapped_items", wrapped, "GET", "/items"),
            ):
                elapsed = await drive(app, method, path, n)
                best[name] = min(best.get(name, 1e9), elapsed / n * 1e6)
            start = time.perf_counter()
            await drive(wrapped, "POST", "/login", n)
            await writer.flush(120)  # draining the writer is part of the cost
            best["wrapped_login"] = min(best.get("wrapped_login", 1e9), (time.perf_counter() - start) / n * 1e6)
        stats = writer.stats()
        await writer.aclose()
        results[f"{label}: bare POST /login us/req"] = best["bare_login"]
        results[f"{label}: audited POST /login us/req (incl. drain)"] = best["wrapped_login"]
        results[f"{label}: added per audited request us"] = best["wrapped_login"] - best["bare_login"]
        results[f"{label}: added per unaudited request us"] = best["wrapped_items"] - best["bare_items"]
        results[f"{label}: events written"] = stats.written
    return results


# -- (b) over HTTP -----------------------------------------------------------------------------------


class NaiveAuditMiddleware:
    """The comparison point: awaits one INSERT per request before the response is finished."""

    def __init__(self, app: Any, dsn: str) -> None:
        self.app, self.dsn = app, dsn
        self.pool: asyncpg.Pool | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.pool is None:
            self.pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        status = [0]

        async def send_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self.app(scope, receive, send_status)
        metadata = json.dumps({"ip": scope["client"][0], "http": {"path": scope["path"], "status": status[0]}})
        await self.pool.execute(
            f"INSERT INTO {SCHEMA}.user_audit_logs (id, action, metadata, created_at) VALUES ($1, $2, $3, now())",
            uuid.uuid4(),
            "login",
            metadata,
        )


def serve(variant: str, port: int, dsn: str, count_file: str, kind: str) -> None:
    import uvicorn

    counter = [0]
    app: Any = fastapi_login_app(counter) if kind == "fastapi" else login_app(counter)
    if variant in CEILINGS:
        apply_ceiling(variant)
    if variant == "audited" or variant in CEILINGS:
        app = AuditMiddleware(app, dsn=dsn, writer_options={"schema": SCHEMA})
    elif variant == "naive":
        app = NaiveAuditMiddleware(app, dsn)
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    finally:
        Path(count_file).write_text(str(counter[0]))


WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = "{LOGIN_BODY.decode()}"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
"""


def _latency_ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port: int, duration: int, connections: int, script: str) -> tuple[int, float, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            script,
            f"http://127.0.0.1:{port}/login",
        ],
        capture_output=True,
        text=True,
        timeout=duration + 30,
    ).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # the latency distribution's own line: a "+/- Stdev" column such as "9.99%" also ends in "99%"
    p99 = _latency_ms(re.search(r"(?m)^\s*99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses")
    return total, rps, p99


async def _python_client(port: int, duration: float, connections: int) -> tuple[int, list[float]]:
    request = (
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {len(LOGIN_BODY)}\r\n\r\n".encode()
        + LOGIN_BODY
    )
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return len(latencies), latencies


def run_python_client(port: int, duration: int, connections: int) -> tuple[int, float, float]:
    code = (
        "import asyncio, json, sys; sys.path.insert(0, sys.argv[1]); import bench_asgi as b; "
        "n, lat = asyncio.run(b._python_client(int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]))); "
        "lat.sort(); print(json.dumps([n, lat[int(len(lat) * 0.99) - 1] * 1000 if lat else 0]))"
    )
    args = [sys.executable, "-c", code, str(Path(__file__).parent), str(port), str(duration), str(connections)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60).stdout
    total, p99 = json.loads(out)
    return total, total / duration, p99


async def count_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.user_audit_logs"))
    finally:
        await conn.close()


async def truncate(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {SCHEMA}.user_audit_logs")
    finally:
        await conn.close()


def wait_port(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server on port {port} did not start")


VARIANTS = ("bare", "audited", "naive")


def over_http(
    dsn: str, duration: int, connections: int, tmp: Path, kind: str, rounds: int, variants: tuple[str, ...] = VARIANTS
) -> list[dict[str, Any]]:
    """Every variant once per round, alternating (a noisy neighbour hurts all alike); one result per run."""
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT)
    use_wrk = shutil.which("wrk") is not None
    results = []
    for n, variant in ((n, v) for _ in range(rounds) for n, v in enumerate(variants)):
        asyncio.run(truncate(dsn))
        port, count_file = 18200 + n, tmp / f"{variant}.count"
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--app",
                kind,
                "--serve",
                variant,
                "--port",
                str(port),
                "--dsn",
                dsn,
                "--count-file",
                str(count_file),
            ],
            env=env,
        )
        try:
            wait_port(port)
            if use_wrk:
                sent, rps, p99 = run_wrk(port, duration, connections, str(script))
            else:
                sent, rps, p99 = run_python_client(port, duration, connections)
        finally:
            server.send_signal(signal.SIGINT)  # graceful: lifespan shutdown flushes the writer
            server.wait(timeout=60)
        handled = int(count_file.read_text())
        rows = asyncio.run(count_rows(dsn))
        results.append(
            {
                "variant": variant,
                "client": "wrk" if use_wrk else "python",
                "requests/s": round(rps),
                "p99 ms": round(p99, 2),
                "client completed": sent,
                "app handled": handled,
                "rows": rows,
            }
        )
        print(results[-1], flush=True)
    return results


def report_http(results: list[dict[str, Any]]) -> None:
    """Each run, then per variant the best and the median requests/s as a fraction of bare's."""
    for r in results:
        ok = r["rows"] == r["app handled"] if r["variant"] not in ("bare", "wrapper-only") else r["rows"] == 0
        print(
            f"  {r['variant']:<12} {r['requests/s']:>8} req/s  p99 {r['p99 ms']:>7} ms  "
            f"handled {r['app handled']:>7}  rows {r['rows']:>7}  {'every request accounted for' if ok else 'MISMATCH'}"
        )
    rates = {
        v: [r["requests/s"] for r in results if r["variant"] == v] for v in dict.fromkeys(r["variant"] for r in results)
    }
    best_bare, median_bare = max(rates["bare"]) or 1, statistics.median(rates["bare"]) or 1
    for variant, values in rates.items():
        p99 = statistics.median(r["p99 ms"] for r in results if r["variant"] == variant)
        print(
            f"  {variant:<12} best {max(values):>6} req/s ({max(values) / best_bare:.2f} of bare), "
            f"median {statistics.median(values):>8.0f} req/s ({statistics.median(values) / median_bare:.2f} of bare), "
            f"median p99 {p99:.2f} ms"
        )


# -- main ----------------------------------------------------------------------------------------


async def prepare(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA}")
        await init_db(conn, schema=SCHEMA)
    finally:
        await conn.close()


async def drop(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("AUDIT_DSN"))
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="HTTP runs per variant, alternating")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--app", choices=("raw", "fastapi"), default="raw", help="the login app: raw ASGI or FastAPI")
    parser.add_argument("--ceiling", action="store_true", help=CEILING_HELP)
    parser.add_argument("--serve", choices=(*VARIANTS, *CEILINGS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.dsn, args.count_file, args.app)
        return
    with tempfile.TemporaryDirectory() as tmp:
        dsn = args.dsn
        if not dsn:
            from audit_middleware._embedded import start_embedded

            Path(tmp).chmod(0o755)
            dsn, _server = start_embedded(Path(tmp) / "pg", delete_on_exit=True)
        asyncio.run(prepare(dsn))
        try:
            print(f"(a) in process, {args.app} app, best of 3 rounds, {args.requests} requests each", flush=True)
            for key, value in asyncio.run(in_process(dsn, args.requests, args.app)).items():
                print(f"  {key:<55} {value:10.2f}" if isinstance(value, float) else f"  {key:<55} {value:10d}")
            if not args.skip_http:
                print(
                    f"(b) over HTTP, {args.app} app, {args.duration}s per variant, {args.connections} connections, "
                    f"{args.rounds} rounds (variants alternate)"
                )
                variants = (*VARIANTS, *CEILINGS) if args.ceiling else VARIANTS
                report_http(over_http(dsn, args.duration, args.connections, Path(tmp), args.app, args.rounds, variants))
        finally:
            asyncio.run(drop(dsn))


if __name__ == "__main__":
    main()
