"""Shared helpers for benchmarks: percentiles, real desk processes, RSS."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.procs import DeskProcess, Relay, free_port, get_json, post_json, wait_for

__all__ = ["DeskProcess", "Relay", "free_port", "get_json", "pct", "post_json", "summary", "wait_for"]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(name: str, values_ms: list[float]) -> str:
    return (f"{name}: n={len(values_ms)} p50={pct(values_ms, 50):.2f} ms p99={pct(values_ms, 99):.2f} ms "
            f"max={max(values_ms):.2f} ms mean={statistics.fmean(values_ms):.2f} ms")
