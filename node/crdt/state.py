"""Circulation state as a pure fold of the causally ordered log.

The fold never raises on what a peer sent: an event that verifies but cannot be read (its body out of
bounds, a kind from a newer version) or that a rule cannot fold is *quarantined*: counted, shown to the
admins as a conflict, never applied. Every desk decides that from the event alone, so all agree.

Same events in, same state out, on every node and whatever order they arrived in: the fold only ever
sees the events in the log's causal order (order.py). A `baseline` (loans the ILS reported before the outage, from
a snapshot) is optional: without it, a checkin of an item the log never lent is not a conflict, because
the item was most likely lent before the outage — only the ILS can tell.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Protocol

from node.crdt import conflicts as c
from node.crdt.clocks import ClockEvidence
from node.crdt.conflicts import Conflict
from node.crdt.event import DESK_KINDS, Event


@dataclass(frozen=True, slots=True)
class Loan:
    item: str
    patron: str
    due: int | None
    event: str | None  # None: known from the ILS baseline, not from the log
    node: str | None
    at: int | None

    def to_json(self) -> dict[str, object]:
        return {"item": self.item, "patron": self.patron, "due": self.due, "event": self.event,
                "node": self.node, "at": self.at}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the ILS answered for an event. Every answer ever recorded stays in the state (history too):
    slotted, and its words shared, it costs about 200 bytes."""

    status: str
    message: str
    term: int
    event: str  # the applied event's own id


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    """The newest ILS snapshot the log names (a `snapshot` event): its index chunk and its facts."""

    index: str
    version: int
    ils_time: int
    patrons: int
    items: int
    source: str
    event: str

    def newer_than(self, other: SnapshotRef | None) -> bool:
        """Newest by version (each refresh counts on from the newest the log names), then the ILS time it
        reflects, then event id: the same on every desk, whatever order the events came in. Not the time
        first: a bridge whose clock was once ahead would make every later refresh look older."""
        return other is None or (self.version, self.ils_time, self.event) > (other.version, other.ils_time, other.event)


@dataclass
class CirculationState:
    loans: dict[str, Loan] = field(default_factory=dict)
    returned: dict[str, str] = field(default_factory=dict)  # item -> id of the checkin that returned it
    payments: dict[str, Decimal] = field(default_factory=dict)
    in_house_uses: dict[str, int] = field(default_factory=dict)
    registrations: dict[str, str] = field(default_factory=dict)  # patron -> registering event
    conflicts: dict[str, Conflict] = field(default_factory=dict)
    settled: dict[str, str] = field(default_factory=dict)  # conflict id -> resolve event id
    voided: dict[str, str] = field(default_factory=dict)  # event id -> void event id
    away: dict[str, tuple[int, str]] = field(default_factory=dict)  # node -> (seq it had reached, away event)
    outcomes: dict[str, Outcome] = field(default_factory=dict)  # those not retired (see retire_outcomes)
    retired: dict[str, int] = field(default_factory=dict)  # status -> outcomes retired (not voided then)
    quarantined: dict[str, str] = field(default_factory=dict)  # event id -> why it cannot be read
    disputed: dict[str, tuple[str, ...]] = field(default_factory=dict)  # conflict -> disagreeing resolves
    clocks: ClockEvidence = field(default_factory=ClockEvidence)  # desks whose clocks the log shows ahead
    snapshot: SnapshotRef | None = None  # the newest snapshot of the ILS the desks share
    events_seen: int = 0
    _baseline_known: bool = False

    def loans_of(self, patron: str) -> list[Loan]:
        return [loan for loan in self.loans.values() if loan.patron == patron]

    def open_conflicts(self) -> list[Conflict]:
        return [k for k in self.conflicts.values() if k.id not in self.settled]


Lookup = Callable[[str], Event | None]  # an event folded earlier, by id (the clock rules read predecessors)


class Past(Protocol):
    """What the fold reads of the events before the one it applies: one of them by id (the clock rules read
    predecessors), and whether an event's outcome was retired (retire_outcomes: the ILS answered it, and that
    answer left memory with the history a fold base holds)."""

    def event(self, event_id: str) -> Event | None: ...

    def answered(self, target: str) -> bool: ...


