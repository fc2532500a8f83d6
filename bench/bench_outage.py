"""A database outage under steady load: nothing lost, request latency unaffected, memory bounded.

Usage:
    python bench/bench_outage.py [--rate 2000] [--normal-seconds 10] [--outage-seconds 30]
                                 [--max-recovery-seconds 120] [--max-buffer 100000]

Starts its own throwaway PostgreSQL on 127.0.0.1 (it has to stop it), then runs a simulated request
loop on one event loop: ``--rate`` requests per second, each doing a little work and recording one
audit event with ``record_nowait``, exactly as the middleware does. The database is stopped
(``pg_ctl -m immediate``, a crash) for ``--outage-seconds`` and started again; the load goes on until
the backlog is replayed. Reports:

* events sent vs rows in the table (and distinct ids): must be equal;
* request latency p50/p99/max, normal vs outage vs recovery. A request's latency is measured from
  its scheduled time to its end, so anything that blocks the loop (the writer's own work, spooling,
  fsync) shows up in it;
* peak RSS of the process during the outage, peak spool size, events spooled;
* backlog replay time: from the restart until every event is in the table.

Numbers from a shared 2-core machine are noisy; compare phases of one run with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit_middleware import AuditWriter, init_db
from tests.faults import ThrowawayPostgres

SCHEMA = "bench_outage"
SAMPLE_EVERY = 0.1


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "n": len(ordered),
        "p50_ms": round(pick(0.50) * 1000, 3),
        "p99_ms": round(pick(0.99) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


class Load:
    """``rate`` simulated requests per second; latencies collected per phase."""

    def __init__(self, writer: AuditWriter, rate: float) -> None:
        self.writer = writer
        self.rate = rate
        self.phase = "warmup"
        self.latencies: dict[str, list[float]] = {}
        self.sent = 0
        self.refused = 0
        self.running = True

    def request(self, i: int) -> None:
        body = json.dumps({"user": i % 1000, "path": "/auth/login", "ok": True})  # a little app work
        event = self.writer.record_nowait(
            "login",
            metadata={"ip": f"10.0.{i % 256}.{i % 200}", "request_id": f"req-{i}", "http": {"status": 200}},
        )
        if event is None:
            self.refused += 1
        else:
            self.sent += 1
        del body

    async def run(self) -> None:
        interval = 1.0 / self.rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        i = 0
        while self.running:
            now = loop.time()
            while next_at <= now and self.running:
                self.request(i)
                i += 1
                self.latencies.setdefault(self.phase, []).append(loop.time() - next_at)
                next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--normal-seconds", type=float, default=10.0)
    parser.add_argument("--outage-seconds", type=float, default=30.0)
    parser.add_argument("--max-recovery-seconds", type=float, default=120.0)
    parser.add_argument("--max-buffer", type=int, default=100_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        server = ThrowawayPostgres(base / "pg")
        server.init()
        server.start()
        try:
            await run(server, base / "spool", args)
        finally:
            server.destroy()


async def run(server: ThrowawayPostgres, spool_dir: Path, args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(server.dsn)
    await conn.execute(f"CREATE SCHEMA {SCHEMA}")
    await init_db(conn, schema=SCHEMA, users_table=None)
    await conn.close()

    writer = AuditWriter(
        server.dsn, schema=SCHEMA, spool_dir=str(spool_dir), max_buffer=args.max_buffer,
        retry_max=1.0, connect_timeout=1.0, write_timeout=2.0, close_timeout=30.0,
    )  # fmt: skip
    await writer.start()
    load = Load(writer, args.rate)
    peak = {"rss_kib": 0, "spool_bytes": 0, "queue_depth": 0}

    async def sample() -> None:
        while load.running:
            if load.phase == "outage":
                stats = writer.stats()
                peak["rss_kib"] = max(peak["rss_kib"], rss_kib())
                peak["spool_bytes"] = max(peak["spool_bytes"], stats.spool_bytes)
                peak["queue_depth"] = max(peak["queue_depth"], stats.queue_depth)
            await asyncio.sleep(SAMPLE_EVERY)

    runner = asyncio.ensure_future(load.run())
    sampler = asyncio.ensure_future(sample())
    await asyncio.sleep(1.0)
    load.phase = "normal"
    rss_before = rss_kib()
    await asyncio.sleep(args.normal_seconds)

    load.phase = "outage"
    await asyncio.to_thread(server.stop, "immediate")
    await asyncio.sleep(args.outage_seconds)
    load.phase = "recovery"
    await asyncio.to_thread(server.start)
    restarted = time.perf_counter()
    sent_at_restart = load.sent
    replay_seconds = None
    deadline = restarted + args.max_recovery_seconds
    while time.perf_counter() < deadline:
        stats = writer.stats()
        if stats.written >= sent_at_restart and stats.replayed >= stats.spooled:
            replay_seconds = time.perf_counter() - restarted
            break
        await asyncio.sleep(0.05)
    load.phase = "after"
    await asyncio.sleep(2.0)
    load.running = False
    await runner
    await sampler
    await writer.flush(timeout=args.max_recovery_seconds)
    stats = writer.stats()
    await writer.aclose()

    conn = await asyncpg.connect(server.dsn)
    rows = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.user_audit_logs")
    distinct = await conn.fetchval(f"SELECT count(DISTINCT id) FROM {SCHEMA}.user_audit_logs")
    await conn.close()

    normal = percentiles(load.latencies.get("normal", []))
    outage = percentiles(load.latencies.get("outage", []))
    report = {
        "rate": args.rate,
        "outage_seconds": args.outage_seconds,
        "events_sent": load.sent,
        "events_refused": load.refused,
        "rows": rows,
        "distinct_ids": distinct,
        "lossless": rows == distinct == load.sent,
        "latency_normal": normal,
        "latency_outage": outage,
        "latency_recovery": percentiles(load.latencies.get("recovery", [])),
        "p99_outage_over_normal": round(outage["p99_ms"] / normal["p99_ms"], 2) if normal and outage else None,
        "rss_before_outage_mib": round(rss_before / 1024, 1),
        "peak_rss_outage_mib": round(peak["rss_kib"] / 1024, 1),
        "peak_spool_mib": round(peak["spool_bytes"] / 2**20, 2),
        "peak_queue_depth_outage": peak["queue_depth"],
        "spooled": stats.spooled,
        "replayed": stats.replayed,
        "retried": stats.retried,
        "dropped": stats.dropped,
        "backlog_replay_seconds": round(replay_seconds, 2) if replay_seconds is not None else None,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
