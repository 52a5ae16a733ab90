"""Numbers the harness reports: spreads over rounds, percentiles of latency samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Spread:
    """One metric over the interleaved rounds: the middle value and how far the noise went."""

    min: float
    median: float
    max: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def spread(values: Iterable[float]) -> Spread | None:
    found = [v for v in values if v is not None and math.isfinite(v)]
    if not found:
        return None
    return Spread(min(found), statistics.median(found), max(found), len(found))


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted samples; p99 of 20 samples is the max."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_metrics(samples_s: Sequence[float], prefix: str = "") -> dict[str, float]:
    """p50/p99/max in milliseconds of samples taken in seconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        f"{prefix}p50_ms": percentile(ms, 50),
        f"{prefix}p99_ms": percentile(ms, 99),
        f"{prefix}max_ms": max(ms) if ms else math.nan,
    }
