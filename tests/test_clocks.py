"""Clocks that are off (issue 8), as pure logic: a desk far ahead neither breaks the causal order nor drags
the other desks' clocks, every desk orders the same events the same way, the log itself names the desk that
is ahead, and the ILS gets its times corrected — never a checkin dated before the loan it ends."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crdt import conflicts as c
from node.crdt.clocks import FLAG_MS
from node.crdt.event import Event
from node.crdt.hlc import DEFAULT_MAX_DRIFT_MS, Hlc, HybridClock
from node.crdt.order import OrderedLog, causal_sequence, predecessors
from node.crdt.state import CirculationState
from node.ilsbridge.mapping import ils_times, operation_of
from tests.factories import DUE, SimDesk

MAX = DEFAULT_MAX_DRIFT_MS
HOUR = 3_600_000
BASE = 1_700_000_000_000
ITEMS = ["I1", "I2", "I3"]


def summary(state: CirculationState) -> tuple:
    return (
        sorted((k, v.patron, v.event) for k, v in state.loans.items()),
        sorted((k.id, k.offset_ms) for k in state.conflicts.values()),
        sorted(state.settled.items()),
        sorted(state.returned.items()),
    )


def ordered(events: list[Event]) -> OrderedLog:
    log = OrderedLog()
    for e in events:
        log.add(e)
    return log


steps = st.lists(
    st.tuples(
        st.integers(0, 3),  # desk
        st.sampled_from(["checkout", "checkin", "sync", "sync", "tick"]),
        st.sampled_from(ITEMS),
        st.integers(0, 3),  # sync target
        st.integers(0, 5_000),  # ms every clock moves on
    ),
    max_size=50,
)


def simulate(skews: list[int], script, check=lambda desks: None) -> tuple[list[SimDesk], list[Event]]:
    """Desks whose physical clocks are `skews` ms off run `script`; `check(desks)` runs after every step."""
    desks = [SimDesk(now=BASE + s, max_drift=MAX) for s in skews]
    written: list[Event] = []
    for d, action, item, target, advance in script:
        desk, other = desks[d % len(desks)], desks[target % len(desks)]
        if action == "sync" and desk is not other:
            for e in list(desk.known.values()):  # in the order `desk` learned them: causal, as Automerge delivers
                other.receive(e)
        elif action == "tick":
            for x in desks:
                x.now += advance
        elif action == "checkout":
            written.append(desk.write("checkout", patron=f"P{d}", item=item, due=DUE))
        else:
            written.append(desk.write("checkin", item=item))
        check(desks)
    return desks, written


skews_with_one_far_ahead = st.tuples(
    st.integers(MAX + 1, 6 * HOUR),  # desk 0: far ahead
    st.lists(st.integers(-1_000, 1_000), min_size=1, max_size=3),  # the others: right to within a second
).map(lambda t: [t[0], *t[1]])


@settings(max_examples=200, deadline=None)
@given(skews=st.lists(st.integers(-3 * HOUR, 3 * HOUR), min_size=2, max_size=4), script=steps, seed=st.integers())
def test_the_order_never_contradicts_happened_before_whatever_the_clocks(skews, script, seed) -> None:
    desks, written = simulate(skews, script)
    knew = {e_id: k for d in desks for e_id, k in d.knew_at.items()}
    arrival = list(written)
    random.Random(seed).shuffle(arrival)  # not even causal: a missing predecessor is stamped again later
    log = ordered(arrival)
    for y in written:
        for x in written:
            if x is not y and x.id in knew[y.id]:
                assert log.key_of(x.id) < log.key_of(y.id)
                assert x.happened_before(y)
            elif x is not y:
                assert not x.happened_before(y)


@settings(max_examples=150, deadline=None)
@given(skews=skews_with_one_far_ahead, script=steps, data=st.data())
def test_every_arrival_order_gives_the_same_order_and_state(skews, script, data) -> None:
    _, written = simulate(skews, script)
    reference = ordered(written)  # written in real time: a causal arrival order
    expected = [e.id for e in reference]
    for _ in range(3):
        arrival = data.draw(st.permutations(written + data.draw(st.lists(st.sampled_from(written), max_size=5))
                                            if written else []))
        log = OrderedLog()
        for i, e in enumerate(arrival):
            log.add(e)
            if i % 4 == 0 and data.draw(st.booleans()):
                _ = log.state  # folds incrementally from here on
        assert [e.id for e in log] == expected
        assert all(log.key_of(e.id) == reference.key_of(e.id) for e in written)  # the journal keeps them
        assert summary(log.state) == summary(reference.state)
        causal = causal_sequence(arrival)  # what the event log integrates a batch or its journal in
        assert [e.id for e in ordered(causal)] == expected and ordered(causal).restamps == 0


@settings(max_examples=200, deadline=None)
@given(skews=skews_with_one_far_ahead, script=steps)
def test_a_desk_far_ahead_never_moves_another_desks_clock_more_than_the_bound_past_its_own(skews, script) -> None:
    def bounded(desks: list[SimDesk]) -> None:
        for d in desks[1:]:
            assert d.clock.last.wall <= d.now + MAX

    desks, written = simulate(skews, script, bounded)
    for e in written:
        if e.node != desks[0].node:
            writer = next(d for d in desks if d.node == e.node)
            assert e.hlc.wall <= e.at + MAX and e.at <= writer.now


@settings(max_examples=150, deadline=None)
@given(skews=st.tuples(st.integers(0, 6 * HOUR), st.lists(st.integers(0, 1_000), min_size=1, max_size=3))
       .map(lambda t: [t[0], *t[1]]), script=steps)
def test_a_desk_whose_clock_is_right_is_never_named_while_no_clock_is_behind(skews, script) -> None:
    desks, written = simulate(skews, script)
    flagged = ordered(written).state.clocks.flagged
    assert set(flagged) <= {desks[0].node}
    for conflict in flagged.values():
        assert FLAG_MS < conflict.offset_ms <= skews[0]  # a lower bound: never more than the real offset


def test_run_takes_the_drift_bound_in_seconds() -> None:
    from node.cli import build_parser

    args = build_parser().parse_args(["run", "--data", "d", "--max-clock-drift", "30"])
    assert args.max_clock_drift == 30
    assert build_parser().parse_args(["run", "--data", "d"]).max_clock_drift * 1000 == MAX
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--data", "d", "--max-clock-drift", "0"])


def test_hlc_observe_stops_at_the_drift_bound() -> None:
    clock = HybridClock(lambda: 1000, max_drift_ms=500)
    assert clock.observe(Hlc(5000, 3)) == Hlc(1500, 1)
    assert clock.observe(Hlc(1200, 7)) == Hlc(1500, 2)
    assert clock.tick() == Hlc(1500, 3)


def test_ping_pong_with_a_fast_desk_does_not_ratchet_the_others_forward() -> None:
    """Clamping the fast desk's stamps to its predecessors' plus the bound, and letting clocks follow the
    clamped stamps, moves a correct desk's clock one bound further on every round trip. Here it never moves."""
    fast, right = SimDesk(now=BASE + HOUR, max_drift=MAX), SimDesk(now=BASE, max_drift=MAX)
    events = []
    for _ in range(200):
        events.append(fast.write("in_house_use", item="I1"))
        right.receive(events[-1])
        events.append(right.write("in_house_use", item="I2"))
        fast.receive(events[-1])
        for d in (fast, right):
            d.now += 10
        assert right.clock.last.wall <= right.now + MAX
    log = ordered(events)
    assert [e.id for e in log] == [e.id for e in events]  # exactly the order they happened in