class InMemory:
    """The past as a dict of the events folded so far, nothing retired (a fold of the whole log)."""

    def __init__(self, by_id: Mapping[str, Event]) -> None:
        self._by_id = by_id

    def event(self, event_id: str) -> Event | None:
        return self._by_id.get(event_id)

    def answered(self, target: str) -> bool:
        return False


def shared(text: str) -> str:
    """One copy of a short text many events repeat (the ILS's "Success."), kept once in memory."""
    return sys.intern(text) if len(text) <= 64 else text


def _conflict(state: CirculationState, conflict: Conflict) -> None:
    state.conflicts.setdefault(conflict.id, conflict)


def lent_before(loan: Loan, e: Event) -> bool:
    """Whether the writer of `e` held the checkout that made `loan` (read from the ids alone: the checkout
    may be long out of memory, folded into a checkpoint)."""
    node, _, seq = (loan.event or "").partition(":")
    if not seq.isdigit():
        return True
    return int(seq) < e.seq if node == e.node else e.seen.get(node, 0) >= int(seq)


def _checkout(state: CirculationState, e: Event) -> None:
    item, patron = e.body["item"], e.body["patron"]
    loan = Loan(item, patron, e.body.get("due"), e.id, e.node, e.at)
    current = state.loans.get(item)
    if current is not None and current.patron != patron:
        if current.event is None or lent_before(current, e):
            _conflict(state, c.make_conflict(
                c.LENT_WHILE_ON_LOAN, item=item, patrons=(current.patron, patron),
                events=tuple(x for x in (current.event, e.id) if x), needs_admin=not e.body.get("override"),
            ))
        else:
            _conflict(state, c.make_conflict(
                c.CONCURRENT_CHECKOUT, item=item, patrons=(current.patron, patron),
                events=(current.event, e.id), needs_admin=True,
            ))
    state.loans[item] = loan
    state.returned.pop(item, None)


def _checkin(state: CirculationState, e: Event) -> None:
    item = e.body["item"]
    if item in state.loans:
        del state.loans[item]
        state.returned[item] = e.id
        return
    earlier = state.returned.get(item)
    if earlier is not None or state._baseline_known:
        _conflict(state, c.make_conflict(
            c.CHECKIN_NOT_ON_LOAN, item=item, patrons=(),
            events=tuple(x for x in (earlier, e.id) if x), needs_admin=False,
        ))
    state.returned[item] = e.id


def _renew(state: CirculationState, e: Event) -> None:
    item = e.body["item"]
    current = state.loans.get(item)
    if current is not None:
        due = e.body.get("due", current.due)
        state.loans[item] = Loan(item, current.patron, due, current.event, current.node, current.at)
    elif item in state.returned or state._baseline_known:
        _conflict(state, c.make_conflict(
            c.RENEW_NOT_ON_LOAN, item=item, patrons=tuple(x for x in (e.body.get("patron"),) if x),
            events=tuple(x for x in (state.returned.get(item), e.id) if x), needs_admin=False,
        ))


def _payment(state: CirculationState, e: Event) -> None:
    patron = e.body["patron"]
    state.payments[patron] = state.payments.get(patron, Decimal(0)) + Decimal(e.body["amount"])


def _in_house_use(state: CirculationState, e: Event) -> None:
    item = e.body["item"]
    state.in_house_uses[item] = state.in_house_uses.get(item, 0) + 1


def _register(state: CirculationState, e: Event) -> None:
    patron = e.body["patron"]
    first = state.registrations.get(patron)
    if first is not None:
        _conflict(state, c.make_conflict(
            c.DUPLICATE_REGISTRATION, item=None, patrons=(patron,), events=(first, e.id), needs_admin=True,
        ))
    else:
        state.registrations[patron] = e.id


def _revoke(state: CirculationState, e: Event) -> None:
    """Nothing to fold: which desks are revoked is the log's to keep (node/revocation.py says why)."""


def _away(state: CirculationState, e: Event) -> None:
    state.away[e.body["node"]] = (e.body["upto"], e.id)


