"""What a peer may add: checked per entry, with one signature per hash-chained run of a desk's events."""

from __future__ import annotations

import msgpack

from node.crdt.event import Event
from node.crdt.records import record_key
from node.crdt.verify import verify_touched
from tests.factories import SimDesk


def entries(desk: SimDesk, events: list[Event]) -> dict[str, bytes]:
    out = {record_key(desk.node): desk.record().encode()}
    out.update({e.id: e.encode() for e in events})
    return out


def check(values: dict[str, bytes], known: dict[str, bytes] | None = None):
    known = known or {}
    return verify_touched(list(values), values.get, known.get, lambda node: None)


def test_a_whole_chain_is_accepted() -> None:
    desk = SimDesk()
    events = [desk.write("in_house_use", item=f"I{i}") for i in range(50)]
    verdict = check(entries(desk, events))
    assert verdict.ok and [e.id for e, _ in verdict.events] == [e.id for e in events]


def test_an_altered_event_inside_a_chain_is_refused_even_though_the_last_signature_is_good() -> None:
    desk = SimDesk()
    events = [desk.write("checkout", patron="P1", item=f"I{i}", due=1) for i in range(5)]
    values = entries(desk, events)
    obj = msgpack.unpackb(values[events[2].id])
    obj["body"]["patron"] = "P2"
    values[events[2].id] = msgpack.packb(obj, use_bin_type=True)
    verdict = check(values)
    assert not verdict.ok
    assert any("does not chain" in r or "does not verify" in r for r in verdict.refusals)
    accepted = {e.id for e, _ in verdict.events}
    assert events[2].id not in accepted and events[3].id not in accepted
    # (the receiver rolls the whole sync message back when the verdict is not ok: nothing is kept)


def test_a_run_continuing_a_known_event_must_chain_to_it() -> None:
    desk = SimDesk()
    events = [desk.write("in_house_use", item=f"I{i}") for i in range(4)]
    known = {events[0].id: events[0].encode(), events[1].id: events[1].encode()}
    rest = {e.id: e.encode() for e in events[2:]}
    verdict = verify_touched(list(rest), rest.get, known.get, lambda node: desk.record())
    assert verdict.ok and len(verdict.events) == 2
    forged_known = {events[0].id: events[0].encode(), events[1].id: events[0].encode()}
    verdict = verify_touched(list(rest), rest.get, forged_known.get, lambda node: desk.record())
    assert not verdict.ok


def test_an_event_whose_predecessor_is_missing_stands_on_its_own_signature() -> None:
    desk = SimDesk()
    events = [desk.write("in_house_use", item=f"I{i}") for i in range(3)]
    lone = {events[2].id: events[2].encode()}
    verdict = verify_touched(list(lone), lone.get, {}.get, lambda node: desk.record())
    assert verdict.ok and [e.id for e, _ in verdict.events] == [events[2].id]
    obj = msgpack.unpackb(lone[events[2].id])
    obj["body"]["item"] = "other"
    lone[events[2].id] = msgpack.packb(obj, use_bin_type=True)
    assert not verify_touched(list(lone), lone.get, {}.get, lambda node: desk.record()).ok


def test_events_of_a_node_without_a_record_are_refused() -> None:
    desk = SimDesk()
    event = desk.write("in_house_use", item="I1")
    values = {event.id: event.encode()}
    verdict = check(values)
    assert verdict.refusals == [f"event {event.id} is signed by an unknown node"]