def three_desks(offset: int = HOUR) -> tuple[SimDesk, SimDesk, SimDesk]:
    return (SimDesk(now=BASE + offset, max_drift=MAX), SimDesk(now=BASE, max_drift=MAX),
            SimDesk(now=BASE + 3, max_drift=MAX))


def exchange(*desks: SimDesk) -> None:
    for d in desks:
        for other in desks:
            for e in list(d.known.values()):
                other.receive(e)


def test_a_desk_an_hour_ahead_is_named_by_the_fold_the_same_on_every_desk() -> None:
    fast, a, b = three_desks()
    opened = a.write("in_house_use", item="I0")
    exchange(fast, a, b)
    lent = fast.write("checkout", patron="P1", item="I1", due=DUE)
    for d in (fast, a, b):
        d.now += 500
    a.receive(lent)
    back = a.write("checkin", item="I1")
    assert back.hlc < lent.hlc  # a's clock was not dragged an hour forward…
    exchange(fast, a, b)
    log = ordered([opened, lent, back])
    assert log.key_of(lent.id) < log.key_of(back.id)  # …and the checkin still sorts after the loan
    state = log.state
    assert "I1" not in state.loans and state.returned["I1"] == back.id
    [conflict] = state.open_conflicts()
    assert conflict.kind == c.CLOCK_AHEAD and not conflict.needs_admin
    assert conflict.node == fast.node and conflict.offset_ms == HOUR - 500
    assert conflict.id == f"{c.CLOCK_AHEAD}/{lent.id}" and conflict.events == (lent.id, back.id)
    for desk in (fast, a, b):  # every desk folds what it holds to the same conflict
        assert [k.id for k in desk.log.state.open_conflicts()] == [conflict.id]
    assert conflict.to_json()["node"] == fast.node and conflict.to_json()["offset_ms"] == HOUR - 500


