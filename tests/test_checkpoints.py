"""The fold resumed from a checkpoint (order.py) is exactly the fold of the whole log, whatever the arrival order."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crdt import checkpoint
from node.crdt.clocks import FLAG_MS
from node.crdt.event import Event
from node.crdt.order import OrderedLog, predecessors
from node.crdt.state import InMemory, Outcome, apply_event, begin_fold, copy_state, fold
from tests.factories import DUE, SimDesk

ITEMS = ["I1", "I2", "I3"]
PATRONS = ["P1", "P2", "P3"]

steps = st.lists(
    st.tuples(
        st.integers(0, 3),  # desk (3: the one that answers conflicts most, but any desk may)
        st.sampled_from(["checkout", "checkout", "checkout", "checkin", "renew", "in_house_use", "patron_register",
                         "void", "resolve", "resolve", "resolve", "sync", "sync", "sync", "tick", "applied",
                         "applied"]),
        st.sampled_from(ITEMS),
        st.sampled_from(PATRONS),
        st.integers(0, 3),  # sync target
        st.integers(0, 10_000),  # which event / conflict / answer; ms the clocks move on
    ),
    min_size=10,
    max_size=80,
)


def simulate(skews: list[int], script: list[tuple[int, str, str, str, int, int]]) -> list[Event]:
    desks = [SimDesk(now=SimDesk().now + s) for s in skews]
    written: list[Event] = []
    for d, action, item, patron, target, pick in script:
        desk, other = desks[d % len(desks)], desks[target % len(desks)]
        if action == "sync":
            if desk is not other:
                for e in list(desk.known.values()):
                    other.receive(e)
            continue
        if action == "tick":
            for x in desks:
                x.now += pick % 3_000
            continue
        if action == "void":
            known = sorted(desk.known)
            if not known:
                continue
            event = desk.write("void", event=known[pick % len(known)])
        elif action == "resolve":
            conflicts = sorted(desk.log.state.conflicts.values(), key=lambda k: k.id)
            if not conflicts:
                continue
            conflict = conflicts[pick % len(conflicts)]
            answer = ["keep", "void", "accept_ils"][pick // 7 % 3]
            named = conflict.events[pick // 21 % len(conflict.events)] if conflict.events else None
            if answer == "accept_ils" or named is None:
                event = desk.write("resolve", conflict=conflict.id, action="accept_ils")
            else:
                event = desk.write("resolve", conflict=conflict.id, action=answer, event=named)
        elif action == "applied":  # the bridge's answer (a second one for the same event: a double bridge)
            scans = sorted(i for i, e in desk.known.items() if e.kind in ("checkout", "checkin", "renew"))
            if not scans:
                continue
            event = desk.write("applied", event=scans[pick % len(scans)], status=["applied", "refused"][pick % 2],
                               message=f"answer {pick % 3}", term=1)
        elif action == "checkout":
            event = desk.write("checkout", patron=patron, item=item, due=DUE)
        elif action == "renew":
            event = desk.write("renew", item=item, due=DUE + 86_400_000)
        elif action == "patron_register":
            event = desk.write("patron_register", patron=patron, name="Ann")
        else:
            event = desk.write(action, item=item)
        written.append(event)
        desk.now += 1 + pick % 50
    return written


def causal_arrival(events: list[Event], rng: random.Random) -> list[Event]:
    """A random order in which every event comes after its predecessors (as Automerge delivers them)."""
    by_ref = {(e.node, e.seq): e for e in events}
    left = dict(by_ref)
    out: list[Event] = []
    while left:
        ready = [e for e in left.values() if not any(p in left for p in predecessors(e))]
        e = rng.choice(ready)
        out.append(e)
        del left[(e.node, e.seq)]
    return out


def same_as_full_fold(log: OrderedLog, baseline: dict[str, tuple[str, int | None]] | None) -> None:
    state = log.state
    expected = fold(iter(log), baseline)
    assert state == expected
    if not expected.disputed:  # folded at the end after end_fold, a later conflict lists after a dispute's
        assert state.open_conflicts() == expected.open_conflicts()  # in the same order, too


@settings(max_examples=400, deadline=None)
@given(skews=st.lists(st.integers(-2_000, 2_000) | st.sampled_from([FLAG_MS + 5_000, 3 * FLAG_MS]),
                      min_size=4, max_size=4), script=steps,
       every=st.integers(1, 6), kept=st.integers(1, 4), seed=st.integers(),
       baseline=st.sampled_from([None, {}, {"I1": ("P3", None)}]), shuffled=st.booleans(),
       read_every=st.integers(1, 4))
def test_the_checkpointed_state_is_the_fold_of_the_whole_log(
    skews, script, every, kept, seed, baseline, shuffled, read_every
) -> None:
    written = simulate(skews, script)
    rng = random.Random(seed)
    if shuffled:  # not even causal: missing predecessors, restamps
        arrival = list(written)
        rng.shuffle(arrival)
    else:
        arrival = causal_arrival(written, rng)
    log = OrderedLog(baseline, checkpoint_every=every, checkpoints_kept=kept)
    for i, e in enumerate(arrival):
        log.add(e)
        if i % read_every == 0 or rng.random() < 0.3:
            same_as_full_fold(log, baseline)
    same_as_full_fold(log, baseline)
    assert len(log._checkpoints) <= kept


def test_a_concurrent_event_resumes_from_a_checkpoint_that_stays_unchanged() -> None:
    a, b = SimDesk(), SimDesk()
    log = OrderedLog(checkpoint_every=10, checkpoints_kept=2)
    late = []
    assert log.state.loans == {}  # from here on, events at the end are folded as they come
    for i in range(60):
        log.add(a.write("checkout", patron=f"P{i % 3}", item=f"I{i % 7}", due=DUE))
        a.now += 10
        if i % 20 == 5:
            late.append(b.write("checkin", item=f"I{i % 7}"))  # b's clock: behind a's, so it sorts earlier
            b.now += 1
    assert log.refolds == 1 and len(log._checkpoints) == 2
    before = [(key, copy_state(cp)) for key, cp in log._checkpoints]
    first, second = log._checkpoints
    log.add(a.write("renew", item="I1", due=DUE))
    b.now = a.now - 5  # b's next scan sorts just before a's latest
    log.add(b.write("checkout", patron="P9", item="I2", due=DUE))
    assert log.state == fold(iter(log)) and log.resumes == 1 and log.refolds == 1
    assert log._checkpoints[:2] == [first, second]  # both precede the late event: kept, and not mutated
    assert [(key, cp) for key, cp in log._checkpoints[:2]] == before
    for e in late:  # sorting before every checkpoint: a full refold
        log.add(e)
    assert log.state == fold(iter(log)) and log.refolds == 2


def test_a_void_refolds_from_the_start() -> None:
    a = SimDesk()
    log = OrderedLog(checkpoint_every=5)
    events = [a.write("checkout", patron="P1", item=f"I{i}", due=DUE) for i in range(20)]
    for e in events:
        log.add(e)
        assert log.state.loans
    assert log._checkpoints
    log.add(a.write("void", event=events[3].id))
    assert not log._checkpoints
    assert log.state == fold(iter(log)) and "I3" not in log.state.loans and log.refolds == 2


class Journal:
    """History as the journal keeps it: every event added, with the order key the log gave it (and gives it
    again after a restamp: the event log writes those back)."""

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}
        self.keys: dict[str, tuple[int, int, str, int]] = {}

    def take(self, log: OrderedLog, event: Event) -> None:
        self.events[event.id] = event
        self.keys.update(log._key_of)

    def event(self, event_id: str) -> Event | None:
        return self.events.get(event_id)

    def key(self, event_id: str) -> tuple[int, int, str, int] | None:
        return self.keys.get(event_id)

    def upto(self, key):
        return sorted((k, self.events[i]) for i, k in self.keys.items() if k <= key)

    def answer(self, target, upto, voided):
        for _, e in self.upto(upto):
            if e.kind == "applied" and e.problem is None and e.body["event"] == target and e.id not in voided:
                return e
        return None


def observed(log: OrderedLog, journal: Journal) -> tuple:
    """The state as every reader sees it: outcomes retired with the history read back from it."""
    state = log.state
    outcomes = dict(state.outcomes)
    for e in journal.events.values():
        target = e.body.get("event") if e.kind == "applied" else None
        if target and target not in outcomes and (answer := log.answer(target)) is not None:
            outcomes[target] = Outcome(answer.body["status"], answer.body["message"], answer.body["term"], answer.id)
    counted = Counter(state.retired)
    counted.update(o.status for t, o in state.outcomes.items() if t not in state.voided)
    return replace(state, outcomes={}, retired={}), outcomes, +counted


def expected(whole: OrderedLog) -> tuple:
    state = whole.state
    counted = Counter(o.status for t, o in state.outcomes.items() if t not in state.voided)
    return replace(state, outcomes={}, retired={}), state.outcomes, +counted


@settings(max_examples=300, deadline=None)
@given(skews=st.lists(st.integers(-2_000, 2_000) | st.sampled_from([FLAG_MS + 5_000, 3 * FLAG_MS]),
                      min_size=4, max_size=4), script=steps, every=st.integers(1, 6), seed=st.integers(),
       shuffled=st.booleans(), advance_every=st.integers(1, 8))
def test_a_log_with_a_base_out_of_memory_folds_what_the_whole_log_folds(
    skews, script, every, seed, shuffled, advance_every
) -> None:
    """Bases taken at random points, events before them leaving memory (some kept, as open work is), late
    events and answers sorting before the base: the state is always the fold of every event, in order."""
    written = simulate(skews, script)
    rng = random.Random(seed)
    arrival = list(written)
    if shuffled:
        rng.shuffle(arrival)
    else:
        arrival = causal_arrival(written, rng)
    journal = Journal()
    log = OrderedLog(checkpoint_every=every, history=journal)
    whole = OrderedLog()
    for i, e in enumerate(arrival):
        log.add(e)
        whole.add(e)
        journal.take(log, e)
        if i % advance_every == 0:
            keys = sorted(log._key_of.values())
            if keys:
                log.advance_base(rng.choice(keys), lambda ev: rng.random() < 0.2)
        if rng.random() < 0.3:
            assert observed(log, journal) == expected(whole)
    assert observed(log, journal) == expected(whole)
    assert log.state.open_conflicts() == whole.state.open_conflicts() or whole.state.disputed


@settings(max_examples=150, deadline=None)
@given(skews=st.lists(st.integers(-2_000, 2_000) | st.sampled_from([FLAG_MS + 5_000, 3 * FLAG_MS]),
                      min_size=4, max_size=4), script=steps, cut=st.floats(0, 1))
def test_a_checkpoint_reads_back_as_the_state_it_saved(skews, script, cut) -> None:
    """Saved at any point of any log (loans, conflicts, clocks flagged, answers, quarantine), read back equal,
    and folding on from it gives what folding on from the original gives."""
    written = simulate(skews, script)
    whole = OrderedLog()
    for e in written:
        whole.add(e)
    events = list(whole)
    at = int(cut * len(events))
    state = begin_fold(events)
    by_id: dict[str, Event] = {}
    past = InMemory(by_id)
    for e in events[:at]:
        apply_event(state, e, past)
        by_id[e.id] = e
    key = whole.key_of(events[at - 1].id) if at else (0, 0, "", 0)
    read_key, read = checkpoint.decode(checkpoint.encode(key, state))
    assert read_key == key and read == state
    for e in events[at:]:
        apply_event(state, e, past)
        apply_event(read, e, past)
        by_id[e.id] = e
    assert read == state


def test_a_checkpoint_from_elsewhere_is_refused() -> None:
    for data in (b"", b"\xc1", checkpoint.encode((0, 0, "", 0), fold([]))[:-3], b"\x81\xa1v\x63"):
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.decode(data)
