"""The Flask login app of ``bench_wsgi.py``: bare (``BENCH_AUDIT=0``) or wrapped by AuditWSGIMiddleware.

Each worker counts the login requests it served and writes the count to ``$BENCH_COUNTS/<pid>`` at
exit, so the benchmark can check that every served request is a row.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import os
import sys
from pathlib import Path

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import apply_ceiling

from audit_middleware import AuditWSGIMiddleware

SALT = b"bench-salt"
USERS = {
    f"user{n}@example.com": (f"00000000-0000-4000-8000-{n:012d}", hashlib.sha256(SALT + b"pw%d" % n).hexdigest())
    for n in range(100)
}
served = {"login": 0}

app = Flask(__name__)


@app.post("/login")
def login() -> ResponseReturnValue:
    served["login"] += 1
    body = request.get_json(silent=True) or {}
    user = USERS.get(body.get("email", ""))
    digest = hashlib.sha256(SALT + str(body.get("password", "")).encode()).hexdigest()
    if user is None or not hmac.compare_digest(digest, user[1]):
        return jsonify(error="bad credentials"), 401
    return jsonify(user_id=user[0], token="t-" + user[0])


@app.get("/health")
def health() -> str:
    return "ok"


def _write_count() -> None:
    folder = os.environ.get("BENCH_COUNTS")
    if folder and served["login"]:
        Path(folder, str(os.getpid())).write_text(str(served["login"]))


atexit.register(_write_count)

if os.environ.get("BENCH_AUDIT") == "1":
    apply_ceiling(os.environ.get("BENCH_CEILING"))  # bench_wsgi.py --ceiling: part of auditing made free
    app.wsgi_app = AuditWSGIMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, dsn=os.environ["AUDIT_DSN"], writer_options={"schema": os.environ["BENCH_SCHEMA"]}
    )
