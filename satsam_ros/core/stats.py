"""Percentiles and latency summaries: one implementation for the node's diagnostics,
the frame metrics, bag evaluation and the benchmark."""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

#: the keys of :func:`summary_ms`
SUMMARY_KEYS = ("p50", "p95", "p99", "mean", "min", "max")


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """q-th percentile (0..100, linear interpolation) of numbers; None when there are none."""
    if len(values) == 0:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def summary_ms(seconds: Sequence[float]) -> Dict[str, Optional[float]]:
    """p50 / p95 / p99 / mean / min / max of durations given in seconds, in milliseconds
    (every value None when there are none)."""
    if len(seconds) == 0:
        return dict.fromkeys(SUMMARY_KEYS)
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)),
            "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean()), "min": float(ms.min()),
            "max": float(ms.max())}
