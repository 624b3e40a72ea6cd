"""The duration trend as plain SVG geometry (no JS, no chart library).

Django-free: takes points, returns coordinates and labels; the template
draws them. Cache hits took no build time, so they sit in their own lane
under the axis and stay out of the median and p95.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Point:
    t: datetime
    seconds: float
    ok: bool
    cache_hit: bool
    url: str
    label: str


@dataclass
class Dot:
    x: float
    y: float
    kind: str  # "ok", "failed" or "cached"
    url: str
    title: str


@dataclass
class Chart:
    width: int
    height: int
    left: int
    top: int
    right: int
    bottom: int  # y of the time axis
    lane: float  # y of the cache-hit lane
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    dots: list[Dot] = field(default_factory=list)
    median: tuple[float, str, float] | None = None  # (y, label, y of the label)
    p95: tuple[float, str, float] | None = None
    counts: dict[str, int] = field(default_factory=dict)


def fmt_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s" if s < 10 and s != int(s) else f"{s:.0f} s"
    if s < 3600:
        m, sec = divmod(int(round(s)), 60)
        return f"{m} min" if not sec else f"{m} min {sec:02d} s"
    h, m = divmod(int(round(s / 60)), 60)
    return f"{h} h {m:02d} min"


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# Steps a reader counts in: seconds, minutes, hours.
DURATION_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600)
TIME_STEPS = (  # (seconds, strftime format of the labels)
    (60, "%H:%M"), (300, "%H:%M"), (900, "%H:%M"), (1800, "%H:%M"), (3600, "%H:%M"), (7200, "%H:%M"),
    (3 * 3600, "%m-%d %H:%M"), (6 * 3600, "%m-%d %H:%M"), (12 * 3600, "%m-%d %H:%M"),
    (86400, "%Y-%m-%d"), (2 * 86400, "%Y-%m-%d"), (7 * 86400, "%Y-%m-%d"), (14 * 86400, "%Y-%m-%d"),
    (30 * 86400, "%Y-%m-%d"), (91 * 86400, "%Y-%m-%d"), (365 * 86400, "%Y-%m-%d"),
)


def duration_step(top: float, ticks: int = 5) -> float:
    raw = top / ticks
    return next((s for s in DURATION_STEPS if s >= raw), math.ceil(raw / 3600) * 3600)


def _time_ticks(t0: datetime, t1: datetime, n: int = 6) -> list[tuple[datetime, str]]:
    """Ticks on round times (midnights, whole hours...) in t0's zone."""
    span = (t1 - t0).total_seconds()
    step, fmt = next(((s, f) for s, f in TIME_STEPS if span / s <= n), TIME_STEPS[-1])
    if step >= 86400:
        first = t0.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        first = t0.replace(minute=0, second=0, microsecond=0)
    ticks, t = [], first
    while t <= t1:
        if t >= t0:
            ticks.append((t, t.strftime(fmt)))
        t += timedelta(seconds=step)
    return ticks


def duration_chart(points: list[Point], *, width: int = 720, height: int = 300) -> Chart:
    if not points:
        raise ValueError("no points")
    left, right, top = 70, width - 110, 14  # the right margin holds the median/p95 labels
    bottom = height - 72  # time labels under the axis, then the cache-hit lane
    lane = height - 24
    chart = Chart(width, height, left, top, right, bottom, lane)
    t0, t1 = min(p.t for p in points), max(p.t for p in points)
    if t1 - t0 < timedelta(minutes=1):
        t0, t1 = t0 - timedelta(minutes=30), t1 + timedelta(minutes=30)
    timed = [p for p in points if not p.cache_hit]
    top_s = max((p.seconds for p in timed), default=1.0) or 1.0
    step = duration_step(top_s)
    y_max = math.ceil(top_s / step) * step

    def x(t: datetime) -> float:
        return round(left + (t - t0).total_seconds() / (t1 - t0).total_seconds() * (right - left), 1)

    def y(s: float) -> float:
        return round(bottom - s / y_max * (bottom - top), 1)

    chart.x_ticks = [(x(t), label) for t, label in _time_ticks(t0, t1)]
    chart.y_ticks = [(y(i * step), fmt_seconds(i * step)) for i in range(int(round(y_max / step)) + 1)]
    for p in points:
        kind = "cached" if p.cache_hit else "ok" if p.ok else "failed"
        title = f"{p.label}: {fmt_seconds(p.seconds)}, {p.t.strftime('%Y-%m-%d %H:%M:%S %Z').strip()}"
        if p.cache_hit:
            title += " (already built: not a build time)"
        chart.dots.append(Dot(x(p.t), lane if p.cache_hit else y(p.seconds), kind, p.url, title))
    successes = [p.seconds for p in timed if p.ok]
    if successes:
        med, p95 = percentile(successes, 0.5), percentile(successes, 0.95)
        # p95 sits above the median; keep its label clear of the median's.
        chart.median = (y(med), fmt_seconds(med), y(med))
        chart.p95 = (y(p95), fmt_seconds(p95), min(y(p95), y(med) - 13))
    chart.counts = {k: sum(1 for d in chart.dots if d.kind == k) for k in ("ok", "failed", "cached")}
    return chart
