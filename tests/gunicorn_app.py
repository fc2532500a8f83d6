"""A Flask login app for the gunicorn tests: audited into ``$AUDIT_DSN`` / ``$AUDIT_SCHEMA``.

The writer only flushes at exit (long interval, big batches), so rows appear only through the
SIGTERM -> worker exit -> atexit path the test is about. Each row records the worker's pid.
"""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response, request, send_file

from audit_middleware import AuditWSGIMiddleware, install_flask

USERS = {"ann@example.com": ("0d5f6f36-1f7b-4c9e-8d2a-6f0e3b7b9c11", "correct horse")}

app = Flask(__name__)


@app.post("/login")
def login() -> tuple[dict[str, str], int]:
    form = request.get_json(silent=True) or request.form
    user = USERS.get(form.get("email", ""))
    time.sleep(0.005)  # a little work, so that concurrent requests spread over the workers
    if user is None or form.get("password") != user[1]:
        return {"error": "bad credentials"}, 401
    return {"user_id": user[0]}, 200


@app.get("/health")
def health() -> str:
    time.sleep(0.005)  # keeps this worker busy so that concurrent probes reach the others
    return str(os.getpid())


@app.get("/export")
def export() -> Response:
    """A file response: gunicorn sends it with sendfile() through wsgi.file_wrapper."""
    return send_file(__file__, mimetype="text/plain")


@app.get("/stream")
def stream() -> Response:
    """A generator response, streamed chunk by chunk."""
    return app.response_class((f"line {n}\n" for n in range(100)), mimetype="text/plain")


def with_pid(metadata: dict[str, Any]) -> dict[str, Any]:
    metadata["pid"] = os.getpid()
    return metadata


app.wsgi_app = AuditWSGIMiddleware(  # type: ignore[method-assign]
    app.wsgi_app,
    dsn=os.environ["AUDIT_DSN"],
    routes={"GET /export": "export_data", "GET /stream": "stream_read"},
    writer_options={"schema": os.environ["AUDIT_SCHEMA"], "flush_interval": 600.0, "batch_size": 10_000},
    processors=[with_pid],
)
install_flask(app)
