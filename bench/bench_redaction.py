"""Redaction cost on the request path: microseconds per call of the Redactor methods the middleware uses.

Usage:
    python bench/bench_redaction.py [--seconds 0.3]

Each case runs for about ``--seconds`` (bounded in time and in count) and prints the best of three
rounds in µs per call. Numbers on a shared machine are noisy; compare runs on the same machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit_middleware.redaction.redactor import Redactor

MAX_CALLS = 1_000_000
LOGIN_JSON = json.dumps({"username": "alice@example.com", "password": "correct horse battery staple"}).encode()
SIGNUP_JSON = json.dumps(
    {
        "email": "alice@example.com",
        "password": "correct horse battery staple",
        "passwordConfirmation": "correct horse battery staple",
        "profile": {"first_name": "Alice", "last_name": "Liddell", "country_code": "GB", "newsletter": True},
        "tags": ["a", "b", "c"],
    }
).encode()
FORM = b"grant_type=password&username=alice%40example.com&password=hunter2&scope=openid+profile&client_id=web"
MULTIPART = (
    b'--b\r\nContent-Disposition: form-data; name="username"\r\n\r\nalice\r\n'
    b'--b\r\nContent-Disposition: form-data; name="avatar"; filename="me.png"\r\nContent-Type: image/png\r\n\r\n'
    + b"\x89PNG" * 256
    + b"\r\n--b--\r\n"
)
HEADERS = [
    (b"host", b"app.example.com"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
    (b"content-length", b"73"),
    (b"authorization", b"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
    (b"cookie", b"session=abc; theme=dark"),
    (b"x-request-id", b"7b0a9c1e-2f3d-4e5f-8a9b-0c1d2e3f4a5b"),
    (b"x-forwarded-for", b"203.0.113.7, 10.0.0.2"),
    (b"accept-encoding", b"gzip, deflate, br"),
]
# Fresh request ids defeat the header cache, as in real traffic.
FRESH_HEADERS = [
    [*HEADERS[:7], (b"x-request-id", f"7b0a9c1e-2f3d-4e5f-8a9b-{i:012x}".encode()), *HEADERS[8:]] for i in range(4096)
]
QUERY = b"next=%2Fdashboard&lang=en&token=abc123def456"


def measure(call: Callable[[], Any], seconds: float) -> float:
    """Best of three rounds, µs per call; each round bounded by ``seconds`` and by MAX_CALLS."""
    best = float("inf")
    for _ in range(3):
        calls = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while calls < MAX_CALLS:
            for _ in range(100):
                call()
            calls += 100
            if time.perf_counter() >= deadline:
                break
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="time per case (default 0.3)")
    args = parser.parse_args(argv)
    redactor = Redactor()
    counter = itertools.count()
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("body: login JSON (2 fields)", lambda: redactor.body("application/json", LOGIN_JSON, complete=True)),
        ("body: signup JSON (nested)", lambda: redactor.body("application/json", SIGNUP_JSON, complete=True)),
        ("body: OAuth token form", lambda: redactor.body("application/x-www-form-urlencoded", FORM, complete=True)),
        (
            "body: multipart field + 1 KiB file",
            lambda: redactor.body("multipart/form-data; boundary=b", MULTIPART, complete=True),
        ),
        ("body: opaque (octet-stream)", lambda: redactor.body("application/octet-stream", MULTIPART, complete=True)),
        ("headers: 10 request headers, repeated", lambda: redactor.headers(HEADERS)),
        ("headers: 10, fresh x-request-id", lambda: redactor.headers(FRESH_HEADERS[next(counter) & 4095])),
        ("query: 3 params", lambda: redactor.query(QUERY)),
        ("path: /auth/login", lambda: redactor.path("/auth/login")),
        ("path: /reset/{token} with template", lambda: redactor.path("/reset/Zx8kP2mQ9rT4vW7yB1nC", "/reset/{token}")),
        ("text: user agent", lambda: redactor.text("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101")),
        ("text: short alnum", lambda: redactor.text("alice")),
    ]
    print(f"{'case':<40} {'µs/call':>10}")
    for name, call in cases:
        print(f"{name:<40} {measure(call, args.seconds):>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
