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
    median: tuple[float, str] | None = None  # (y, label)
    p95: tuple[float, str] | None = None
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


def nice_step(span: float, ticks: int = 5) -> float:
    raw = span / max(ticks, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _time_ticks(t0: datetime, t1: datetime, n: int = 5) -> list[tuple[datetime, str]]:
    span = (t1 - t0).total_seconds()
    fmt = "%Y-%m-%d" if span > 3 * 86400 else "%m-%d %H:%M" if span > 3600 else "%H:%M:%S"
    return [(t, t.strftime(fmt)) for t in (t0 + (t1 - t0) * i / (n - 1) for i in range(n))]


def duration_chart(points: list[Point], *, width: int = 720, height: int = 300) -> Chart:
    if not points:
        raise ValueError("no points")
    left, right, top = 64, width - 16, 14
    bottom = height - 64
    lane = height - 40
    chart = Chart(width, height, left, top, right, bottom, lane)
    t0, t1 = min(p.t for p in points), max(p.t for p in points)
    if t1 - t0 < timedelta(minutes=1):
        t0, t1 = t0 - timedelta(minutes=30), t1 + timedelta(minutes=30)
    timed = [p for p in points if not p.cache_hit]
    top_s = max((p.seconds for p in timed), default=1.0) or 1.0
    step = nice_step(top_s)
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
        chart.median = (y(med), fmt_seconds(med))
        chart.p95 = (y(p95), fmt_seconds(p95))
    chart.counts = {k: sum(1 for d in chart.dots if d.kind == k) for k in ("ok", "failed", "cached")}
    return chart
