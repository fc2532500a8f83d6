"""A real gunicorn (2 sync workers, forked after the app is built) in front of an audited Flask app."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import pytest

from tests.conftest import PgTarget

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 60
UID = "0d5f6f36-1f7b-4c9e-8d2a-6f0e3b7b9c11"  # the app's one user


async def add_user(pg: PgTarget) -> None:
    conn = await pg.connect()
    try:
        await conn.execute(f'INSERT INTO "{pg.schema}".users (id, email) VALUES ($1, $2)', UID, "ann@example.com")
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_workers_serve(url: str, process: subprocess.Popen[bytes], workers: int, deadline: float = 30.0) -> None:
    """Wait until ``workers`` distinct worker pids have answered (a slow-booting worker would skew the test)."""
    seen: set[str] = set()
    end = time.monotonic() + deadline

    def probe(_: int) -> str | None:
        try:
            response = httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            return None
        return response.text if response.status_code == 200 else None

    with ThreadPoolExecutor(max_workers=4) as pool:
        while time.monotonic() < end:
            if process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early with {process.returncode}")
            seen.update(pid for pid in pool.map(probe, range(8)) if pid)
            if len(seen) >= workers:
                return
            time.sleep(0.1)
    raise RuntimeError(f"only {len(seen)} of {workers} gunicorn workers answered")


@pytest.mark.parametrize("threads", [1, 4], ids=["sync", "gthread"])
def test_every_request_under_gunicorn_workers_is_a_row_after_sigterm(pg: PgTarget, threads: int) -> None:
    anyio.run(add_user, pg)
    port = free_port()
    dsn = pg.dsn.replace("@127.0.0.1:", "@localhost:")  # by name: the workers' pools first connect at exit
    env = {**os.environ, "AUDIT_DSN": dsn, "AUDIT_SCHEMA": pg.schema, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    command += ["--threads", str(threads), "--graceful-timeout", "20", "--log-level", "warning"]
    command.append("tests.gunicorn_app:app")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_workers_serve(base + "/health", process, workers=2)

        def login(n: int) -> int:
            password = "correct horse" if n % 3 else "wrong"
            body = {"email": "ann@example.com", "password": password}
            with httpx.Client(base_url=base, timeout=10.0) as client:
                return client.post("/login", json=body).status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(pool.map(login, range(REQUESTS)))
        assert sorted(set(statuses)) == [200, 401]
        exported = httpx.get(base + "/export", timeout=10.0)  # wsgi.file_wrapper: gunicorn's sendfile path
        assert exported.content == (ROOT / "tests" / "gunicorn_app.py").read_bytes()
        streamed = httpx.get(base + "/stream", timeout=10.0)  # a generator, sent chunked
        assert streamed.text == "".join(f"line {n}\n" for n in range(100))
        assert anyio.run(pg.rows) == []  # the writers only flush at exit (see gunicorn_app)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=40)
    finally:
        if process.poll() is None:  # pragma: no cover - only when the test already failed
            process.kill()
            process.wait()
    assert process.returncode == 0, output.decode(errors="replace")
    rows = anyio.run(pg.rows)
    assert len(rows) == REQUESTS + 2
    actions = sorted(r["action"] for r in rows)
    assert actions.count("export_data") == actions.count("stream_read") == 1
    by_action = {r["action"]: json.loads(r["metadata"]) for r in rows}
    assert by_action["export_data"]["http"]["status"] == by_action["stream_read"]["http"]["status"] == 200
    assert "outcome" not in by_action["stream_read"]["http"]  # streamed to the end, not a disconnect
    assert actions.count("login_failed") == statuses.count(401)
    assert actions.count("login") == statuses.count(200)
    pids = {json.loads(r["metadata"])["pid"] for r in rows}
    assert len(pids) >= 2, f"all rows came from one worker: {pids}"
    assert process.pid not in pids  # the master never served (nor wrote) anything
    assert {str(r["user_id"]) for r in rows if r["action"] == "login"} == {UID}  # from the app's response
