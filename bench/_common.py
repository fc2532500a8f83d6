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


# -- the ceiling: what auditing would cost if parts of it were free ------------------------------

CEILINGS = ("wrapper-only", "free-event")
CEILING_HELP = (
    "also run the audited app with parts of auditing made free (diagnostic, not the product): "
    "'wrapper-only' builds no event at all (the request/response wrapping alone); 'free-event' replaces "
    "building the redacted event with a ready one (wrapping, buffering and writing rows stay real)"
)


def apply_ceiling(mode: str | None) -> None:
    """Make part of auditing free in this process, to measure what the rest costs (``CEILINGS``).

    ``wrapper-only``: both middlewares still wrap every audited request but record nothing, so no
    row is written. ``free-event``: ``AuditCore.build_event`` returns an already redacted login event
    (``metadata(i)``, a new id each time) without looking at the request, so every request is still a
    row. Neither is a configuration a user can choose: they bound what any faster redaction could gain.
    """
    if not mode:
        return
    from audit_middleware import AuditMiddleware, AuditWSGIMiddleware
    from audit_middleware.capture.core import AuditCore
    from audit_middleware.writer.records import AuditEvent

    if mode == "wrapper-only":

        def record_nothing(self: Any, *args: Any, **kwargs: Any) -> None:
            return None

        AuditMiddleware._record = record_nothing  # type: ignore[method-assign]
        AuditWSGIMiddleware._record = record_nothing  # type: ignore[method-assign]
    elif mode == "free-event":
        user = str(uuid.UUID(int=1))
        made = [0]

        def ready_event(self: Any, *args: Any, **kwargs: Any) -> AuditEvent:
            made[0] += 1
            return AuditEvent("login", user, metadata(made[0]))

        AuditCore.build_event = ready_event  # type: ignore[method-assign]
    else:
        raise ValueError(f"unknown ceiling {mode!r}; expected one of {', '.join(CEILINGS)}")