def _applied(state: CirculationState, e: Event) -> None:
    target = e.body["event"]
    if target not in state.outcomes:
        state.outcomes[target] = Outcome(sys.intern(e.body["status"]), shared(e.body["message"]), e.body["term"],
                                         e.id)
        if e.body["status"] == "refused":
            _registration_refused(state, target, e.body["message"])


def _registration_refused(state: CirculationState, target: str, why: str) -> None:
    """The ILS would not create a patron registered at a desk: their loans must not go up until an admin
    says (the card may be another patron's at the ILS: Koha would lend to that account)."""
    patron = next((p for p, registered in state.registrations.items() if registered == target), None)
    if patron is not None:
        _conflict(state, c.make_conflict(c.REGISTRATION_REFUSED, item=None, patrons=(patron,), events=(target,),
                                         needs_admin=True, reason=shared(why[:300])))


def _seal(state: CirculationState, e: Event) -> None:
    """A seal changes how events travel (epochs.py), not what they mean."""


def _snapshot(state: CirculationState, e: Event) -> None:
    b = e.body
    ref = SnapshotRef(b["index"], b["version"], b["ils_time"], b["patrons"], b["items"], shared(b["source"]), e.id)
    if ref.newer_than(state.snapshot):
        state.snapshot = ref


_RULES = {
    "checkout": _checkout,
    "checkin": _checkin,
    "renew": _renew,
    "payment": _payment,
    "in_house_use": _in_house_use,
    "patron_register": _register,
    "revoke": _revoke,
    "away": _away,
    "applied": _applied,
    "seal": _seal,
    "snapshot": _snapshot,
}


@dataclass(frozen=True)
class Settlements:
    """What the admins' answers add up to: the voids they imply, the conflicts they settle, and the
    conflicts whose answers disagree (neither answer takes effect until an admin picks one)."""

    voided: dict[str, str]
    settled: dict[str, str]
    disputed: dict[str, tuple[str, ...]]


def _answer(e: Event) -> tuple[str, str | None]:
    return (e.body["action"], e.body.get("event"))


def settlements_in(events: list[Event]) -> Settlements:
    """Voids apply wherever they sit in the order. An admin's answer to a conflict (`resolve`) stands
    unless another admin, not having seen it, answered differently: a later answer that has seen both
    settles it. `events` must be in causal order."""
    voided: dict[str, str] = {}
    answers: dict[str, list[Event]] = {}
    for e in events:
        if e.problem is not None:
            continue
        if e.kind == "void":
            voided.setdefault(e.body["event"], e.id)
        elif e.kind == "resolve":
            answers.setdefault(e.body["conflict"], []).append(e)
    settled: dict[str, str] = {}
    disputed: dict[str, tuple[str, ...]] = {}
    for conflict, given in answers.items():
        latest = [r for r in given if not any(r is not o and r.happened_before(o) for o in given)]
        if len({_answer(r) for r in latest}) > 1:
            disputed[conflict] = tuple(r.id for r in latest)
            continue
        chosen = latest[0]
        settled[conflict] = chosen.id
        action, kept = _answer(chosen)
        named = c.events_of(conflict)
        if action == "void" and kept in named:
            voided.setdefault(kept, chosen.id)
        elif action == "keep" and kept in named:
            for other in named:
                if other != kept:
                    voided.setdefault(other, chosen.id)
    return Settlements(voided, settled, disputed)


def voids_in(events: list[Event]) -> dict[str, str]:
    return settlements_in(events).voided


def _quarantine(state: CirculationState, event: Event, reason: str) -> None:
    state.quarantined[event.id] = reason
    _conflict(state, c.make_conflict(c.UNREADABLE_EVENT, item=None, patrons=(), events=(event.id,),
                                     needs_admin=True, reason=reason))


