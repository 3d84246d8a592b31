"""Percentiles taken one way by every driver, so that their rows compare.

Standard library and Python 3.9 syntax only: the official SDK's interpreter imports
this module too (``official_driver.py``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0 to 1) of the ascending ``ordered``, by nearest rank."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency_summary(samples: List[float], cpu_s: Optional[float] = None) -> Dict[str, Any]:
    """Count, p50, p99 and maximum of latency samples (seconds), in milliseconds, and
    the client's CPU per event when ``cpu_s`` (its CPU over the run) is given."""
    ordered = sorted(samples)
    if not ordered:
        return {"events": 0}
    summary = {
        "events": len(ordered),
        "p50_ms": percentile(ordered, 0.50) * 1e3,
        "p99_ms": percentile(ordered, 0.99) * 1e3,
        "max_ms": ordered[-1] * 1e3,
    }
    if cpu_s is not None:
        summary["cpu_us_per_event"] = cpu_s / len(ordered) * 1e6
    return summary