def test_a_desk_behind_makes_nobody_look_ahead_once_three_desks_compare() -> None:
    slow, a, b = three_desks(-HOUR)
    a.write("in_house_use", item="I1")
    exchange(a, b)
    b.write("in_house_use", item="I2")
    exchange(a, b, slow)
    slow.write("in_house_use", item="I3")
    exchange(a, b, slow)
    a.write("in_house_use", item="I4")
    exchange(a, b, slow)
    b.write("in_house_use", item="I5")
    state = ordered(list(b.known.values())).state
    assert state.open_conflicts() == []
    assert state.clocks.bounds[a.node][slow.node].ms > FLAG_MS  # a reads later than slow, as b does
    # with only two desks the one reading later is named: nothing better can be known
    alone = ordered([e for e in b.known.values() if e.node != b.node]).state
    assert [k.node for k in alone.open_conflicts()] == [a.node]


def test_acknowledging_a_clock_warning_opens_a_new_one_only_on_later_evidence() -> None:
    fast, a, _ = three_desks()
    a.write("in_house_use", item="I0")
    exchange(fast, a)
    fast.write("in_house_use", item="I1")
    exchange(fast, a)
    a.write("in_house_use", item="I2")
    [first] = a.log.state.open_conflicts()
    a.write("resolve", conflict=first.id, action="acknowledge")
    assert a.log.state.open_conflicts() == [] and first.id in a.log.state.settled
    b = SimDesk(now=BASE + 7, max_drift=MAX)
    exchange(fast, a, b)
    b.write("in_house_use", item="I9")  # shows the acknowledged event ahead again: no new warning
    exchange(fast, a, b)
    assert a.log.state.open_conflicts() == [] and a.log.state.clocks.flagged == {}
    again = fast.write("in_house_use", item="I3")  # still an hour ahead
    exchange(fast, a)
    assert a.log.state.open_conflicts() == []  # nothing new shows it yet
    a.write("in_house_use", item="I4")
    [second] = a.log.state.open_conflicts()
    assert second.id == f"{c.CLOCK_AHEAD}/{again.id}" and second.node == fast.node


def test_times_from_an_imported_file_are_no_evidence() -> None:
    a, b = SimDesk(max_drift=MAX), SimDesk(max_drift=MAX)
    a.write("in_house_use", item="I1")
    exchange(a, b)
    b.now -= 3 * HOUR  # what `at` of an imported operation is: the file's time
    b.write("checkin", item="I1", imported="desk7.koc")
    assert ordered(list(b.known.values())).state.open_conflicts() == []


def test_a_forged_cycle_in_seen_vectors_is_ordered_the_same_whatever_the_arrival() -> None:
    a, b = SimDesk(), SimDesk(now=BASE + 5)
    a.seq = 0
    x = a.write("in_house_use", item="I1")
    y = b.write("in_house_use", item="I2")
    # x claims to have seen y, y claims to have seen x: only forged vectors do that
    forged_x = replace(x, seen={b.node: 1})
    forged_y = replace(y, seen={a.node: 1})
    assert {p for p in predecessors(forged_x)} == {(b.node, 1)}
    orders = {tuple(e.id for e in ordered(arrival)) for arrival in ([forged_x, forged_y], [forged_y, forged_x])}
    assert len(orders) == 1
    assert len(causal_sequence([forged_y, forged_x])) == 2


def test_ils_times_correct_a_fast_desk_and_never_date_a_checkin_before_its_loan() -> None:
    fast, a, _ = three_desks()
    a.write("in_house_use", item="I0")
    exchange(fast, a)
    lent = fast.write("checkout", patron="P1", item="I1", due=DUE)
    a.now += 1000
    a.receive(lent)
    back = a.write("checkin", item="I1")
    events = list(ordered([lent, back]))

    measured = ils_times(events, lambda node: (HOUR, "link") if node == fast.node else None)
    assert measured[lent.id].at == lent.at - HOUR and measured[lent.id].by == "link"
    assert measured[back.id].at == back.at and measured[back.id].by is None
    assert operation_of(lent, measured[lent.id].at).at.tzinfo is UTC

    unknown = ils_times(events, lambda node: None)  # nobody knows yet: at least not before the loan
    assert unknown[lent.id].at == lent.at and unknown[lent.id].by is None
    assert unknown[back.id].at == lent.at and unknown[back.id].by == "order"

    sent = ils_times(events, lambda node: (HOUR, "link") if node == fast.node else None, {lent.id: lent.at})
    assert sent[lent.id].at == lent.at and sent[back.id].at == lent.at  # what the ILS got stands


def test_imported_operations_keep_their_files_times_at_the_ils() -> None:
    desk = SimDesk()
    imported = desk.write("checkin", item="I1", imported="old.koc")
    times = ils_times([imported], lambda node: (HOUR, "log"))
    assert times[imported.id].at == imported.at and times[imported.id].by is None
