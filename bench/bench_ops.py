"""Operator tools at scale: query, stats, export (constant memory), BRIN vs BTREE, prune.

Usage:
    python bench/bench_ops.py [--dsn DSN] [--rows 5000000] [--months 6] [--export-rows 1000000] [--keep]

Loads ``--rows`` rows spread over ``--months`` months into a schema of its own (``bench_ops``), with
a realistic mix: 5,000 users with skewed activity, logins, failed logins (some from a few attacking
IPs spraying identifiers), logouts, password resets, API calls; metadata with ip, user agent, http
details. Rows are generated server-side (``INSERT ... SELECT generate_series``) in time order with
time-prefixed ids, then ``init-db`` builds the indexes. Then it measures and prints:

* ``query`` for one user over a month (a median user and the busiest user), target < 1 s;
* ``stats`` for a day (by action, by hour, failed logins by ip and identifier), target < 1 s;
* the ip filter without an index on ``metadata->>'ip'`` (over a day and a month);
* ``export`` of 100k and of ``--export-rows`` rows by the real CLI in a subprocess, with its peak RSS
  sampled from /proc: constant memory means both peaks are about the same;
* the first keyset page of a month with the BTREE on (created_at, id) vs a BRIN on created_at;
* ``prune`` of the oldest rows in batches (rows/s).

The schema is dropped at the end unless ``--keep``; ``--reuse`` skips loading if it is already there.
Without --dsn (or AUDIT_DSN) an embedded PostgreSQL is started in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import database

from audit_middleware import init_db
from audit_middleware.store.query import EventFilter, iter_events
from audit_middleware.store.retention import prune
from audit_middleware.store.stats import collect_stats

SCHEMA = "bench_ops"
TABLE = f"{SCHEMA}.user_audit_logs"
START = dt.datetime(2026, 1, 1)
USERS = 5000
CHUNK = 250_000

# Server-side generator of rows $1..$2 out of $3, spread over [$4, $4 + $5 seconds), in time order.
# ids: 48-bit millisecond prefix + random, like UUIDv7 (append-mostly primary key).
GENERATE = f"""
INSERT INTO {TABLE} (id, user_id, action, metadata, created_at)
SELECT (lpad(to_hex((extract(epoch FROM ts) * 1000)::bigint), 12, '0') || substr(md5(i::text), 1, 20))::uuid,
       CASE WHEN action = 'login_failed' THEN NULL ELSE u END,
       action,
       jsonb_build_object(
           'ip', CASE WHEN action = 'login_failed' AND r2 < 0.6 THEN '203.0.113.' || (i % 7)
                      ELSE '10.' || (uid % 200) || '.' || (uid % 97) || '.' || (i % 5) END,
           'user_agent', 'Mozilla/5.0 (X11; Linux x86_64) Firefox/' || (100 + uid % 30),
           'request_id', md5(i::text),
           'http', jsonb_build_object('method', CASE WHEN action LIKE 'api.%' THEN 'GET' ELSE 'POST' END,
                                      'path', '/' || replace(action, '.', '/'),
                                      'status', CASE WHEN action = 'login_failed' THEN 401 ELSE 200 END,
                                      'duration_ms', round((r2 * 80)::numeric, 1)))
       || CASE WHEN action = 'login_failed'
               THEN jsonb_build_object('identifier', 'user' || (CASE WHEN r2 < 0.6 THEN i % 3000 ELSE uid END)
                                                     || '@example.com')
               ELSE '{{}}'::jsonb END,
       ts