def apply_event(state: CirculationState, event: Event, past: Past) -> None:
    """Folds one more event, which must sort after every event folded so far. Never raises. `past` finds
    events folded before this one (in memory, or in the journal for those a checkpoint holds)."""
    state.events_seen += 1
    if event.problem is None:
        state.clocks.take(event, past.event, state.conflicts)  # a voided scan still shows its desk's clock
    if event.id in state.voided:
        return
    if event.problem is not None:
        _quarantine(state, event, event.problem)
        return
    if event.kind == "resolve" and state.settled.get(event.body["conflict"]) == event.id:
        state.clocks.settled(event.body["conflict"])  # an acknowledged clock: only later events count
    if event.kind in ("void", "resolve"):  # taken into account before the fold (settlements_in)
        return
    if event.kind == "applied" and past.answered(event.body["event"]):  # the first answer stands, retired or not
        return
    rule = _RULES.get(event.kind)
    if rule is None:  # pragma: no cover - body_problem already refuses unknown kinds
        _quarantine(state, event, f"no rule folds {event.kind!r} events")
        return
    try:
        rule(state, event)
    except Exception as e:  # a rule must never stop the desk; every desk fails the same way on it
        _quarantine(state, event, f"could not be folded ({type(e).__name__})")


def _disputes(state: CirculationState) -> None:
    for conflict, answers in state.disputed.items():
        about = state.conflicts.get(conflict)
        _conflict(state, c.make_conflict(
            c.RESOLUTIONS_DISAGREE, item=about.item if about else None, patrons=about.patrons if about else (),
            events=answers, needs_admin=True, about=conflict,
        ))


def begin_fold(events: list[Event], baseline: Mapping[str, tuple[str, int | None]] | None = None
               ) -> CirculationState:
    """The state before the first of `events` (the whole log, in order) is applied: what the admins' answers
    settle and void, and the baseline's loans. `fold` = this, `apply_event` for each event, `end_fold`."""
    return begin_with(settlements_in(events), baseline)


def begin_with(answers: Settlements, baseline: Mapping[str, tuple[str, int | None]] | None = None
               ) -> CirculationState:
    """The state before the first event is applied, the admins' answers (all of them) being `answers`."""
    state = CirculationState(voided=dict(answers.voided), settled=dict(answers.settled),
                             disputed=dict(answers.disputed), _baseline_known=baseline is not None)
    for item, (patron, due) in (baseline or {}).items():
        state.loans[item] = Loan(item, patron, due, None, None, None)
    return state


def end_fold(state: CirculationState) -> None:
    """What is added once every event is applied: the conflicts of disagreeing answers."""
    _disputes(state)


def fold(
    ordered: Iterable[Event], baseline: Mapping[str, tuple[str, int | None]] | None = None
) -> CirculationState:
    """The state of the log. `ordered` must be in the log's order (order.py); voids apply wherever they sit."""
    events = list(ordered)
    state = begin_fold(events, baseline)
    by_id: dict[str, Event] = {}
    past = InMemory(by_id)
    for event in events:
        apply_event(state, event, past)
        by_id[event.id] = event
    end_fold(state)
    return state


def answered(state: CirculationState, past: Past, event_id: str) -> bool:
    """Whether the ILS answered the event: an outcome in the state, or one retired with the history."""
    return event_id in state.outcomes or past.answered(event_id)


def open_work(event: Event, voided: Mapping[str, str], answered: Callable[[str], bool]) -> bool:
    """A desk event the ILS must still be given: readable, not voided, not answered (the bridge uploads these;
    the fold's base keeps them in memory)."""
    return event.problem is None and event.kind in DESK_KINDS and event.id not in voided and not answered(event.id)


def retire_outcomes(state: CirculationState) -> None:
    """Outcomes leave the state, counted by status (a voided event's not counted): a fold base does this to
    what it holds, since every outcome ever recorded is history a busy desk need not keep in memory. Whether
    an event was answered is then read from the journal (Past.answered)."""
    for target, outcome in state.outcomes.items():
        if target not in state.voided:
            state.retired[outcome.status] = state.retired.get(outcome.status, 0) + 1
    state.outcomes = {}


def copy_state(state: CirculationState) -> CirculationState:
    """A copy that applying events to never changes `state` (a checkpoint of the fold, order.py). Every dict
    is copied (their values are immutable, or never changed once stored), the clock evidence deeply."""
    copied = copy.copy(state)
    for f in fields(state):
        value = getattr(state, f.name)
        if isinstance(value, dict):
            setattr(copied, f.name, dict(value))
    copied.clocks = state.clocks.copy()
    return copied
