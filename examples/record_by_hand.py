"""Recording events by hand: create the audit table, record a few events with AuditWriter, and show the rows.

    scripts/example record_by_hand            # embedded PostgreSQL in .audit-data/pg
    AUDIT_DSN=postgresql://... scripts/example record_by_hand

The web-app examples (which audit requests without any code in the handlers) live beside this file.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import uuid
from pathlib import Path

import asyncpg

from audit_middleware import AuditWriter, init_db

DATA_DIR = Path(__file__).resolve().parent.parent / ".audit-data" / "pg"


def database() -> str:
    """The DSN to use: $AUDIT_DSN, or an embedded server keeping its data in .audit-data/pg."""
    dsn = os.environ.get("AUDIT_DSN")
    if dsn:
        return dsn
    from audit_middleware._embedded import start_embedded

    DATA_DIR.parent.mkdir(exist_ok=True)
    DATA_DIR.parent.chmod(0o755)  # the server runs as an unprivileged user when started by root
    dsn, _server = start_embedded(DATA_DIR)
    print(f"embedded PostgreSQL, data in {DATA_DIR}")
    return dsn


async def main() -> None:
    dsn = database()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS users (id uuid PRIMARY KEY, email text UNIQUE)")
        report = await init_db(conn)  # idempotent: safe on every start
        print(f"user_audit_logs ready; foreign key to users: {report.foreign_key}")
        alice = await conn.fetchval(
            "INSERT INTO users (id, email) VALUES ($1, 'alice@example.com') "
            "ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email RETURNING id",
            uuid.uuid4(),
        )
    finally:
        await conn.close()

    async with AuditWriter(dsn) as audit:  # the same writer the middleware uses
        await audit.record("login", user_id=alice, metadata={"ip": "192.168.0.101"})
        await audit.record("password_reset", user_id=alice, metadata={"ip": "192.168.0.101", "method": "email_link"})
        await audit.record("export_data", user_id=alice, metadata={"rows": 120, "format": "csv"})
    # leaving the block flushed every event to PostgreSQL

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id, user_id, action, metadata, created_at FROM user_audit_logs ORDER BY created_at DESC LIMIT 5"
        )
    finally:
        await conn.close()
    print("\nnewest rows in user_audit_logs:")
    for row in rows:
        metadata = json.loads(row["metadata"])
        print(f"  {row['created_at']:%Y-%m-%d %H:%M:%S}  {row['action']:<16} {row['user_id']}  {metadata}")
    psql = shutil.which("psql") or "psql"
    print(f"\nlook yourself:  {psql} '{dsn}' -c 'SELECT * FROM user_audit_logs ORDER BY created_at DESC LIMIT 10'")
    if "AUDIT_DSN" not in os.environ and sys.stdin.isatty():
        input("the embedded server stops when this script ends; press Enter to stop it... ")


if __name__ == "__main__":
    asyncio.run(main())
