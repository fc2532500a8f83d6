"""A real headless browser for the viewer tests: Debian's chromium driven by Selenium.

Missing chromium fails loudly (never a skip): CI installs it with ``scripts/browser-deps``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def _find(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    return None


def start_browser() -> webdriver.Chrome:
    """Headless chromium with console logs readable (``get_log("browser")``)."""
    binary, driver = _find(CHROMIUM), _find((DRIVER,))
    if binary is None or driver is None:
        pytest.fail(
            "the viewer's browser tests need Debian's chromium and chromium-driver: run scripts/browser-deps "
            f"(found chromium: {binary}, chromedriver: {driver})",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        "--disable-extensions",
        "--no-first-run",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(dsn: str, schema: str, token: str | None, *args: str) -> Iterator[str]:
    """Run ``audit-middleware serve`` (the real command, real uvicorn) and yield its base URL.

    ``token`` goes to ``$AUDIT_VIEWER_TOKEN`` (None: unset); ``args`` are more command-line arguments.
    After the block, ``serve.last_log`` holds what the server printed.
    """
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if k != "AUDIT_VIEWER_TOKEN"}
    if token is not None:
        environ["AUDIT_VIEWER_TOKEN"] = token
    command = [
        sys.executable,
        "-m",
        "audit_middleware.cli",
        "serve",
        "--dsn",
        dsn,
        "--schema",
        schema,
        "--port",
        str(port),
        *args,
    ]
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"viewer-serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=environ, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(base + "/static/viewer.css", timeout=1).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"serve did not start: {log.read_text()}", pytrace=False)
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(10)
        serve.last_log = log.read_text()  # type: ignore[attr-defined]
        log.unlink()


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Console messages of level SEVERE (errors, CSP violations) since the last call."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry for entry in entries if entry["level"] == "SEVERE"]
