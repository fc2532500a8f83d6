"""WSGI throughput: a Flask login app bare and wrapped by AuditWSGIMiddleware, under gunicorn, in one run.

Usage:
    python bench/bench_wsgi.py [--dsn DSN] [--workers 2] [--duration 5] [--connections 8] [--rounds 2]
                               [--in-process 5000] [--ceiling]

Without --dsn (or AUDIT_DSN) it starts an embedded PostgreSQL in a temporary directory; rows go to
a schema of its own, dropped at the end. Bare and audited runs alternate (same gunicorn worker count
and load); the load generator is wrk (Debian's ``wrk`` package) when installed, else a bounded Python
client in another process. Every audited gunicorn is stopped with SIGTERM (the workers flush at
exit) and the table must hold exactly one row per login request the app served. Reports requests/s
and p99 per run, the best and median of each mode, and the audited/bare ratio (target >= 0.90).
With ``--ceiling`` two diagnostic modes join the rounds: ``wrapper-only`` (the middleware wraps every
request but builds no event) and ``free-event`` (building the redacted event costs nothing; buffer and
writer thread stay real): what the audited ratio could reach if event building were free.

First, in process (no HTTP, no gunicorn): the app's WSGI callable called directly, bare and
audited, in µs per login request; the audited time includes flushing every event to the table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import timeit
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import CEILING_HELP, CEILINGS

from audit_middleware import init_db

BENCH_DIR = Path(__file__).resolve().parent
SCHEMA = "bench_wsgi"
BODY = json.dumps({"email": "user1@example.com", "password": "pw1"})
WRK_SCRIPT = f"""
wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, process: subprocess.Popen[bytes], deadline: float = 30.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gunicorn did not come up")


def run_wrk(url: str, duration: float, connections: int) -> tuple[float, float, int]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT)
    try:
        threads = min(2, connections)
        command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s", "--latency"]
        out = subprocess.run(
            [*command, "-s", script.name, url], capture_output=True, text=True, timeout=duration + 30, check=True
        ).stdout
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_value, p99_unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(p99_value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99_unit]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, p99, done


def python_client(url: str, duration: float, connections: int) -> None:
    """The fallback load generator (runs in its own process): prints {"done", "latencies_ms"} as JSON."""
    import http.client
    from urllib.parse import urlsplit

    target = urlsplit(url)
    deadline = time.monotonic() + duration
    latencies: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        mine: list[float] = []
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=10)
            started = time.perf_counter()
            conn.request("POST", target.path, BODY, {"Content-Type": "application/json"})
            conn.getresponse().read()
            mine.append((time.perf_counter() - started) * 1000)
            conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"done": len(latencies), "latencies_ms": sorted(latencies)}))