FROM (
    SELECT i, ts, uid, md5('user' || uid)::uuid AS u, r2,
           CASE WHEN r < 0.30 THEN 'login' WHEN r < 0.36 THEN 'login_failed' WHEN r < 0.50 THEN 'logout'
                WHEN r < 0.52 THEN 'password_reset' WHEN r < 0.56 THEN 'update_profile'
                WHEN r < 0.57 THEN 'export_data' WHEN r < 0.80 THEN 'api.read' ELSE 'api.write' END AS action
    FROM (
        SELECT i, $4::timestamp + make_interval(secs => (i::float8 / $3) * $5) AS ts,
               floor(power(random(), 3) * {USERS})::int AS uid, random() AS r, random() AS r2
        FROM generate_series($1::bigint, $2::bigint) AS i
    ) AS base
) AS g
"""


async def load(conn: asyncpg.Connection, rows: int, months: int) -> float:
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await init_db(conn, schema=SCHEMA, users_table=None)
    indexes = await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE 'idx_%'", SCHEMA
    )
    for (name,) in indexes:  # built after the load by init-db (one sort each, much faster than row by row)
        await conn.execute(f"DROP INDEX {SCHEMA}.{name}")
    span = (START.replace(month=1 + months) if months < 12 else START.replace(year=START.year + 1)) - START
    started = time.perf_counter()
    for first in range(0, rows, CHUNK):
        last = min(first + CHUNK, rows) - 1
        await conn.execute(GENERATE, first, last, rows, START, span.total_seconds(), timeout=900)
        print(f"\r  loaded {last + 1:,} rows", end="", flush=True)
    print()
    await init_db(conn, schema=SCHEMA, users_table=None)
    await conn.execute(f"VACUUM ANALYZE {TABLE}", timeout=900)
    return time.perf_counter() - started


async def timed(coro: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await coro
    return time.perf_counter() - started, result


async def run_query(conn: asyncpg.Connection, filters: EventFilter) -> int:
    return len([r async for r in iter_events(conn, filters, schema=SCHEMA, page_size=5000)])


async def best_of(n: int, make: Any) -> tuple[float, float, Any]:
    """(first run, best of n) seconds and the result."""
    times = []
    result = None
    for _ in range(n):
        elapsed, result = await timed(make())
        times.append(elapsed)
    return times[0], min(times), result


def export_rss(dsn: str, since: dt.datetime, until: dt.datetime) -> tuple[float, int, float]:
    """Run the real CLI export into /dev/null; return (seconds, peak RSS bytes, median RSS bytes)."""
    command = [
        sys.executable, "-m", "audit_middleware.cli", "export", "--dsn", dsn, "--schema", SCHEMA,
        "--since", since.isoformat(), "--until", until.isoformat(), "--format", "jsonl", "-o", os.devnull,
    ]  # fmt: skip
    samples: list[int] = []
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def sample() -> None:
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                for line in status.read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        samples.append(int(line.split()[1]) * 1024)
            except OSError:
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, err = process.communicate(timeout=900)
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"export failed: {err.decode()}")
    return time.perf_counter() - started, max(samples, default=0), statistics.median(samples or [0])


async def nth_time(conn: asyncpg.Connection, start: dt.datetime, n: int) -> dt.datetime:
    value = await conn.fetchval(
        f"SELECT created_at FROM {TABLE} WHERE created_at >= $1 ORDER BY created_at, id OFFSET $2 LIMIT 1", start, n
    )
    return value or dt.datetime.max


async def first_page_ms(conn: asyncpg.Connection, since: dt.datetime, until: dt.datetime) -> float:
    sql = f"SELECT * FROM {TABLE} WHERE created_at >= $1 AND created_at < $2 ORDER BY created_at, id LIMIT 1000"
    elapsed, _ = await timed(conn.fetch(sql, since, until))
    return elapsed * 1000


async def brin_vs_btree(conn: asyncpg.Connection) -> None:
    since, until = START + dt.timedelta(days=31), START + dt.timedelta(days=59)
    btree = await conn.fetchval(f"SELECT pg_relation_size('{SCHEMA}.idx_user_audit_logs_created_at_id')")
    await first_page_ms(conn, since, until)
    with_btree = await first_page_ms(conn, since, until)
    tr = conn.transaction()
    await tr.start()
    try:  # transactional DDL: try the BRIN alone, then roll everything back
        await conn.execute(f"CREATE INDEX bench_brin ON {TABLE} USING brin (created_at)")
        brin = await conn.fetchval(f"SELECT pg_relation_size('{SCHEMA}.bench_brin')")
        await conn.execute(f"DROP INDEX {SCHEMA}.idx_user_audit_logs_created_at_id")
        await first_page_ms(conn, since, until)
        with_brin = await first_page_ms(conn, since, until)
    finally:
        await tr.rollback()
    print(f"  first page (1,000 rows) of a month: BTREE {with_btree:8.1f} ms ({btree / 2**20:,.0f} MiB index)")
    print(f"                                      BRIN  {with_brin:8.1f} ms ({brin / 2**10:,.0f} KiB index)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=os.environ.get("AUDIT_DSN"))
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--export-rows", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the bench_ops schema afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse bench_ops if already loaded")
    args = parser.parse_args()
    dsn = database(args.dsn)
    conn = await asyncpg.connect(dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
        existing = await conn.fetchval("SELECT to_regclass($1)", TABLE)
        rows = args.rows
        if args.reuse and existing is not None:
            rows = int(await conn.fetchval(f"SELECT count(*) FROM {TABLE}"))
            print(f"reusing {rows:,} rows in {TABLE}")
        else:
            seconds = await load(conn, rows, args.months)
            print(f"loaded {rows:,} rows over {args.months} months in {seconds:.0f} s (with index build + VACUUM)")
        size = await conn.fetchval(f"SELECT pg_total_relation_size('{TABLE}')")
        print(f"PostgreSQL {version}, {os.cpu_count()} cores, table + indexes {size / 2**30:.2f} GiB")

        month = EventFilter(since=START + dt.timedelta(days=59), until=START + dt.timedelta(days=90))
        counts = await conn.fetch(
            f"SELECT user_id, count(*) FROM {TABLE} WHERE created_at >= $1 AND created_at < $2 AND user_id IS NOT NULL "
            "GROUP BY 1 ORDER BY 2",
            month.since,
            month.until,
        )
        for label, (user, n) in (("median user", counts[len(counts) // 2]), ("busiest user", counts[-1])):
            filters = EventFilter(user_id=user, since=month.since, until=month.until)
            first, best, found = await best_of(3, lambda f=filters: run_query(conn, f))
            assert found == n, (found, n)
            print(f"  query, {label} over a month ({n:,} rows): {first:6.3f} s first, {best:6.3f} s best (< 1 s)")

        day = EventFilter(since=START + dt.timedelta(days=70), until=START + dt.timedelta(days=71))
        first, best, stats = await best_of(3, lambda: collect_stats(conn, day, schema=SCHEMA, bucket="hour"))
        top = stats.failed_by_ip[0]
        print(
            f"  stats for a day ({stats.total:,} rows; top failing ip {top.key}: {top.failures} failures, "
            f"{top.distinct} identifiers): {first:6.3f} s first, {best:6.3f} s best (< 1 s)"
        )
        for label, span in (("a day", day), ("a month", month)):
            filters = EventFilter(ip="203.0.113.3", since=span.since, until=span.until)
            first, best, found = await best_of(2, lambda f=filters: run_query(conn, f))
            print(f"  query --ip over {label} ({found:,} rows, no ip index): {first:6.3f} s first, {best:6.3f} s best")

        origin = START + dt.timedelta(days=20)
        for n in (100_000, args.export_rows):
            until = await nth_time(conn, origin, n)
            seconds, peak, median = export_rss(dsn, origin, until)
            print(
                f"  export {n:>9,} rows (JSON lines): {seconds:6.1f} s, {n / seconds:9,.0f} rows/s, "
                f"peak RSS {peak / 2**20:6.1f} MiB (median {median / 2**20:.1f} MiB)"
            )

        await brin_vs_btree(conn)

        cutoff = await nth_time(conn, START, min(200_000, rows // 10))
        elapsed, report = await timed(prune(conn, cutoff=cutoff, schema=SCHEMA, batch_size=10_000))
        rate = report.deleted / elapsed
        print(f"  prune {report.deleted:,} oldest rows in {report.batches} batches: {rate:,.0f} rows/s")
        if not args.keep:
            await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
