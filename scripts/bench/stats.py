"""Percentiles, medians and ratios: the arithmetic every comparison shares (pure, no I/O)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks (numpy's default method).

    Raises ``ValueError`` for an empty sequence: a figure without samples must not pass as zero.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary_ms(latencies_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of latencies given in seconds (all zero when there are none)."""
    if not latencies_s:
        return {"count": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    return {
        "count": len(latencies_s),
        "p50": percentile(latencies_s, 50) * 1000,
        "p90": percentile(latencies_s, 90) * 1000,
        "p99": percentile(latencies_s, 99) * 1000,
        "max": max(latencies_s) * 1000,
        "mean": statistics.fmean(latencies_s) * 1000,
    }


def ratio(value: float, baseline: float) -> float | None:
    """``value / baseline``, or ``None`` when the baseline is zero (no limit was measured)."""
    if baseline == 0:
        return None
    return value / baseline


def paired_ratio(values: Sequence[float], baselines: Sequence[float]) -> float | None:
    """The median over runs of each run's ``value / baseline``.

    Pairing by run cancels a slow phase of a noisy machine that hit both figures of that run alike, which a
    ratio of the two medians would not.
    """
    if len(values) != len(baselines):
        raise ValueError(f"{len(values)} values but {len(baselines)} baselines")
    ratios = [r for v, b in zip(values, baselines, strict=True) if (r := ratio(v, b)) is not None]
    return statistics.median(ratios) if ratios else None
