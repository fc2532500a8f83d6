"""The viewer on 5M rows: the first page, filtered pages and the 30-day chart, through the real ASGI app.

Usage:
    python bench/bench_viewer.py [--dsn DSN] [--rows 5000000] [--months 6] [--repeat 7] [--keep] [--reuse]

Loads ``--rows`` rows over ``--months`` months into a schema of its own (``bench_viewer``) with
``bench_ops``'s server-side generator (``INSERT ... SELECT generate_series``: logins, failed logins
from a few attacking IPs, API calls, 5,000 users with skewed activity), builds the indexes with
``init-db``, then times whole HTTP requests to ``create_app`` (query, template, response) through
``httpx.ASGITransport``: the median of ``--repeat`` runs after one warm-up. Targets: a page <= 150 ms,
the 30-day chart page <= 500 ms. The schema is dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_ops
from _common import database

from audit_middleware import init_db
from audit_middleware.viewer import create_app
from audit_middleware.viewer.queries import bucket_width

SCHEMA = "bench_viewer"
TABLE = f"{SCHEMA}.user_audit_logs"
BASELINE_CHART = (
    "SELECT floor(extract(epoch FROM created_at - $1) / 43200)::int AS b, "
    "count(*) FILTER (WHERE action LIKE '%\\_failed') AS failed, count(*) AS total "
    f"FROM {TABLE} WHERE created_at >= $1 AND created_at < $2 GROUP BY 1"
)
PAGE_TARGET_MS = 150.0
CHART_TARGET_MS = 500.0


async def load(conn: asyncpg.Connection, rows: int, months: int) -> float:
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    await init_db(conn, schema=SCHEMA, users_table=None)
    for (name,) in await conn.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE 'idx_%'", SCHEMA
    ):  # built after the load (one sort each, much faster than row by row)
        await conn.execute(f"DROP INDEX {SCHEMA}.{name}")
    span = (bench_ops.START.replace(month=1 + months) if months < 12 else dt.datetime(2027, 1, 1)) - bench_ops.START
    generate = bench_ops.GENERATE.replace(bench_ops.TABLE, TABLE)
    started = time.perf_counter()
    for first in range(0, rows, bench_ops.CHUNK):
        last = min(first + bench_ops.CHUNK, rows) - 1
        await conn.execute(generate, first, last, rows, bench_ops.START, span.total_seconds(), timeout=900)
        print(f"\r  loaded {last + 1:,} rows", end="", flush=True)
    print()
    await init_db(conn, schema=SCHEMA, users_table=None)
    await conn.execute(f"VACUUM ANALYZE {TABLE}", timeout=900)
    return time.perf_counter() - started


async def time_get(client: httpx.AsyncClient, url: str, repeat: int) -> tuple[float, int]:
    """Median milliseconds of ``repeat`` GETs after a warm-up, and the response size."""
    response = await client.get(url)
    response.raise_for_status()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = await client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return statistics.median(times), len(response.content)


async def main(args: argparse.Namespace) -> None:
    dsn = database(args.dsn or os.environ.get("AUDIT_DSN"))
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass($1)", TABLE)
        if args.reuse and exists:
            print(f"reusing {TABLE}")
            await init_db(conn, schema=SCHEMA, users_table=None)  # indexes added since it was loaded
        else:
            print(f"loading {args.rows:,} rows over {args.months} months into {TABLE}")
            print(f"  load + indexes: {await load(conn, args.rows, args.months):.0f} s")
        newest = await conn.fetchval(f"SELECT max(created_at) FROM {TABLE}")
        busy = await conn.fetchrow(
            f"SELECT id, user_id, metadata->>'ip' AS ip FROM {TABLE} WHERE user_id IS NOT NULL "
            "AND action = 'login' ORDER BY created_at DESC LIMIT 1"
        )
    finally:
        await conn.close()
    assert busy is not None, "no login rows: the load failed"
    user = str(busy["user_id"])

    async def allow(request: Any) -> bool:
        return True

    app = create_app(dsn=dsn, authorize=allow, schema=SCHEMA)
    until = newest.replace(microsecond=0) + dt.timedelta(seconds=1)
    since = until - dt.timedelta(days=30)
    cases: list[tuple[str, dict[str, str], float]] = [
        ("first page (no filter) + 24 h chart", {}, PAGE_TARGET_MS),
        (
            "first page + chart of the data's last 24 h",
            {"since": (until - dt.timedelta(days=1)).isoformat(), "until": until.isoformat()},
            PAGE_TARGET_MS,
        ),
        (
            "filtered: user + action login* + ip",
            {"user": str(busy["user_id"]), "action": "login*", "ip": busy["ip"]},
            PAGE_TARGET_MS,
        ),
        ("filtered: action prefix api.*", {"action": "api.*"}, PAGE_TARGET_MS),
        ("filtered: ip 203.0.113.3", {"ip": "203.0.113.3"}, PAGE_TARGET_MS),
        ("filtered: failed only, CIDR 203.0.113.0/24", {"failed": "1", "ip": "203.0.113.0/24"}, PAGE_TARGET_MS),
        ("30-day chart + first page", {"since": since.isoformat(), "until": until.isoformat()}, CHART_TARGET_MS),
        (
            "30-day chart, failed only",
            {"since": since.isoformat(), "until": until.isoformat(), "failed": "1"},
            CHART_TARGET_MS,
        ),
        # filters that need the row itself: the chart reads the 30 days' rows (no target promised)
        (
            "30-day chart, action api.* (reads rows)",
            {"since": since.isoformat(), "until": until.isoformat(), "action": "api.*"},
            CHART_TARGET_MS,
        ),
        (
            "free text 'user2999@' over 30 days (reads rows)",
            {"since": since.isoformat(), "until": until.isoformat(), "q": "user2999@"},
            CHART_TARGET_MS,
        ),
    ]
    print(f"30-day chart: one bar per {bucket_width(since, until) // 3600} h")
    transport = httpx.ASGITransport(app=app)
    results = []
    async with httpx.AsyncClient(transport=transport, base_url="http://viewer") as client:
        for name, params, target in cases:
            ms, size = await time_get(client, "/?" + urlencode(params), args.repeat)
            results.append((name, ms, target))
            verdict = "ok" if ms <= target else "OVER TARGET"
            print(f"  {name:<44} {ms:8.1f} ms  (target {target:.0f} ms, {size / 1024:.0f} KiB)  {verdict}")
        day = {"since": (until - dt.timedelta(days=1)).isoformat(), "until": until.isoformat()}
        for name, url in (
            ("event detail", f"/events/{busy['id']}"),
            ("investigate: the data's last 24 h", "/investigate?" + urlencode(day)),
            ("investigate: a user's IPs (all time) + 24 h", "/investigate?" + urlencode({**day, "user": user})),
        ):
            ms, size = await time_get(client, url, args.repeat)
            print(f"  {name:<44} {ms:8.1f} ms  ({size / 1024:.0f} KiB)")
        page = await client.get("/?" + urlencode({"action": "api.*"}))
        older = page.text.split('id="older" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
        ms, _ = await time_get(client, older, args.repeat)
        print(f"  {'next page (keyset cursor), api.*':<44} {ms:8.1f} ms  (target {PAGE_TARGET_MS:.0f} ms)")
    await app.state.viewer.aclose()
    conn = await asyncpg.connect(dsn)
    try:  # the baseline: the chart as one query grouping on extract(epoch ...) with FILTER (first version)
        await conn.fetch(BASELINE_CHART, since, until)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            await conn.fetch(BASELINE_CHART, since, until)
            times.append((time.perf_counter() - started) * 1000)
        print(f"  {'baseline: 30-day chart as one FILTER query':<44} {statistics.median(times):8.1f} ms  (SQL only)")
    finally:
        await conn.close()
    if not args.keep:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        finally:
            await conn.close()
        print(f"dropped {SCHEMA}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=None)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--months", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the schema (with --reuse next time)")
    parser.add_argument("--reuse", action="store_true", help="skip loading when the schema exists")
    asyncio.run(main(parser.parse_args()))
