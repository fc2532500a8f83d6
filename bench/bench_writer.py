"""Writer throughput: events/s persisted by AuditWriter next to raw asyncpg COPY of the same rows.

Usage:
    python bench/bench_writer.py [--dsn DSN] [--events 200000] [--uuid-compare 1000000]

Without --dsn (or AUDIT_DSN) it starts an embedded PostgreSQL in a temporary directory. Everything
runs in a schema of its own that is dropped at the end. Reports:
  * enqueue cost per event (record_nowait on the request path),
  * events/s persisted: first record_nowait to aclose() returning,
  * raw COPY rate of the same rows (pre-built tuples, one COPY per batch of the same size),
  * with --uuid-compare N: inserting N rows with UUIDv4 vs UUIDv7 primary keys into a table that
    already holds N rows (time, primary-key index size, index leaf density).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import uuid_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import database, metadata, timed_writer

from audit_middleware import init_db
from audit_middleware.writer.records import COLUMNS, AuditEvent, to_row

SCHEMA = "bench_writer"


async def reset(conn: asyncpg.Connection) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await init_db(conn, schema=SCHEMA, users_table=None)


async def bench_raw_copy(dsn: str, n: int, batch_size: int) -> float:
    users = [uuid.uuid4() for _ in range(1000)]
    rows = [to_row(AuditEvent("login", users[i % 1000], metadata(i))) for i in range(n)]
    conn = await asyncpg.connect(dsn)
    try:
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            await conn.copy_records_to_table(
                "user_audit_logs", records=rows[i : i + batch_size], columns=COLUMNS, schema_name=SCHEMA
            )
        return n / (time.perf_counter() - start)
    finally:
        await conn.close()


async def count(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.user_audit_logs"))
    finally:
        await conn.close()


async def uuid_compare(dsn: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for label, make in (("uuid4", uuid.uuid4), ("uuid7", uuid_utils.uuid7)):
            await conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.k; CREATE TABLE {SCHEMA}.k (id uuid PRIMARY KEY)")
            elapsed = 0.0
            for measured in (False, True):  # prefill N rows, then time N more
                start = time.perf_counter()
                for _ in range(0, n, 10_000):
                    records = [(make(),) for _ in range(10_000)]
                    await conn.copy_records_to_table("k", records=records, schema_name=SCHEMA)
                elapsed = time.perf_counter() - start if measured else elapsed
            size = await conn.fetchval(f"SELECT pg_relation_size('{SCHEMA}.k_pkey')")
            print(
                f"  {label}: {n:,} rows into a table of {n:,}: {n / elapsed:,.0f} rows/s, "
                f"pkey index {size / 2**20:.1f} MiB after {2 * n:,} rows"
            )
        await conn.execute(f"DROP TABLE IF EXISTS {SCHEMA}.k")
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("AUDIT_DSN"))
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--uuid-compare", type=int, default=0, metavar="N")
    args = parser.parse_args()
    dsn = database(args.dsn)
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        await reset(conn)
        n = args.events
        raw = await bench_raw_copy(dsn, n, args.batch_size)
        await reset(conn)
        enqueue_us, persisted = await timed_writer(dsn, n, args.batch_size, schema=SCHEMA)
        rows = await count(dsn)
        print(f"PostgreSQL {version}, {n:,} events, batch {args.batch_size}, {os.cpu_count()} cores")
        print(f"  enqueue (record_nowait):   {enqueue_us:8.2f} us/event   (target <= 5)")
        print(f"  writer, persisted:         {persisted:10,.0f} events/s (target >= 50,000)")
        print(f"  raw asyncpg COPY:          {raw:10,.0f} rows/s")
        print(f"  writer / raw COPY:         {persisted / raw:8.2f}          (target >= 0.60)")
        print(f"  rows in table:             {rows:10,}        (expected {n:,})")
        if args.uuid_compare:
            await uuid_compare(dsn, args.uuid_compare)
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
