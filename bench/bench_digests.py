"""Tamper evidence cost: writer throughput with digests off vs on (same run), and verify throughput.

Usage:
    python bench/bench_digests.py [--dsn DSN] [--events 100000] [--batch-size 2000] [--rounds 2]

Without --dsn (or AUDIT_DSN) it starts an embedded PostgreSQL in a temporary directory. Everything
runs in a schema of its own that is dropped at the end. Off and on alternate (``--rounds`` times
each, best kept, medians too) so a noisy neighbour hurts both alike. Reports:
  * events/s persisted by AuditWriter (first record_nowait to aclose() returning), digests off / on,
    and their ratio (target >= 0.8);
  * verify: rows/s over the table the digest run wrote (every row hash, HMAC and link recomputed);
  * database capacity without the writer's Python work: raw COPY of pre-built rows vs the digest
    transaction (DigestWriter) on one connection and on two at once (what the sink does with a
    batch of >= 400 rows and a pool of >= 2 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import database, metadata, timed_writer

from audit_middleware import init_db
from audit_middleware.store.digests import DigestWriter
from audit_middleware.store.schema.tamper import apply_digests
from audit_middleware.store.verify import verify
from audit_middleware.writer.records import COLUMNS, AuditEvent, to_row

SCHEMA = "bench_digests"
KEY = "bench-digest-key-0123456789abcdef"


async def reset(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        await init_db(conn, schema=SCHEMA, users_table=None)
        await apply_digests(conn, schema=SCHEMA)
    finally:
        await conn.close()


async def bench_writer(dsn: str, n: int, batch_size: int, *, digests: bool) -> float:
    await reset(dsn)
    _, persisted = await timed_writer(dsn, n, batch_size, schema=SCHEMA, digest_key=KEY if digests else None)
    return persisted


async def bench_verify(dsn: str) -> tuple[float, int]:
    conn = await asyncpg.connect(dsn)
    try:
        start = time.perf_counter()
        report = await verify(conn, key=KEY, schema=SCHEMA)
        elapsed = time.perf_counter() - start
    finally:
        await conn.close()
    assert report.ok, report.findings[:5]
    return report.rows / elapsed, report.rows


async def bench_database(dsn: str, n: int, batch_size: int) -> dict[str, float]:
    users = [uuid.uuid4() for _ in range(1000)]
    rows = [to_row(AuditEvent("login", users[i % 1000], metadata(i))) for i in range(n)]
    batches = [rows[i : i + batch_size] for i in range(0, n, batch_size)]
    digests = DigestWriter(schema=SCHEMA, table="user_audit_logs", key=KEY)
    rates: dict[str, float] = {}
    for label, connections in (("raw COPY", 1), ("digest, 1 connection", 1), ("digest, 2 connections", 2)):
        await reset(dsn)
        conns = [await asyncpg.connect(dsn) for _ in range(connections)]
        try:

            async def work(conn: asyncpg.Connection, mine: list[list[Any]], label: str = label) -> None:
                for batch in mine:
                    if label == "raw COPY":
                        await conn.copy_records_to_table(
                            "user_audit_logs", records=batch, columns=COLUMNS, schema_name=SCHEMA
                        )
                    else:
                        await digests.write(conn, batch, retry=False, timeout=60)

            start = time.perf_counter()
            await asyncio.gather(*(work(c, batches[i::connections]) for i, c in enumerate(conns)))
            rates[label] = n / (time.perf_counter() - start)
        finally:
            for conn in conns:
                await conn.close()
    return rates


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("AUDIT_DSN"))
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    dsn = database(args.dsn)
    n = args.events
    off: list[float] = []
    on: list[float] = []
    for _ in range(max(1, args.rounds)):
        off.append(await bench_writer(dsn, n, args.batch_size, digests=False))
        on.append(await bench_writer(dsn, n, args.batch_size, digests=True))
    verify_rate, rows = await bench_verify(dsn)  # over the table the last digest run wrote
    alone = await bench_database(dsn, n, args.batch_size)
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    finally:
        await conn.close()
    print(f"PostgreSQL {version}, {n:,} events, batch {args.batch_size}, {os.cpu_count()} cores, best of {len(on)}")
    print(f"  writer, digests off:  {max(off):10,.0f} events/s   (runs: {', '.join(f'{r:,.0f}' for r in off)})")
    print(f"  writer, digests on:   {max(on):10,.0f} events/s   (runs: {', '.join(f'{r:,.0f}' for r in on)})")
    print(f"  on / off:             {max(on) / max(off):10.2f}            (target >= 0.80; best of each)")
    print(f"  on / off, medians:    {statistics.median(on) / statistics.median(off):10.2f}")
    print(f"  verify:               {verify_rate:10,.0f} rows/s     ({rows:,} rows)")
    print("  database alone (pre-built rows, no writer):")
    for label, rate in alone.items():
        print(f"    {label + ':':22}{rate:10,.0f} rows/s   ({rate / alone['raw COPY']:.2f} of raw COPY)")


if __name__ == "__main__":
    asyncio.run(main())
