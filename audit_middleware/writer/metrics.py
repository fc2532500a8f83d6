"""Optional Prometheus metrics (the ``prometheus`` extra: ``pip install 'audit-trail-middleware[prometheus]'``).

The writer keeps plain counters (:meth:`AuditWriter.stats`); this collector reads them at scrape
time, so nothing is added to the request path.

Example:
    >>> from prometheus_client import REGISTRY                     # doctest: +SKIP
    >>> register_metrics(writer)                                    # doctest: +SKIP
    >>> # exposes audit_events_enqueued_total, audit_queue_depth, audit_writer_healthy, ...
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .writer import AuditWriter

__all__ = ["AuditMetricsCollector", "register_metrics"]

COUNTERS = (
    ("enqueued", "Audit events accepted into the buffer"),
    ("written", "Audit rows committed to the database"),
    ("spooled", "Audit events written to the local disk spool"),
    ("replayed", "Audit rows replayed from a disk spool"),
    ("dropped", "Audit events lost (buffer or spool full, policy drop)"),
    ("retried", "Failed audit write attempts that were retried"),
    ("dead_lettered", "Audit rows refused by the database and written to the dead-letter file"),
)
GAUGES = (
    ("queue_depth", "Audit events waiting in memory"),
    ("spool_bytes", "Bytes in this process's unreplayed disk spool"),
)


def _import() -> Any:
    try:
        import prometheus_client.core as core
    except ImportError as exc:  # pragma: no cover - the extra installs it
        raise RuntimeError("metrics need: pip install 'audit-trail-middleware[prometheus]'") from exc
    return core


class AuditMetricsCollector:
    """A ``prometheus_client`` collector reporting one writer's ``stats()`` (names prefixed ``audit_``)."""

    def __init__(self, writer: AuditWriter, *, prefix: str = "audit") -> None:
        self._core = _import()
        self.writer = writer
        self.prefix = prefix

    def describe(self) -> list[Any]:
        return []  # metrics are only known at collect time; an empty describe keeps registration cheap

    def collect(self) -> Iterator[Any]:
        core, stats, p = self._core, self.writer.stats(), self.prefix
        for name, doc in COUNTERS:
            yield core.CounterMetricFamily(f"{p}_events_{name}", doc, value=getattr(stats, name))
        for name, doc in GAUGES:
            yield core.GaugeMetricFamily(f"{p}_{name}", doc, value=getattr(stats, name))
        latency = stats.last_flush_latency
        yield core.GaugeMetricFamily(
            f"{p}_last_flush_latency_seconds", "Duration of the last successful batch write", value=latency or 0.0
        )
        yield core.GaugeMetricFamily(
            f"{p}_writer_healthy", "1 while audit events reach the database", value=1.0 if stats.healthy else 0.0
        )


def register_metrics(writer: AuditWriter, registry: Any = None, *, prefix: str = "audit") -> AuditMetricsCollector:
    """Register a collector for ``writer`` on ``registry`` (default: prometheus_client's global one)."""
    collector = AuditMetricsCollector(writer, prefix=prefix)
    if registry is None:
        registry = _import().REGISTRY
    registry.register(collector)
    return collector
