"""The app's lifespan failure reaches the server exactly as it would without the middleware."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from tests.faults import free_port
from tests.writer.lifespan_apps import broken_app, wrapped_broken_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("make", [broken_app, wrapped_broken_app], ids=["bare", "wrapped"])
def test_an_exception_during_lifespan_startup_reaches_the_test_client(make: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette deprecates its TestClient on httpx (the issue's own reproduction)
        from starlette.testclient import TestClient
    with pytest.raises(RuntimeError, match="broken middleware"), TestClient(make()):  # type: ignore[operator]
        pass


def _serve(app: str, port: int) -> tuple[int | None, str]:
    """Run uvicorn --lifespan on; (exit code, stderr) once it exits, or (None, stderr) once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", f"tests.writer.lifespan_apps:{app}", "--lifespan", "on",
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(600):  # bounded: 60 s for a 2-core machine shared by many processes
            if proc.poll() is not None:
                return proc.returncode, proc.communicate()[1].decode()
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:  # it started: the failure was swallowed
                    return None, ""
            time.sleep(0.1)
        raise AssertionError("uvicorn neither started nor exited")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("app", ["bare", "wrapped"])
def test_uvicorn_lifespan_on_refuses_to_start_a_broken_app_wrapped_or_not(app: str) -> None:
    code, stderr = _serve(app, free_port())
    assert code is not None and code != 0, "the broken app started"
    assert "Application startup failed" in stderr and "RuntimeError: broken middleware" in stderr
