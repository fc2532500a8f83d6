"""What several benchmarks share: the database they run on, the event payload, the timed writer run."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from audit_middleware import AuditWriter

_servers: list[Any] = []  # embedded servers live as long as the process


def database(dsn: str | None) -> str:
    """``dsn``, or a throwaway embedded PostgreSQL in a temporary directory (deleted at exit)."""
    if dsn:
        return dsn
    from audit_middleware._embedded import start_embedded

    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    base.chmod(0o755)  # the server runs as an unprivileged user when we are root
    dsn, server = start_embedded(base / "data", delete_on_exit=True)
    _servers.append(server)
    return dsn


def metadata(i: int) -> dict[str, object]:
    """A login event's metadata, varied by ``i``."""
    return {
        "ip": f"10.0.{i % 256}.{i % 200}",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) bench",
        "request_id": f"req-{i}",
        "http": {"method": "POST", "path": "/auth/login", "route": "/auth/login", "status": 200, "duration_ms": 3.2},
    }


async def timed_writer(dsn: str, n: int, batch_size: int, **options: Any) -> tuple[float, float]:
    """Record ``n`` events as fast as possible, then close: (µs to enqueue one, events/s persisted)."""
    users = [uuid.uuid4() for _ in range(1000)]
    payloads = [metadata(i) for i in range(n)]
    writer = AuditWriter(dsn, max_buffer=n + 1, batch_size=batch_size, **options)
    await writer.start()
    await writer.flush()  # pool open before timing, as in a running app
    record = writer.record_nowait
    start = time.perf_counter()
    for i in range(n):
        record("login", user_id=users[i % 1000], metadata=payloads[i])
    enqueued = time.perf_counter()
    await writer.aclose(timeout=600)
    done = time.perf_counter()
    stats = writer.stats()
    assert stats.written == n, stats
    return (enqueued - start) / n * 1e6, n / (done - start)
