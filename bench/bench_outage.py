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

``--sigkill`` runs the other outage case: the loss bound on SIGKILL. An app process (a child) serves
``--rate`` requests per second (default 200) with a default-configured writer and notes each answered
request's event id in a file as it answers. The database is crashed (``pg_ctl stop -m immediate``),
and ``--kill-after`` seconds into the outage (default 0, 3 and 12, one run each) the app is SIGKILLed.
The database is started again, a new writer on the same spool replays what was spooled, and the
report counts answered events that never reached the table: at most one flush interval of events
(``flush_interval`` times the rate: 40 events at the defaults) is the documented bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from audit_middleware import AuditWriter, init_db
from audit_middleware.writer.config import WriterConfig
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
    parser.add_argument("--rate", type=float, default=None, help="requests/s (default 2000; 200 with --sigkill)")
    parser.add_argument("--normal-seconds", type=float, default=None, help="(default 10; 3 with --sigkill)")
    parser.add_argument("--outage-seconds", type=float, default=30.0)
    parser.add_argument("--max-recovery-seconds", type=float, default=120.0)
    parser.add_argument("--max-buffer", type=int, default=100_000)
    parser.add_argument("--sigkill", action="store_true", help="measure events lost on SIGKILL during an outage")
    parser.add_argument("--kill-after", default="0,3,12", help="with --sigkill: seconds into the outage, one run each")
    parser.add_argument("--child", nargs=4, metavar=("DSN", "SCHEMA", "SPOOL", "IDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        await child(*args.child, rate=args.rate or 200.0)
        return

    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)
        server = ThrowawayPostgres(base / "pg")  # our own server: this benchmark crashes it
        server.init()
        server.start()
        try:
            if args.sigkill:
                await sigkill_runs(server, base, args)
            else:
                args.rate = args.rate or 2000.0
                args.normal_seconds = 10.0 if args.normal_seconds is None else args.normal_seconds
                await run(server, base / "spool", args)
        finally:
            server.destroy()


# -- SIGKILL during an outage ------------------------------------------------------------------


async def child(dsn: str, schema: str, spool_dir: str, ids_path: str, *, rate: float) -> None:
    """The app: ``rate`` requests/s, each recording one event; an answered request's id goes to ``ids_path``.

    The id is written (unbuffered) once the request is answered, so the file holds exactly what
    clients were told succeeded, up to the SIGKILL.
    """
    writer = AuditWriter(dsn, schema=schema, spool_dir=spool_dir)  # the defaults: the documented bound
    await writer.start()
    fd = os.open(ids_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    loop = asyncio.get_running_loop()
    interval, next_at, i = 1.0 / rate, loop.time(), 0
    while True:
        answered = []
        while next_at <= loop.time():
            event = writer.record_nowait("login", metadata={"request_id": f"req-{i}", "http": {"status": 200}})
            if event is not None:
                answered.append(str(event.id))
            i += 1
            next_at += interval
        if answered:
            os.write(fd, ("\n".join(answered) + "\n").encode())
        await asyncio.sleep(max(0.0, next_at - loop.time()))


async def sigkill_runs(server: ThrowawayPostgres, base: Path, args: argparse.Namespace) -> None:
    rate = args.rate or 200.0
    normal = 3.0 if args.normal_seconds is None else args.normal_seconds
    results = []
    for run_no, kill_after in enumerate(float(x) for x in args.kill_after.split(",")):
        results.append(await sigkill_run(server, base / f"run{run_no}", rate, normal, kill_after, args))
    flush_interval = WriterConfig().flush_interval
    report = {
        "rate": rate,
        "flush_interval": flush_interval,
        "bound_events": round(rate * flush_interval),
        "runs": results,
    }
    print(json.dumps(report, indent=2))


async def sigkill_run(
    server: ThrowawayPostgres, base: Path, rate: float, normal: float, kill_after: float, args: argparse.Namespace
) -> dict[str, object]:
    server.ensure_running()
    base.mkdir(parents=True)
    schema = f"bench_kill_{base.name}"
    conn = await asyncpg.connect(server.dsn)
    await conn.execute(f"CREATE SCHEMA {schema}")
    await init_db(conn, schema=schema, users_table=None)
    await conn.close()
    ids_path, spool_dir = base / "answered", base / "spool"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--rate", str(rate), "--child", server.dsn, schema, str(spool_dir), str(ids_path),
    )  # fmt: skip
    await asyncio.sleep(normal)
    await asyncio.to_thread(server.stop, "immediate")
    await asyncio.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    killed_at = time.perf_counter()
    await asyncio.to_thread(server.start)
    answered = set(ids_path.read_text().split())
    spooled = sum(1 for p in spool_dir.rglob("*.jsonl") for _ in p.open("rb"))
    async with AuditWriter(server.dsn, schema=schema, spool_dir=str(spool_dir)) as heir:  # claims the spool
        while list(spool_dir.rglob("*.jsonl")) and time.perf_counter() - killed_at < args.max_recovery_seconds:
            await asyncio.sleep(0.1)
    conn = await asyncpg.connect(server.dsn)
    stored = {str(r["id"]) for r in await conn.fetch(f"SELECT id FROM {schema}.user_audit_logs")}
    await conn.close()
    lost = len(answered - stored)
    return {
        "kill_after_outage_s": kill_after,
        "answered": len(answered),
        "spooled_at_kill": spooled,
        "replayed": heir.stats().replayed,
        "stored": len(stored & answered),
        "lost": lost,
        "lost_ms_of_traffic": round(lost / rate * 1000),
    }


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
