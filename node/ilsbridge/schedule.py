"""Which events may go to the ILS now, and in what order. Pure: no I/O, no clock.

Every pending event waits in one FIFO queue per item and per patron it touches, in causal order. An
event is ready when it heads all its queues: events on the same item or patron never overtake each other,
while events on unrelated items and patrons go in parallel. An event held back (it is part of a conflict
an admin must settle first) keeps heading its queues, so everything after it on the same item or patron
waits too, and the rest of the log goes on.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from node.crdt import conflicts
from node.crdt.event import Event
from node.crdt.state import CirculationState, Loan, lent_before, open_work


def keys_of(event: Event) -> tuple[str, ...]:
    body = event.body
    keys = []
    if body.get("item"):
        keys.append("item:" + body["item"])
    if body.get("patron"):
        keys.append("patron:" + body["patron"])
    return tuple(keys)


def pending_events(ordered: Iterable[Event], state: CirculationState, answered: Callable[[str], bool]
                   ) -> list[Event]:
    """Desk events, in causal order, that are neither voided nor answered by the ILS yet (`answered`: the
    state's outcomes, and those retired with the history)."""
    return [e for e in ordered if open_work(e, state.voided, answered)]


def renewal_patrons(ordered: Iterable[Event], voided: Mapping[str, str], before: Mapping[str, Loan] | None = None
                    ) -> dict[str, str | None]:
    """For each renewal that names no patron, whose loan it renews as the log tells, or None.

    A desk renews the loan it can see: the latest checkout of the item (or renewal naming a patron) among
    the events its writer had when it scanned (happened-before, not merely earlier in the order: a
    concurrent checkout at a desk it could not reach is not the loan it meant). A checkin among those,
    later than the checkout, means the log knows no loan. Voided events do not count. `before`: the loans
    as the fold's base holds them, for items with none of those events in `ordered` (history out of memory).
    Pure, one pass."""
    history: dict[str, list[Event]] = {}  # item -> its checkouts, checkins and patron-naming renewals, in order
    patrons: dict[str, str | None] = {}
    for event in ordered:
        item = event.body.get("item")
        if event.kind not in ("checkout", "checkin", "renew") or not item or event.id in voided:
            continue
        if event.kind == "renew" and not event.body.get("patron"):
            known = [e for e in reversed(history.get(item, ())) if e.happened_before(event)]
            if known:
                patrons[event.id] = known[0].body.get("patron")  # a checkin names none
            else:
                loan = (before or {}).get(item)
                patrons[event.id] = loan.patron if loan is not None and lent_before(loan, event) else None
            continue
        history.setdefault(item, []).append(event)
    return patrons


def held_events(state: CirculationState, pending: Iterable[Event] = ()) -> set[str]:
    """Events in an open conflict that an admin must settle before upload, and every pending event of a
    patron the ILS would not create (until an admin says the patron exists at the ILS now)."""
    held = {event_id for c in state.open_conflicts() if c.needs_admin for event_id in c.events}
    refused = {p for c in state.open_conflicts() if c.kind == conflicts.REGISTRATION_REFUSED for p in c.patrons}
    if refused:
        held |= {e.id for e in pending if e.body.get("patron") in refused}
    return held


class UploadSchedule:
    def __init__(self, events: Iterable[Event], held: set[str] | None = None) -> None:
        """`events` in causal order: the earliest ready one goes first."""
        self._queues: dict[str, deque[str]] = {}
        self._events: dict[str, Event] = {}
        self._rank: dict[str, int] = {}
        self._held = set(held or ())
        self._ready: list[tuple[int, str]] = []
        self._started: set[str] = set()
        for rank, event in enumerate(events):
            self._events[event.id] = event
            self._rank[event.id] = rank
            for key in keys_of(event):
                self._queues.setdefault(key, deque()).append(event.id)
        for event_id in self._events:
            self._consider(event_id)

    def __len__(self) -> int:
        return len(self._events)

    def _consider(self, event_id: str) -> None:
        if event_id in self._started or event_id in self._held:
            return
        event = self._events[event_id]
        if all(self._queues[k][0] == event_id for k in keys_of(event)):
            heapq.heappush(self._ready, (self._rank[event_id], event_id))
            self._started.add(event_id)

    def take(self) -> Event | None:
        """The earliest ready event, or None if every remaining one waits for another or is held."""
        if not self._ready:
            return None
        _, event_id = heapq.heappop(self._ready)
        return self._events[event_id]

    def done(self, event_id: str) -> None:
        """The ILS answered `event_id` for good (applied or refused): its successors may go."""
        event = self._events.pop(event_id)
        for key in keys_of(event):
            queue = self._queues[key]
            queue.popleft()  # only a ready event is taken, and a ready event heads all its queues
            if queue:
                self._consider(queue[0])
            else:
                del self._queues[key]

    def hold_patron(self, patron: str) -> None:
        """The ILS would not create this patron: nothing more of theirs goes in this round (held_events holds
        it in the next ones, while the conflict is open). Events already taken are not recalled."""
        self._held |= {eid for eid, e in self._events.items() if e.body.get("patron") == patron
                       and eid not in self._started}

    def retry(self, event_id: str) -> None:
        """The ILS could not answer now: the event goes back to the front of the line."""
        heapq.heappush(self._ready, (self._rank[event_id], event_id))

    @property
    def remaining(self) -> int:
        return len(self._events)

    @property
    def held(self) -> int:
        return len(self._held & set(self._events))
