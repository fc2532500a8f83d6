"""The events-over-time chart, drawn on the server as SVG (no script, works offline and under a strict CSP).

Each bar stacks the failed rows (action ending in ``_failed``) under the others, in two colours
set by classes in ``viewer.css``; each bar is a link to the list narrowed to the bar's range.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .queries import Bucket

__all__ = ["Bar", "Chart", "build"]

WIDTH = 960
HEIGHT = 160
LEFT = 44  # room for the y labels
BOTTOM = 20  # room for the x labels
TOP = 8


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar in SVG coordinates, with its link and tooltip text."""

    x: float
    width: float
    failed_y: float
    failed_h: float
    ok_y: float
    ok_h: float
    href: str
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything the template draws."""

    width: int
    height: int
    bars: list[Bar]
    y_ticks: list[tuple[float, str]]
    x_labels: list[tuple[float, str]]
    total: int
    failed: int
    bucket: str
    start: dt.datetime | None
    end: dt.datetime | None


def _nice_step(value: int) -> int:
    """A round tick step (1, 2 or 5 times a power of ten) giving about four ticks up to ``value``."""
    rough = max(value / 4, 1)
    magnitude = int(10 ** (len(str(int(rough))) - 1))
    for step in (1, 2, 5, 10):
        if step * magnitude >= rough:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - step 10 always reaches rough


def _label_format(width: int, span: dt.timedelta) -> str:
    if width >= 86400:
        return "%m-%d"
    if span <= dt.timedelta(days=1):
        return "%H:%M"
    return "%m-%d %H:%M"


def describe_width(seconds: int) -> str:
    """A bucket width in words: ``5 min``, ``1 h``, ``1 d``."""
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def build(buckets: Sequence[Bucket], width: int, link: Callable[[Bucket], str]) -> Chart:
    """Lay out ``buckets`` (of ``width`` seconds) as stacked bars; ``link`` gives each bar's href."""
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM - TOP
    step = _nice_step(max((b.total for b in buckets), default=0))
    ticks = max(1, -(-max((b.total for b in buckets), default=0) // step))
    top = step * ticks
    slot = plot_w / max(len(buckets), 1)
    gap = min(2.0, slot * 0.2)
    bars = []
    fmt = _label_format(width, buckets[-1].end - buckets[0].start) if buckets else "%H:%M"
    for i, b in enumerate(buckets):
        failed_h = plot_h * b.failed / top
        ok_h = plot_h * b.succeeded / top
        base = TOP + plot_h
        title = f"{b.start:%Y-%m-%d %H:%M} to {b.end:%Y-%m-%d %H:%M} UTC: {b.total} events, {b.failed} failed"
        bars.append(
            Bar(
                x=round(LEFT + i * slot + gap / 2, 2),
                width=round(max(slot - gap, 1.0), 2),
                failed_y=round(base - failed_h, 2),
                failed_h=round(failed_h, 2),
                ok_y=round(base - failed_h - ok_h, 2),
                ok_h=round(ok_h, 2),
                href=link(b),
                title=title,
            )
        )
    y_ticks = [(round(TOP + plot_h - plot_h * k / ticks, 2), f"{step * k:,}") for k in range(ticks + 1)]
    every = max(1, len(buckets) // 8)
    x_labels = [
        (round(LEFT + i * slot + slot / 2, 2), b.start.strftime(fmt)) for i, b in enumerate(buckets) if i % every == 0
    ]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        y_ticks=y_ticks,
        x_labels=x_labels,
        total=sum(b.total for b in buckets),
        failed=sum(b.failed for b in buckets),
        bucket=describe_width(width),
        start=buckets[0].start if buckets else None,
        end=buckets[-1].end if buckets else None,
    )
