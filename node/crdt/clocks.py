"""Which desk's clock runs ahead, as the log itself shows it. Pure: no I/O, no clock.

Evidence: when event y of desk v directly follows event x of desk u (y's writer held x: `y.seen[u]` names
x), x was written before y, so u's clock reads at least `x.at - y.at` later than v's. Delivery delays only
make that bound smaller, so it never overstates; but it does not say which of the two is wrong, u ahead or
v behind. A desk is called ahead by the *lower median* of its bounds over the desks it has such evidence
with: it must be ahead of at least half of them. With three desks and one an hour ahead, the fast one is
ahead of both others and each correct one is behind the fast one and level with the other, so only the
fast one is named; a desk an hour *behind* makes nobody look ahead once its partners have a third desk to
compare with. (With two desks only, the one reading later is named: nothing better can be known.)

Every desk folds the same events in the same order, so every desk computes the same bounds and names the
same desk in the same conflict. `at` of an imported offline file's operation is the file's time, not a desk
clock's: such events are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from node.crdt.conflicts import CLOCK_AHEAD, Conflict, conflict_id
from node.crdt.event import Event
from node.crdt.hlc import DEFAULT_MAX_DRIFT_MS

# The log's flag uses one bound on every desk (unlike a desk's own --max-clock-drift, which only bounds its
# own clock): conflicts must be the same everywhere.
FLAG_MS = DEFAULT_MAX_DRIFT_MS


@dataclass(frozen=True)
class Bound:
    ms: int  # the desk's clock reads at least this much later than the other desk's…
    ahead: str  # …because this event of the desk…
    behind: str  # …was held by the writer of this later event of the other desk, whose clock read ms earlier


@dataclass
class ClockEvidence:
    bounds: dict[str, dict[str, Bound]] = field(default_factory=dict)  # desk -> other desk -> largest bound
    flagged: dict[str, Conflict] = field(default_factory=dict)  # desk -> its open clock_ahead conflict
    folded: dict[str, int] = field(default_factory=dict)  # desk -> its latest event folded so far
    acknowledged: dict[str, int] = field(default_factory=dict)  # desk -> its latest event when acknowledged

    def copy(self) -> ClockEvidence:
        """A copy that taking events into never changes this one (values are immutable; `bounds` is nested)."""
        return ClockEvidence({node: dict(theirs) for node, theirs in self.bounds.items()}, dict(self.flagged),
                             dict(self.folded), dict(self.acknowledged))

    def take(self, event: Event, lookup: Callable[[str], Event | None], conflicts: dict[str, Conflict]) -> None:
        """Folds in what `event` shows, opening, raising or withdrawing clock conflicts in `conflicts`: one per
        desk, its id built from the desk's event that first showed it ahead, its offset the latest estimate.
        A conflict is withdrawn when later evidence no longer shows the desk ahead of half of its partners
        (with only one partner so far, the one reading later was named; a third desk can clear it)."""
        for node in self._observe(event, lookup):
            bound = self.ahead_by(node)
            known = self.flagged.get(node)
            if bound is None or bound.ms <= FLAG_MS:
                if known is not None:
                    del self.flagged[node], conflicts[known.id]
                continue
            if known is None:
                known = Conflict(conflict_id(CLOCK_AHEAD, (bound.ahead,)), CLOCK_AHEAD, None, (),
                                 (bound.ahead, bound.behind), needs_admin=False, node=node, offset_ms=bound.ms)
            elif bound.ms != known.offset_ms:
                known = replace(known, offset_ms=bound.ms)
            self.flagged[node] = conflicts[known.id] = known

    def settled(self, conflict: str) -> None:
        """An admin acknowledged a clock conflict: only the desk's later events count as evidence from now
        on, so a clock still (or again) ahead opens a new conflict, named after one of them."""
        for node, known in list(self.flagged.items()):
            if known.id == conflict:
                del self.flagged[node]
                self.bounds.pop(node, None)
                self.acknowledged[node] = self.folded.get(node, 0)

    def _observe(self, event: Event, lookup: Callable[[str], Event | None]) -> list[str]:
        """Takes in what `event` shows about the desks it follows; returns those whose bounds changed."""
        self.folded[event.node] = event.seq
        if "imported" in event.body:
            return []
        prev = lookup(f"{event.node}:{event.seq - 1}") if event.seq > 1 else None
        held = prev.seen if prev is not None else {}
        changed: list[str] = []
        if event.seen == held:
            return changed
        for node, seq in event.seen.items():
            if seq <= held.get(node, 0) or node == event.node or seq <= self.acknowledged.get(node, 0):
                continue  # only what the writer received since its previous event is new evidence
            earlier = lookup(f"{node}:{seq}")
            if earlier is None or earlier.problem is not None or "imported" in earlier.body:
                continue
            gap = earlier.at - event.at
            theirs = self.bounds.setdefault(node, {})
            old = theirs.get(event.node)
            if old is None or gap > old.ms:
                theirs[event.node] = Bound(gap, earlier.id, event.id)
                changed.append(node)
        return changed

    def ahead_by(self, node: str) -> Bound | None:
        """How far `node`'s clock reads ahead of at least half of the desks the log compares it with."""
        theirs = self.bounds.get(node)
        if not theirs:
            return None
        ordered = sorted(theirs.values(), key=lambda b: (b.ms, b.behind))
        return ordered[(len(ordered) - 1) // 2]
