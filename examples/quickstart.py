"""Quick start: a FastAPI app audited with zero configuration, driven through a scripted auth flow.

    scripts/example                        # embedded PostgreSQL in .audit-data/pg
    AUDIT_DSN=postgresql://... scripts/example

The app (``fastapi_app.py`` beside this file) has real sign-up, login, logout and password-reset endpoints
and one audit line: ``app.add_middleware(AuditMiddleware, dsn=...)``. This script signs a user up, logs in,
fails a login, logs out and resets the password over the app's real ASGI interface, then prints the rows
those requests left in ``user_audit_logs``: who, what, from where, and no password or token anywhere.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # examples/: fastapi_app, _audit_rows

from _audit_rows import database, embedded_in, how_to_look, serve_viewer
from fastapi_app import DATA_DIR, SCRIPT, demo


def main() -> None:
    dsn = database(DATA_DIR)
    print("a FastAPI app, audited with zero configuration: sign-up, login, a wrong password, logout, reset\n")
    asyncio.run(demo(dsn))
    print("\n" + how_to_look(dsn, SCRIPT, embedded_in(DATA_DIR)))
    if sys.stdin.isatty():  # interactive: keep the database up and show the rows in the viewer
        serve_viewer(dsn)
    elif embedded_in(DATA_DIR) is None:  # $AUDIT_DSN names a server that stays up after this script
        print(f"browse them:   AUDIT_VIEWER_TOKEN=<16+ chars> audit-middleware serve --dsn '{dsn}'")
    else:  # the embedded server stops with this script
        print("browse them:   run scripts/example in a terminal: it keeps the database up and serves the viewer")


if __name__ == "__main__":
    main()
