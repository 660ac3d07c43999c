"""Circulation state: a pure fold of the causally ordered log, identical whatever the arrival order."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from node.crdt import conflicts as c
from node.crdt.event import Event
from node.crdt.order import OrderedLog
from node.crdt.state import CirculationState, fold
from node.ilsbridge.schedule import UploadSchedule, held_events
from tests.factories import DUE, SimDesk

ITEMS = ["I1", "I2", "I3"]
PATRONS = ["P1", "P2", "P3"]


def summary(state: CirculationState) -> tuple:
    return (
        sorted((k, v.patron, v.due, v.event) for k, v in state.loans.items()),
        sorted(state.conflicts),
        sorted(state.settled.items()),
        sorted((k, str(v)) for k, v in state.payments.items()),
        sorted(state.returned.items()),
        sorted(state.voided.items()),
    )


actions = st.lists(
    st.tuples(
        st.integers(0, 2),  # desk
        st.sampled_from(["checkout", "checkin", "renew", "payment", "sync", "sync", "tick"]),
        st.sampled_from(ITEMS),
        st.sampled_from(PATRONS),
        st.integers(0, 2),  # sync target
    ),
    max_size=40,
)


def run(script, desks: list[SimDesk] | None = None) -> list[Event]:
    desks = desks or [SimDesk(now=1_700_000_000_000 + i * 7) for i in range(3)]
    events: list[Event] = []
    for d, action, item, patron, target in script:
        desk = desks[d]
        if action == "sync":
            for e in list(desk.known.values()):
                desks[target].receive(e)
        elif action == "tick":
            for x in desks:
                x.now += 1000
        elif action == "checkout":
            events.append(desk.write("checkout", patron=patron, item=item, due=desk.now + 10))
        elif action == "checkin":
            events.append(desk.write("checkin", item=item))
        elif action == "renew":
            events.append(desk.write("renew", item=item, due=desk.now + 20))
        else:
            events.append(desk.write("payment", patron=patron, amount="1.50"))
    return events


@settings(max_examples=150, deadline=None)
@given(script=actions, data=st.data())
def test_any_arrival_order_with_duplicates_gives_the_same_state(script, data) -> None:
    events = run(script)
    reference = fold(sorted(events, key=lambda e: e.order_key))
    for _ in range(3):
        arrival = data.draw(st.permutations(events + data.draw(st.lists(st.sampled_from(events), max_size=5))
                                            if events else []))
        log = OrderedLog()
        for i, e in enumerate(arrival):
            log.add(e)
            if data.draw(st.booleans()) and i % 3 == 0:
                _ = log.state  # reads in between force incremental folding on later arrivals
        assert [e.id for e in log] == [e.id for e in sorted(events, key=lambda e: e.order_key)]
        assert summary(log.state) == summary(reference)


@settings(max_examples=100, deadline=None)
@given(script=actions)
def test_a_checkin_written_after_seeing_a_checkout_sorts_after_it(script) -> None:
    events = run(script)
    for out in (e for e in events if e.kind == "checkout"):
        for back in (e for e in events if e.kind == "checkin" and e.body["item"] == out.body["item"]):
            if out.happened_before(back):
                assert out.order_key < back.order_key


def test_concurrent_checkout_is_a_conflict_for_an_admin() -> None:
    a, b = SimDesk(), SimDesk(now=1_700_000_000_005)
    x = a.write("checkout", patron="P1", item="I1", due=DUE)
    y = b.write("checkout", patron="P2", item="I1", due=DUE)
    state = fold(sorted([x, y], key=lambda e: e.order_key))
    [conflict] = state.open_conflicts()
    assert conflict.kind == c.CONCURRENT_CHECKOUT and conflict.needs_admin
    assert conflict.events == (x.id, y.id) and conflict.patrons == ("P1", "P2")
    assert state.loans["I1"].patron == "P2"  # the later loan stands, as the ILS would apply it


def test_lending_an_item_seen_on_loan_is_recorded_and_override_is_not_an_admin_matter() -> None:
    a, b = SimDesk(), SimDesk()
    x = a.write("checkout", patron="P1", item="I1", due=DUE)
    b.now += 10
    b.receive(x)
    y = b.write("checkout", patron="P2", item="I1", due=DUE, override=True)
    [conflict] = fold(sorted([x, y], key=lambda e: e.order_key)).open_conflicts()
    assert conflict.kind == c.LENT_WHILE_ON_LOAN and not conflict.needs_admin


def test_checkin_not_on_loan_and_unknown_baseline() -> None:
    a = SimDesk()
    first = a.write("checkin", item="I9")  # lent before the outage: not a conflict without a baseline
    assert fold([first]).open_conflicts() == []
    second = a.write("checkin", item="I9")
    [conflict] = fold([first, second]).open_conflicts()
    assert conflict.kind == c.CHECKIN_NOT_ON_LOAN and conflict.events == (first.id, second.id)
    # with a snapshot baseline that says the item is not on loan, the first is already "Item not issued."
    assert [k.kind for k in fold([first], baseline={}).open_conflicts()] == [c.CHECKIN_NOT_ON_LOAN]
    assert fold([first], baseline={"I9": ("P1", None)}).open_conflicts() == []


def test_void_and_resolve_settle_conflicts_on_every_node() -> None:
    a, b, admin = SimDesk(), SimDesk(), SimDesk()
    x = a.write("checkout", patron="P1", item="I1", due=DUE)
    y = b.write("checkout", patron="P2", item="I1", due=DUE)
    for e in (x, y):
        admin.receive(e)
    [conflict] = fold(sorted([x, y], key=lambda e: e.order_key)).open_conflicts()
    void = admin.write("void", event=x.id, reason="patron P1 never left with it")
    state = fold(sorted([x, y, void], key=lambda e: e.order_key))
    assert state.open_conflicts() == [] and state.loans["I1"].patron == "P2"
    resolve = admin.write("resolve", conflict=conflict.id, action="accept_ils")
    state = fold(sorted([x, y, resolve], key=lambda e: e.order_key))
    assert state.open_conflicts() == [] and conflict.id in state.settled


def test_a_patron_the_ils_would_not_create_has_their_scans_held_until_an_admin_says() -> None:
    """Koha refused to create a patron registered at a desk (the card is someone else's there): their loans
    must not reach the ILS, where they would land on that other account, until an admin says."""
    desk, bridge = SimDesk(), SimDesk(now=1_700_000_000_009)
    reg = desk.write("patron_register", patron="T1", name="Nováková, Eva")
    lent = desk.write("checkout", patron="T1", item="I1", due=DUE)
    other = desk.write("checkout", patron="P2", item="I2", due=DUE)
    for e in (reg, lent, other):
        bridge.receive(e)
    refused = bridge.write("applied", event=reg.id, status="refused", term=1,
                           message="card T1 already belongs to another patron at the ILS")
    state = fold(sorted([reg, lent, other, refused], key=lambda e: e.order_key))
    [conflict] = state.open_conflicts()
    assert conflict.kind == c.REGISTRATION_REFUSED and conflict.patrons == ("T1",) and conflict.needs_admin
    assert "another patron" in conflict.reason
    held = held_events(state, [lent, other])
    assert held == {reg.id, lent.id}  # the other patron's loan goes
    schedule = UploadSchedule([lent, other], held=held)
    assert schedule.take() == other and schedule.take() is None
    answer = bridge.write("resolve", conflict=conflict.id, action="apply")  # created at the ILS by hand
    state = fold(sorted([reg, lent, other, refused, answer], key=lambda e: e.order_key))
    assert state.open_conflicts() == [] and held_events(state, [lent]) == set()


def test_within_one_upload_round_a_refused_registration_holds_what_follows() -> None:
    desk = SimDesk()
    reg = desk.write("patron_register", patron="T1", name="Eva")
    lent = desk.write("checkout", patron="T1", item="I1", due=DUE)
    schedule = UploadSchedule([reg, lent])
    assert schedule.take() == reg and schedule.take() is None  # the loan waits for the registration
    schedule.hold_patron("T1")  # the ILS refused it (the bridge does this before done)
    schedule.done(reg.id)
    assert schedule.take() is None and schedule.held == 1
