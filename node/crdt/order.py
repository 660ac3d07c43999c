"""The log in causal order, with its state kept up to date as events arrive in any order.

Events usually arrive in order (a desk's own scans, a live peer's): those are folded incrementally. One
that sorts before what was already folded (a healed partition) marks the state stale, and it is refolded
from the start on the next read. Pure: no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping

from node.crdt.event import Event
from node.crdt.state import CirculationState, apply_event, fold

OrderKey = tuple[int, int, str, int]


class OrderedLog:
    def __init__(self, baseline: Mapping[str, tuple[str, int | None]] | None = None) -> None:
        self._keys: list[OrderKey] = []
        self._by_key: dict[OrderKey, Event] = {}
        self.by_id: dict[str, Event] = {}
        self._baseline = baseline
        self._state: CirculationState | None = None
        self.refolds = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.by_id

    def __iter__(self) -> Iterator[Event]:
        return (self._by_key[k] for k in self._keys)

    def add(self, event: Event) -> bool:
        """Adds an event once; returns False for a duplicate."""
        if event.id in self.by_id:
            return False
        key = event.order_key
        at_end = not self._keys or key > self._keys[-1]
        self.by_id[event.id] = event
        self._by_key[key] = event
        if at_end:
            self._keys.append(key)
        else:
            bisect.insort(self._keys, key)
        if self._state is not None:
            if at_end and event.kind not in ("void", "resolve"):  # answers change what is voided
                apply_event(self._state, event)
            else:
                self._state = None
        return True

    def set_baseline(self, baseline: Mapping[str, tuple[str, int | None]] | None) -> None:
        self._baseline = baseline
        self._state = None

    @property
    def state(self) -> CirculationState:
        if self._state is None:
            self._state = fold(iter(self), self._baseline)
            self.refolds += 1
        return self._state
