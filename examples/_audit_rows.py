"""What the example apps share: their audit database and how to look at the rows they wrote.

The database is ``$AUDIT_DSN`` when set, else an embedded PostgreSQL (it runs while the example does).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import asyncpg

NEWEST = "SELECT created_at, action, user_id, metadata FROM user_audit_logs ORDER BY created_at DESC LIMIT"


def database(data_dir: Path) -> str:
    """``$AUDIT_DSN``, else the DSN of an embedded PostgreSQL keeping its data in ``data_dir``."""
    dsn = os.environ.get("AUDIT_DSN")
    if dsn:
        return dsn
    from audit_middleware._embedded import start_embedded

    dsn, _server = start_embedded(data_dir)
    return dsn


def embedded_in(data_dir: Path) -> Path | None:
    """``data_dir`` when the example will start the embedded server, None when ``$AUDIT_DSN`` names one."""
    return None if "AUDIT_DSN" in os.environ else data_dir


def how_to_look(dsn: str, script: str, data_dir: Path | None) -> str:
    """Where the rows go and the commands that show them; ``data_dir``: the embedded server's, or None."""
    psql = f"psql '{dsn}' -c '{NEWEST} 20'"
    if data_dir is None:
        return f"audit rows go to: $AUDIT_DSN\nlook at them with:  {psql}\n                or:  python {script} --show"
    return (
        f"audit rows go to: an embedded PostgreSQL, data in {data_dir.resolve()}\n"
        f"while the app runs:  {psql}\n"
        f"any time:            python {script} --show   (starts the embedded server if needed)"
    )


def serve_viewer(dsn: str, port: int = 8765) -> None:
    """Browse the rows in the viewer on 127.0.0.1 behind a fresh token, until Ctrl-C (docs/viewer.md)."""
    import secrets

    import uvicorn

    from audit_middleware.viewer import TokenAuth, create_app

    token = secrets.token_urlsafe(24)  # a new one each run: the viewer has no open mode
    print(f"\nbrowse them:  http://127.0.0.1:{port}/  and sign in with the token  {token}\n(Ctrl-C stops)")
    uvicorn.run(create_app(dsn=dsn, authorize=TokenAuth(token)), host="127.0.0.1", port=port, log_level="warning")


async def show(dsn: str, limit: int = 20) -> None:
    """Print the newest ``limit`` rows, oldest first (the user's ``user_ref`` where its id is not a uuid)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(f"{NEWEST} $1", limit)
    finally:
        await conn.close()
    for row in reversed(rows):
        metadata = json.loads(row["metadata"])
        print(f"{row['created_at']:%H:%M:%S} {row['action']:<26} user={row['user_id'] or metadata.get('user_ref')}")
        print("    " + json.dumps(metadata, sort_keys=True))
