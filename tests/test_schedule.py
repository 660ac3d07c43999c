"""The upload schedule: nothing overtakes on the same item or patron; unrelated events go in parallel."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from node.crdt.state import Loan
from node.ilsbridge.schedule import UploadSchedule, keys_of, renewal_patrons
from tests.factories import DUE, SimDesk

ops = st.lists(st.tuples(st.sampled_from(["checkout", "checkin", "payment"]), st.integers(0, 5),
                         st.integers(0, 4)), min_size=1, max_size=60)


def make(script):
    desk = SimDesk()
    out = []
    for kind, item, patron in script:
        if kind == "checkout":
            out.append(desk.write("checkout", patron=f"P{patron}", item=f"I{item}", due=DUE))
        elif kind == "checkin":
            out.append(desk.write("checkin", item=f"I{item}"))
        else:
            out.append(desk.write("payment", patron=f"P{patron}", amount="1.00"))
    return out


@settings(max_examples=200, deadline=None)
@given(script=ops, seed=st.integers(0, 10_000), width=st.integers(1, 8))
def test_same_item_or_patron_never_overtakes_and_everything_is_taken_once(script, seed, width) -> None:
    events = make(script)
    rng = random.Random(seed)
    schedule = UploadSchedule(events)
    in_flight, applied = [], []
    while schedule.remaining:
        while len(in_flight) < width and (e := schedule.take()) is not None:
            in_flight.append(e)
        assert in_flight, "schedule stalled with work left"
        finished = in_flight.pop(rng.randrange(len(in_flight)))
        if rng.random() < 0.1:
            schedule.retry(finished.id)
            continue
        schedule.done(finished.id)
        applied.append(finished)
    assert sorted(e.id for e in applied) == sorted(e.id for e in events)
    position = {e.id: i for i, e in enumerate(applied)}
    for a in events:
        for b in events:
            if a.order_key < b.order_key and set(keys_of(a)) & set(keys_of(b)):
                assert position[a.id] < position[b.id]


def test_unrelated_events_are_all_ready_at_once() -> None:
    desk = SimDesk()
    events = [desk.write("checkout", patron=f"P{i}", item=f"I{i}", due=DUE) for i in range(20)]
    schedule = UploadSchedule(events)
    taken = [schedule.take() for _ in range(20)]
    assert [e.id for e in taken] == [e.id for e in events]  # all ready, handed out in causal order


def test_a_held_event_blocks_only_its_item_and_patron() -> None:
    desk = SimDesk()
    held = desk.write("checkout", patron="P1", item="I1", due=DUE)
    after_same_item = desk.write("checkin", item="I1")
    unrelated = desk.write("checkout", patron="P2", item="I2", due=DUE)
    schedule = UploadSchedule([held, after_same_item, unrelated], held={held.id})
    assert schedule.take().id == unrelated.id
    assert schedule.take() is None
    assert schedule.held == 1


def test_a_renewal_without_patron_renews_the_loan_its_desk_had_seen() -> None:
    a, b = SimDesk(), SimDesk()
    lent = a.write("checkout", patron="P1", item="I1", due=DUE)
    b.receive(lent)
    seen = b.write("renew", item="I1")  # b had the loan: P1's
    concurrent = a.write("checkout", patron="P2", item="I2", due=DUE)
    unseen = b.write("renew", item="I2")  # b never had a's loan of I2: the log cannot tell
    returned = a.write("checkin", item="I1")
    b.receive(concurrent)
    b.receive(returned)
    after_return = b.write("renew", item="I1")  # returned since: no loan in the log
    relent = a.write("checkout", patron="P3", item="I1", due=DUE)
    renewed_with_patron = a.write("renew", item="I3", patron="P4")  # a loan from before the outage
    b.receive(relent)
    b.receive(renewed_with_patron)
    latest = b.write("renew", item="I1")
    from_renewal = b.write("renew", item="I3")
    named = b.write("renew", item="I1", patron="P9")  # names its patron: nothing to find
    events = sorted([lent, seen, concurrent, unseen, returned, after_return, relent, renewed_with_patron, latest,
                     from_renewal, named], key=lambda e: e.order_key)
    assert renewal_patrons(events, {}) == {seen.id: "P1", unseen.id: None, after_return.id: None,
                                           latest.id: "P3", from_renewal.id: "P4"}
    # a voided checkout lends nothing
    assert renewal_patrons(events, {relent.id: "void"})[latest.id] is None


def test_a_renewal_of_a_loan_in_history_names_the_patron_the_base_holds() -> None:
    """The checkout left memory with the fold's base: the base's loan stands for it, if the renewing desk had it."""
    a, b = SimDesk(), SimDesk()
    lent = a.write("checkout", patron="P1", item="I1", due=DUE)
    b.receive(lent)
    concurrent = a.write("checkout", patron="P2", item="I2", due=DUE)
    renew_seen = b.write("renew", item="I1")
    renew_unseen = b.write("renew", item="I2")  # b never had a's loan of I2
    base = {"I1": Loan("I1", "P1", DUE, lent.id, lent.node, lent.at),
            "I2": Loan("I2", "P2", DUE, concurrent.id, concurrent.node, concurrent.at)}
    assert renewal_patrons([renew_seen, renew_unseen], {}, base) == {renew_seen.id: "P1", renew_unseen.id: None}
    returned = a.write("checkin", item="I1")  # in memory, before the renewal: the log knows no loan
    b.receive(returned)
    after = b.write("renew", item="I1")
    assert renewal_patrons([returned, after], {}, base) == {after.id: None}