def run_python(url: str, duration: float, connections: int) -> tuple[float, float, int]:
    command = [sys.executable, __file__, "--client", url, "--duration", str(duration)]
    command += ["--connections", str(connections)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    result = json.loads(out)
    latencies = result["latencies_ms"]
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else 0.0
    return result["done"] / duration, p99, result["done"]


def one_run(mode: str, dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    """One gunicorn run: ``mode`` is bare, audited, or a ceiling (audited with part of auditing free)."""
    port = free_port()
    counts = Path(tempfile.mkdtemp(prefix="bench-wsgi-counts-"))
    env = {**os.environ, "BENCH_AUDIT": "0" if mode == "bare" else "1", "AUDIT_DSN": dsn, "BENCH_SCHEMA": SCHEMA}
    env["BENCH_COUNTS"] = str(counts)
    env["BENCH_CEILING"] = mode if mode in CEILINGS else ""
    command = [sys.executable, "-m", "gunicorn", "--workers", str(args.workers), "--bind", f"127.0.0.1:{port}"]
    command += ["--chdir", str(BENCH_DIR), "--log-level", "warning", "--graceful-timeout", "30", "flask_login_app:app"]
    process = subprocess.Popen(command, env=env)
    try:
        wait_up(f"http://127.0.0.1:{port}/health", process)
        url = f"http://127.0.0.1:{port}/login"
        load = run_wrk if shutil.which("wrk") and not args.python_client else run_python
        rps, p99, done = load(url, args.duration, args.connections)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    served = sum(int(p.read_text()) for p in counts.iterdir())
    shutil.rmtree(counts)
    return {"mode": mode, "rps": rps, "p99_ms": p99, "done": done, "served": served}


def environ_for_login(body: bytes) -> dict[str, Any]:
    import io

    return {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/login",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def in_process(dsn: str, n: int) -> int:
    """µs per request of the login app called directly, bare and audited (flush included). Returns rows made."""
    os.environ["BENCH_AUDIT"] = "0"
    sys.path.insert(0, str(BENCH_DIR))
    from flask_login_app import app

    from audit_middleware import AuditWSGIMiddleware

    bare = app.wsgi_app
    audited = AuditWSGIMiddleware(bare, dsn=dsn, writer_options={"schema": SCHEMA, "max_buffer": 2 * n + 10})
    body = BODY.encode()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return None

    def drive(wsgi: Any) -> None:
        for _ in range(n):
            result = wsgi(environ_for_login(body), start_response)
            for _chunk in result:
                pass
            result.close()

    drive(audited)  # warm up: writer thread and pool started, caches filled
    audited.flush(60)
    timings: dict[str, list[float]] = {"bare": [], "audited": []}
    for _ in range(2):
        started = time.perf_counter()
        drive(bare)
        timings["bare"].append((time.perf_counter() - started) / n * 1e6)
        started = time.perf_counter()
        drive(audited)
        audited.flush(60)
        timings["audited"].append((time.perf_counter() - started) / n * 1e6)
    unaudited = []
    for app_under_test in (bare, audited):  # the same middleware on a route it does not audit

        def health(wsgi: Any = app_under_test) -> None:
            environ = environ_for_login(b"")
            environ["REQUEST_METHOD"], environ["PATH_INFO"] = "GET", "/health"
            result = wsgi(environ, start_response)
            for _chunk in result:
                pass
            getattr(result, "close", lambda: None)()

        unaudited.append(min(timeit.repeat(health, number=n, repeat=3)) / n * 1e6)
    audited.close(30)
    print(f"in process, unaudited GET /health: +{unaudited[1] - unaudited[0]:.2f} µs per request")
    best_bare, best_audited = min(timings["bare"]), min(timings["audited"])
    print(
        f"in process, {n} login requests: bare {best_bare:.1f} µs, audited {best_audited:.1f} µs "
        f"(flush included): +{best_audited - best_bare:.1f} µs per audited request"
    )
    return 3 * n


async def prepare(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await init_db(conn, schema=SCHEMA, users_table=None)
    finally:
        await conn.close()


async def count_rows(dsn: str, drop: bool) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        rows = int(await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.user_audit_logs"))
        if drop:
            await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        return rows
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("AUDIT_DSN"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (bounded: at most 60)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="bare/audited pairs (at most 5)")
    parser.add_argument("--in-process", type=int, default=5000, help="requests per in-process run (0: skip)")
    parser.add_argument("--python-client", action="store_true", help="use the Python load client even if wrk exists")
    parser.add_argument("--ceiling", action="store_true", help=CEILING_HELP)
    parser.add_argument("--client", help=argparse.SUPPRESS)  # internal: run the Python load client
    args = parser.parse_args()
    args.duration = min(max(args.duration, 1.0), 60.0)
    args.rounds = min(max(args.rounds, 1), 5)
    if args.client:
        python_client(args.client, args.duration, args.connections)
        return 0
    server = None
    dsn = args.dsn
    if not dsn:
        from audit_middleware._embedded import start_embedded

        base = Path(tempfile.mkdtemp(prefix="bench-wsgi-pg-"))
        base.chmod(0o755)
        dsn, server = start_embedded(base / "data", delete_on_exit=True)
    try:
        asyncio.run(prepare(dsn))
        if args.in_process > 0:
            made = in_process(dsn, min(args.in_process, 50_000))
            rows = asyncio.run(count_rows(dsn, drop=False))
            print(f"  rows written in process: {rows} of {made}: {'OK' if rows == made else 'MISMATCH'}")
            asyncio.run(prepare(dsn))
        load = "wrk" if shutil.which("wrk") and not args.python_client else "python client"
        print(f"gunicorn --workers {args.workers} (sync), {load}, {args.connections} connections, {args.duration:g}s")
        results = []
        modes = ("bare", "audited", *CEILINGS) if args.ceiling else ("bare", "audited")
        for _ in range(args.rounds):
            for mode in modes:
                result = one_run(mode, dsn, args)
                results.append(result)
                print(
                    f"  {result['mode']:<12} {result['rps']:9.1f} req/s  p99 {result['p99_ms']:7.2f} ms  "
                    f"completed {result['done']:6d}  served {result['served']:6d}"
                )
        rows = asyncio.run(count_rows(dsn, drop=True))
    finally:
        if server is not None:
            server.cleanup()
    best = {mode: max(r["rps"] for r in results if r["mode"] == mode) for mode in ("bare", "audited")}
    median = {mode: statistics.median(r["rps"] for r in results if r["mode"] == mode) for mode in ("bare", "audited")}
    served = sum(r["served"] for r in results if r["mode"] in ("audited", "free-event"))  # wrapper-only: no rows
    ratio = best["audited"] / best["bare"]
    print(f"best bare {best['bare']:.1f} req/s, best audited {best['audited']:.1f} req/s: ratio {ratio:.3f} (>= 0.90)")
    print(
        f"median bare {median['bare']:.1f}, median audited {median['audited']:.1f}: ratio "
        f"{median['audited'] / median['bare']:.3f} (a loaded machine moves single runs by far more than 10%)"
    )
    for mode in CEILINGS if args.ceiling else ():
        rates = [r["rps"] for r in results if r["mode"] == mode]
        print(
            f"ceiling {mode}: best {max(rates):.1f} req/s ({max(rates) / best['bare']:.3f} of bare), "
            f"median {statistics.median(rates):.1f} ({statistics.median(rates) / median['bare']:.3f} of bare)"
        )
    print(f"audited login requests served {served}, rows in the table {rows}: {'OK' if rows == served else 'MISMATCH'}")
    return 0 if rows == served and ratio >= 0.90 else 1


if __name__ == "__main__":
    sys.exit(main())
