"""The log core (node/crdt/core.py) driven as it is meant to be: without a disk, a document or an event loop.

The same events reach the same order and state whatever way they come (runs that overlap, start too far
on, repeat; sync verdicts with events beyond a gap), each is handed out to be written exactly once, and a
refused message changes nothing but the refusal count."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from node.crdt.core import LogCore, Taken
from node.crdt.event import Event, decode_event
from node.crdt.refusals import Refusal
from tests.factories import SimDesk
from tests.test_state import ITEMS, PATRONS, actions, run, summary

PEER = "peer"


def signed(script) -> tuple[list[Event], dict[str, list[bytes]], dict[str, bytes]]:
    """The events of a simulated cluster (test_state's scripts), each desk's chain as bytes, and each desk's
    node record, which vouches for its runs."""
    desks = [SimDesk(now=1_700_000_000_000 + i * 7) for i in range(3)]
    events = run(script, desks) or run([(0, "checkout", ITEMS[0], PATRONS[0], 0)], desks)
    order = {desk.node: i for i, desk in enumerate(desks)}  # desks in a fixed order, for hypothesis to replay
    chains: dict[str, list[bytes]] = {}
    for event in sorted(events, key=lambda e: (order[e.node], e.seq)):
        chains.setdefault(event.node, []).append(event.encode())
    records = {desk.node: desk.record(f"desk {i}").encode() for i, desk in enumerate(desks)}
    return events, chains, records


class Delivered:
    """A core and everything it handed out to be written."""

    def __init__(self, records: dict[str, bytes]) -> None:
        self.core = LogCore()
        self.records = records
        self.written: list[str] = []
        self.positions: list[int] = []

    def keep(self, taken: Taken) -> Taken:
        self.written += [entry.id for entry in taken.entries]
        self.positions += [entry.pos for entry in taken.entries]
        assert [a.event.id for a in taken.arrivals] == [e.id for e in taken.entries]
        return taken

    def run(self, chains: dict[str, list[bytes]], node: str, first: int, count: int) -> Taken:
        raws = chains[node][first - 1:first - 1 + count]
        return self.keep(self.core.take_run(node, first, raws, self.records[node], PEER))

    def everything(self, chains: dict[str, list[bytes]]) -> None:
        for node in sorted(chains):
            taken = self.run(chains, node, 1, len(chains[node]))
            assert taken.refused is None, taken.refused


deliveries = st.lists(
    st.tuples(
        st.sampled_from(["run", "run", "sync"]),
        st.integers(0, 2),  # which desk's chain
        st.integers(0, 4),  # a run starts this far before (or after) what the core holds, a sync picks an event
        st.integers(1, 6),  # how many events
    ),
    max_size=25,
)


@settings(max_examples=120, deadline=None)
@given(script=actions, plan=deliveries, data=st.data())
@example(script=[(0, "checkout", "I1", "P1", 0), (0, "checkin", "I1", "P1", 0)],
         plan=[("sync", 0, 1, 1), ("run", 0, 0, 1)], data=None)  # the second event first, beyond a gap
def test_any_way_the_events_come_gives_the_same_log(script, plan, data) -> None:
    events, chains, records = signed(script)
    reference = Delivered(records)
    reference.everything(chains)
    core = Delivered(records)
    nodes = list(chains)
    for way, desk, shift, count in plan:
        node = nodes[desk % len(nodes)]
        held = core.core.vector.get(node, 0)
        if way == "run":
            first = max(1, held + 1 - shift) if shift <= 2 else held + shift - 1  # overlaps, or leaves a gap
            if first > len(chains[node]):
                continue
            before = (dict(core.core.vector), core.core.event_count)
            taken = core.run(chains, node, first, count)
            if first > held + 1:
                assert taken.refused is not None and taken.refused.kind is Refusal.BROKEN_CHAIN
                assert (dict(core.core.vector), core.core.event_count) == before
            else:
                assert taken.refused is None
        else:
            chain = chains[node]
            picked = [(_event(chain[i]), chain[i]) for i in range(shift, min(len(chain), shift + count))]
            taken = core.keep(core.core.take_synced(picked, [], [], PEER))
            assert taken.refused is None
            assert core.core.vector.get(node, 0) <= len(chain)
        for n, top in core.core.vector.items():  # the vector stays a prefix of each chain
            assert top <= len(chains[n])
    core.everything(chains)
    assert core.core.vector == reference.core.vector == {n: len(c) for n, c in chains.items()}
    assert [e.id for e in core.core.ordered_log] == [e.id for e in reference.core.ordered_log]
    assert summary(core.core.ordered_log.state) == summary(reference.core.ordered_log.state)
    assert sorted(core.written) == sorted(e.id for e in events)  # each handed out to be written once
    assert sorted(core.positions) == list(range(1, len(events) + 1))
    assert core.core.event_count == len(events)
    assert not core.core.refusals.keys() - {Refusal.BROKEN_CHAIN}


@settings(max_examples=60, deadline=None)
@given(script=actions, data=st.data())
def test_a_run_with_a_bad_event_is_refused_whole_and_changes_nothing(script, data) -> None:
    _, chains, records = signed(script)
    core = Delivered(records)
    node = data.draw(st.sampled_from(list(chains)))
    chain = list(chains[node])
    i = data.draw(st.integers(0, len(chain) - 1))
    raw = bytearray(chain[i])
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    chain[i] = bytes(raw)
    taken = core.keep(core.core.take_run(node, 1, chain, records[node], PEER))
    assert taken.refused is not None
    assert taken.refused.kind in (Refusal.MALFORMED, Refusal.BROKEN_CHAIN, Refusal.BAD_SIGNATURE)
    assert core.written == [] and core.core.vector == {} and core.core.event_count == 0
    assert sum(core.core.refusals.values()) == 1 and core.core.refusal_log[-1].startswith(PEER)
    taken = core.run(chains, node, 1, len(chains[node]))  # the honest run is then taken whole
    assert taken.refused is None and core.core.vector == {node: len(chains[node])}


def test_a_run_from_a_desk_without_a_record_is_refused() -> None:
    _, chains, _ = signed([(0, "checkout", "I1", "P1", 0)])
    [node] = chains
    core = LogCore()
    taken = core.take_run(node, 1, chains[node], None, PEER)
    assert taken.refused is not None and taken.refused.kind is Refusal.UNKNOWN_NODE
    assert core.vector == {} and core.refusals[Refusal.UNKNOWN_NODE] == 1


def _event(raw: bytes) -> Event:
    return decode_event(raw)
