"""Hybrid logical clock (Kulkarni et al., 2014), with a bounded drift.

A node ticks its clock for each event it writes and advances it past every event it receives — but never
more than `max_drift_ms` past its own physical clock: a desk whose clock runs an hour ahead must not drag
every other desk's clock an hour forward. So an event's hlc alone no longer orders it after everything its
writer had seen; the log's order stamps (order.py) restore that exactly. Pure: the physical clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Hlc:
    wall: int  # milliseconds since the epoch
    counter: int

    def to_wire(self) -> list[int]:
        return [self.wall, self.counter]

    @classmethod
    def from_wire(cls, value: object) -> Hlc:
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        ):
            raise ValueError("hlc must be [wall_ms, counter] of non-negative integers")
        return cls(int(value[0]), int(value[1]))


DEFAULT_MAX_DRIFT_MS = 120_000


class HybridClock:
    def __init__(self, physical_ms: Callable[[], int], last: Hlc | None = None,
                 max_drift_ms: int | None = None) -> None:
        """`max_drift_ms`: how far past this desk's physical clock a received timestamp may push it
        (None: no bound, Kulkarni's clock as published)."""
        self._physical_ms = physical_ms
        self._last = last or Hlc(0, 0)
        self.max_drift_ms = max_drift_ms

    @property
    def last(self) -> Hlc:
        return self._last

    def tick(self) -> Hlc:
        """The timestamp for a new local event."""
        pt = self._physical_ms()
        if pt > self._last.wall:
            self._last = Hlc(pt, 0)
        else:
            self._last = Hlc(self._last.wall, self._last.counter + 1)
        return self._last

    def observe(self, remote: Hlc) -> Hlc:
        """Advance past a received event's timestamp, or as far towards it as the drift bound allows."""
        pt = self._physical_ms()
        if self.max_drift_ms is not None and remote.wall > pt + self.max_drift_ms:
            remote = Hlc(pt + self.max_drift_ms, 0)
        last = self._last
        wall = max(last.wall, remote.wall, pt)
        if wall == last.wall and wall == remote.wall:
            counter = max(last.counter, remote.counter) + 1
        elif wall == last.wall:
            counter = last.counter + 1
        elif wall == remote.wall:
            counter = remote.counter + 1
        else:
            counter = 0
        self._last = Hlc(wall, counter)
        return self._last
