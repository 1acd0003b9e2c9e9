"""Small SVG charts drawn on the server: geometry only, so the template writes plain ``<svg>`` elements.

No charting script is needed (and none could run under the console's CSP without being served from here); a
line of lag and bars of jobs per minute are all the Workers page shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WIDTH = 600
HEIGHT = 160
PADDING_PX = 24


@dataclass(frozen=True, slots=True)
class LineChart:
    points: str  # SVG polyline points
    area: str  # the polygon under the line
    last: tuple[float, float]  # the newest value's point, marked (a single sample draws no line)
    peak: int
    empty: bool


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    y: float
    height: float
    kind: str
    title: str


@dataclass(frozen=True, slots=True)
class BarChart:
    bars: list[Bar]
    peak: int
    empty: bool


def line_chart(values: Sequence[int]) -> LineChart:
    """``values`` evenly spaced across the chart, scaled so the largest touches the top."""
    if not values:
        return LineChart(points="", area="", last=(0.0, 0.0), peak=0, empty=True)
    peak = max(max(values), 1)
    step = (WIDTH - 2 * PADDING_PX) / max(len(values) - 1, 1)
    coordinates = [(PADDING_PX + index * step, _y(value, peak)) for index, value in enumerate(values)]
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
    bottom = HEIGHT - PADDING_PX
    area = f"{coordinates[0][0]:.1f},{bottom} {points} {coordinates[-1][0]:.1f},{bottom}"
    return LineChart(points=points, area=area, last=coordinates[-1], peak=max(values), empty=False)


def stacked_bars(buckets: Sequence[tuple[str, int, int]]) -> BarChart:
    """One bar per ``(label, done, failed)`` bucket, failed stacked on done."""
    if not buckets:
        return BarChart(bars=[], peak=0, empty=True)
    peak = max(max(done + failed for _, done, failed in buckets), 1)
    slot = (WIDTH - 2 * PADDING_PX) / len(buckets)
    width = max(slot * 0.7, 1.0)
    bars: list[Bar] = []
    for index, (label, done, failed) in enumerate(buckets):
        x = PADDING_PX + index * slot + (slot - width) / 2
        done_top = _y(done, peak)
        bars.append(Bar(x, width, done_top, HEIGHT - PADDING_PX - done_top, "done", f"{label}: {done} done"))
        failed_top = _y(done + failed, peak)
        bars.append(Bar(x, width, failed_top, done_top - failed_top, "failed", f"{label}: {failed} failed"))
    return BarChart(bars=bars, peak=max(done + failed for _, done, failed in buckets), empty=False)


def _y(value: int, peak: int) -> float:
    return HEIGHT - PADDING_PX - (HEIGHT - 2 * PADDING_PX) * value / peak
