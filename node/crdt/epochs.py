"""Epochs: which Automerge document carries the live log, decided from the seals a desk holds. Pure.

The journal holds every event; a document only carries events between desks. Left alone it would carry
all of history (an Automerge document never forgets a change), so the bridge now and then *seals* the
current one: a signed `seal {epoch, upto}` event. `upto` is the bridge's version vector when it sealed,
the seal included. Every desk that holds everything `upto` covers moves to the next epoch: a new, empty
document into which it puts its node record, and then what it writes from then on. Whatever a peer lacks
from before (covered by `upto` or not: written while the seal travelled, or on a desk cut off from it)
it asks for in journal runs (the bulk path, catchup.py).

Every desk picks the same epochs from the same seals: a seal opens epoch n+1 when it names n+1, was
written by a desk in epoch n (the seal that opened n is in its causal past), and `upto` is exactly its
causal past. Of several such seals (two bridges at once), the one that sorts first wins; a desk that moved
to another moves again. A seal that breaks these rules changes nothing: documents are transport, so no
event is lost whichever seal wins, and a forged one is refused before it gets here like any forged event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from node.crdt.event import Event

OrderKey = tuple[int, int, str, int]


@dataclass(frozen=True)
class EpochTag:
    """An epoch as a peer announces it: its number and the seal that opened it."""

    number: int
    seal: str


@dataclass(frozen=True)
class Epoch:
    number: int
    seal: str  # the id of the seal that opened it; "" for the first epoch
    upto: Mapping[str, int] = field(default_factory=dict)  # covered: travels in runs, not in this document
    key: OrderKey = (0, 0, "", 0)  # the seal's own (hlc, node, seq), as signed: ties between rival seals

    @property
    def tag(self) -> EpochTag:
        return EpochTag(self.number, self.seal)

    def covers(self, node: str, seq: int) -> bool:
        return seq <= self.upto.get(node, 0)


FIRST = Epoch(0, "")
FIRST_TAG = FIRST.tag


def seal_problem(event: Event) -> str | None:
    """Why a readable seal cannot open an epoch (None: it can). From the event alone."""
    upto = {n: s for n, s in event.body["upto"].items() if s > 0}
    past = {n: s for n, s in event.seen.items() if s > 0 and n != event.node}
    past[event.node] = event.seq
    if upto != past:
        return "its upto is not what its desk held when it sealed"
    return None


def _covered(upto: Mapping[str, int], vector: Mapping[str, int]) -> bool:
    return all(vector.get(n, 0) >= s for n, s in upto.items())


def _built_on(seal: Event, epoch: Epoch) -> bool:
    if not epoch.seal:
        return True
    node, _, seq = epoch.seal.partition(":")
    held: int = seal.body["upto"].get(node, 0)
    return held >= int(seq)


class Epochs:
    """The seals held, and the epochs entered. `advance(vector)` says where this desk should be now."""

    def __init__(self) -> None:
        self.entered: list[Epoch] = [FIRST]  # entered[n] opened epoch n
        self._seals: dict[int, dict[str, Event]] = {}  # epoch number -> seal id -> seal
        self.ignored: dict[str, str] = {}  # seal id -> why it opens nothing
        # Seals whose `upto` this desk did not hold at the last look: only a new seal, or one of these becoming
        # covered, can change the answer (advance runs after every event; seals pile up over the years).
        self._uncovered: list[Event] = []
        self._dirty = False

    @property
    def current(self) -> Epoch:
        return self.entered[-1]

    def offer(self, seal: Event) -> None:
        """A readable seal this desk now holds (its order key computed by the log)."""
        problem = seal_problem(seal)
        if problem is not None:
            self.ignored[seal.id] = problem
            return
        self._seals.setdefault(seal.body["epoch"], {})[seal.id] = seal
        self._dirty = True

    def advance(self, vector: Mapping[str, int]) -> Epoch:
        """The epoch this desk should be in, holding `vector`; entering it (and leaving a rival's epoch
        for the winner) as a side effect."""
        if not self._dirty and not any(_covered(s.body["upto"], vector) for s in self._uncovered):
            return self.current
        while self._step(vector):
            pass
        self._dirty = False
        self._uncovered = [s for seals in self._seals.values() for s in seals.values()
                           if not _covered(s.body["upto"], vector)]
        return self.current

    def _step(self, vector: Mapping[str, int]) -> bool:
        # A rival of an epoch already entered that sorts first takes its place (and ends the ones after it).
        for n in range(1, len(self.entered)):
            best = self._best(n, self.entered[n - 1], vector)
            if best is not None and best.key < self.entered[n].key:
                del self.entered[n:]
                self.entered.append(best)
                return True
        best = self._best(len(self.entered), self.current, vector)
        if best is None:
            return False
        self.entered.append(best)
        return True

    def _best(self, number: int, before: Epoch, vector: Mapping[str, int]) -> Epoch | None:
        candidates = [
            Epoch(number, s.id, dict(s.body["upto"]), s.order_key)
            for s in self._seals.get(number, {}).values()
            if _built_on(s, before) and _covered(s.body["upto"], vector)
        ]
        return min(candidates, key=lambda e: e.key, default=None)
