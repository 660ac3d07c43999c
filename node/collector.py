"""How this process's cyclic garbage collector runs: rarely, and never over what the desk loaded at start.

A full collection walks every object the collector tracks, and a desk holds hundreds of thousands of
long-lived ones (events, loans, the fold's checkpoints) that are not garbage and hold no cycles. With
Python's default thresholds, the allocations of a catch-up set off such walks again and again: a fold of
35,000 events took 51 µs an event instead of 5 when they fell badly (bench/bench_catchup.py measures the
whole catch-up: 24,900 events a CPU second with the defaults, 28,700 with these settings). So young
collections wait for more allocations, and once the desk serves, what its start loaded is frozen
(`gc.freeze`: left out of every later collection; reference counting still frees it when it goes).
"""

from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)  # allocations before a young collection; young, then middle, collections before the next


def tune() -> None:
    """At the start of a desk process (and of the in-process benchmarks that stand for one)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_loaded() -> None:
    """Once the desk serves: what its start loaded stays out of later collections."""
    gc.freeze()
