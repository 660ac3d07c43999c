"""The peer link's rules, driven with lists of frames: no socket, no clock, no log (node/discovery/link_machine.py).

What the loop in link.py does with the actions is tested with real desks in test_tampering.py,
test_membership.py and test_cluster_processes.py; here is every rule a peer's frames meet."""

from __future__ import annotations

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.crdt.epochs import FIRST_TAG, EpochTag
from node.crdt.refusals import Refusal, Refused
from node.discovery import frames
from node.discovery.link_machine import (
    HELLO_TIMEOUT,
    MAX_WANTS,
    TIP_EVERY,
    Action,
    ApplyRun,
    ApplySync,
    CatchUp,
    Close,
    GenerateSync,
    Linked,
    LinkMachine,
    Now,
    Send,
    ServeRuns,
    State,
)

US, PEER, OTHER = "a" * 32, "b" * 32, "c" * 32
WALL = 1_700_000_000_000
BRIDGE = {"node": PEER, "desk": "Front", "term": 3, "reachable": True, "last_probe": WALL, "uploading": False,
          "problem": None}


def at(seconds: float) -> Now:
    return Now(seconds, WALL + int(seconds * 1000))


def machine(proven: str | None = PEER) -> LinkMachine:
    return LinkMachine(US, "Returns", address="127.0.0.1:1", outbound=True, proven=proven)


def hello(node: str = PEER, wall: int = WALL, version: int = frames.PROTOCOL_VERSION,
          epoch: EpochTag = FIRST_TAG, vector: dict[str, int] | None = None) -> bytes:
    return frames.encode(frames.Hello(node, "Front", wall, version, epoch, vector or {}))


def sync(message: bytes = b"automerge", epoch: str = "") -> bytes:
    return frames.encode(frames.Sync(message, epoch))


def tip(vector: dict[str, int], wall: int = WALL, bridge: dict | None = None, epoch: EpochTag = FIRST_TAG) -> bytes:
    return frames.encode(frames.Tip(vector, wall, bridge, epoch))


def run(node: str, first: int, n: int, done: bool = False) -> frames.Run:
    return frames.Run(node, first, [b"e%d" % i for i in range(n)], None, done)


def feed(m: LinkMachine, messages: list[bytes | str]) -> list[Action]:
    """Every message in turn; a sync message is applied and brings one event."""
    out: list[Action] = []
    for data in messages:
        for action in m.receive(data, at(0)):
            out.append(action)
            if isinstance(action, ApplySync):
                out += m.sync_applied(1)
            if isinstance(action, ApplyRun):
                out += m.run_applied(action.run, len(action.run.events))
    return out


def closed_for(actions: list[Action]) -> Close:
    closes = [a for a in actions if isinstance(a, Close)]
    assert len(closes) == 1 and actions[-1] is closes[0], actions
    return closes[0]


def test_a_normal_exchange_hello_sync_tip() -> None:
    m = machine()
    [sent] = m.start(at(0))
    assert isinstance(sent, Send) and frames.decode(sent.data) == frames.Hello(US, "Returns", WALL)
    actions = feed(m, [hello(wall=WALL + 1500)])
    assert [type(a) for a in actions] == [Linked, CatchUp, GenerateSync] and m.state is State.SYNCING
    info = actions[0].info
    assert (info.node, info.desk, info.outbound, info.clock_offset_ms) == (PEER, "Front", True, 1500)
    assert feed(m, [sync(b"xyz"), tip({PEER: 7}, WALL - 200, BRIDGE)]) == [ApplySync(b"xyz", ""), GenerateSync(),
                                                                          CatchUp()]
    assert (info.sync_bytes_in, info.received_events) == (3, 1)
    assert (info.peer_vector, info.clock_offset_ms, info.bridge) == ({PEER: 7}, -200, BRIDGE)
    # the writer's side: sync messages framed and counted, the tip when it changed or is due
    assert m.sync_message(b"ours") == [Send(sync(b"ours"))] and info.sync_bytes_out == 4
    assert m.tip({US: 2}, None, at(0.5)) == [Send(tip({US: 2}, at(0.5).wall))]
    assert m.tip({US: 2}, None, at(1.0)) == []
    assert m.tip({US: 3}, None, at(1.0)) == [Send(tip({US: 3}, at(1.0).wall))]
    assert m.deadline() == 1.0 + TIP_EVERY and m.timer(at(2.9)) == []
    assert m.timer(at(3.0)) == [GenerateSync()]
    assert m.tip({US: 3}, None, at(3.0)) == [Send(tip({US: 3}, at(3.0).wall))]
    assert m.local_change() == [GenerateSync()]
    # the peer hangs up: not a refusal, and nothing more happens
    assert m.closed() == [] and m.state is State.CLOSED and m.closed_for is None
    assert feed(m, [sync()]) == [] and m.local_change() == [] and m.deadline() is None


def test_two_machines_link_each_other() -> None:
    a = LinkMachine(US, "Returns", address="b", outbound=True, proven=PEER)
    b = LinkMachine(PEER, "Front", address="a", outbound=False, proven=US)
    [to_b], [to_a] = a.start(at(0)), b.start(at(0))
    assert isinstance(to_b, Send) and isinstance(to_a, Send)
    [linked_a, _, _] = a.receive(to_a.data, at(0))
    [linked_b, _, _] = b.receive(to_b.data, at(0))
    assert isinstance(linked_a, Linked) and isinstance(linked_b, Linked)
    assert (linked_a.info.node, linked_b.info.node, linked_b.info.outbound) == (PEER, US, False)


def test_garbage_first_closes_the_link() -> None:
    for data in (b"\xc1", b"", msgpack.packb([1, 2, 3]), msgpack.packb({"t": "nonsense"}), "a text message"):
        m = machine()
        m.start(at(0))
        close = closed_for(feed(m, [data, hello()]))
        assert (close.reason, close.report, m.state, m.closed_for) == (Refusal.GARBAGE, True, State.CLOSED,
                                                                      Refusal.GARBAGE)


def test_a_sync_or_tip_before_the_hello() -> None:
    for first in (sync(), tip({})):
        m = machine()
        m.start(at(0))
        actions = feed(m, [first, hello()])
        assert closed_for(actions).reason is Refusal.NO_HELLO
        assert not any(isinstance(a, ApplySync | Linked) for a in actions)


def test_a_second_hello() -> None:
    m = machine()
    m.start(at(0))
    assert closed_for(feed(m, [hello(), sync(), hello()])).reason is Refusal.UNEXPECTED_HELLO


def test_a_hello_naming_ourselves_closes_without_counting() -> None:
    m = machine(proven=None)
    m.start(at(0))
    close = closed_for(feed(m, [hello(US)]))
    assert (close.reason, close.report) == (Refusal.SELF, False)


def test_a_hello_naming_another_node_than_the_certificate() -> None:
    m = machine(proven=PEER)
    m.start(at(0))
    close = closed_for(feed(m, [hello(OTHER)]))
    assert (close.reason, close.report) == (Refusal.IMPOSTOR, True)
    assert OTHER[:12] in close.detail and PEER[:12] in close.detail
    # without TLS nothing is proven: any node may say hello
    m = machine(proven=None)
    assert [type(a) for a in feed(m, [hello(OTHER)])] == [Linked, CatchUp, GenerateSync]


def test_a_hello_of_another_protocol_version() -> None:
    m = machine()
    m.start(at(0))
    assert closed_for(feed(m, [hello(version=frames.PROTOCOL_VERSION + 1)])).reason is Refusal.WRONG_VERSION


def test_no_hello_in_time() -> None:
    m = machine()
    m.start(at(5))
    assert m.deadline() == 5 + HELLO_TIMEOUT
    assert m.timer(at(5 + HELLO_TIMEOUT - 0.1)) == [] and m.state is State.AWAIT_HELLO
    close = closed_for(m.timer(at(5 + HELLO_TIMEOUT)))
    assert (close.reason, m.deadline()) == (Refusal.HELLO_TIMEOUT, None)
    assert feed(m, [hello()]) == []  # too late


def test_a_refused_sync_closes_for_the_logs_refusal_which_the_log_counted() -> None:
    m = machine()
    m.start(at(0))
    feed(m, [hello()])
    assert m.receive(sync(b"forged"), at(1)) == [ApplySync(b"forged", "")]
    actions = m.sync_refused(Refused(Refusal.BAD_SIGNATURE, "signature of x:1 does not verify"))
    assert actions == [Close(Refusal.BAD_SIGNATURE, "signature of x:1 does not verify", report=False)]
    assert m.state is State.CLOSED and m.sync_applied(1) == [] and m.sync_message(b"m") == []
    assert m.tip({}, None, at(9)) == [] and m.timer(at(99)) == []


def test_refusal_kinds_keep_their_status_keys() -> None:
    """/api/v1/status counts refusals under these keys; the UI, tests and scripts read them."""
    assert {r.value for r in Refusal} >= {"garbage", "impostor", "bad_signature", "altered_event", "unknown_node",
                                          "revoked_node", "not_a_member", "bad_node_record", "malformed"}
    assert Refusal("bad_signature") is Refusal.BAD_SIGNATURE and f"{Refusal.GARBAGE}" == "garbage"


def test_hello_and_tips_carry_the_peers_epoch_and_vector() -> None:
    m = machine()
    m.start(at(0))
    feed(m, [hello(epoch=EpochTag(3, PEER + ":9"), vector={PEER: 9, OTHER: 4})])
    assert m.info is not None and (m.info.peer_epoch, m.info.peer_vector) == (EpochTag(3, PEER + ":9"),
                                                                             {PEER: 9, OTHER: 4})
    # the same epoch: only a catch-up; a new epoch: a write round too (a new document to talk about)
    assert feed(m, [tip({PEER: 10}, epoch=EpochTag(3, PEER + ":9"))]) == [CatchUp()]
    assert feed(m, [tip({PEER: 11}, epoch=EpochTag(4, PEER + ":11"))]) == [CatchUp(), GenerateSync()]
    assert feed(m, [sync(b"m", PEER + ":11")]) == [ApplySync(b"m", PEER + ":11"), GenerateSync()]


def test_runs_are_taken_only_as_asked_and_in_order() -> None:
    m = machine()
    m.start(at(0))
    feed(m, [hello()])
    assert m.want([]) == []
    [sent] = m.want([(OTHER, 5, 9)])
    assert isinstance(sent, Send) and frames.decode(sent.data) == frames.Want([(OTHER, 5, 9)])
    first = run(OTHER, 5, 2)
    assert feed(m, [frames.encode(first)]) == [ApplyRun(first)]
    last = run(OTHER, 7, 3, done=True)
    assert feed(m, [frames.encode(last)]) == [ApplyRun(last), CatchUp(), GenerateSync()]
    assert m.info is not None and m.info.run_events_in == 5 and m.asked == {}
    # a peer with nothing more says so: no new catch-up until its next tip
    m.want([(OTHER, 10, 20)])
    empty = run(OTHER, 10, 0, done=True)
    assert feed(m, [frames.encode(empty)]) == [ApplyRun(empty)] and m.asked == {}
    for wrong in (run(PEER, 1, 1), run(OTHER, 10, 1)):  # never asked; asked no more
        m2 = machine()
        m2.start(at(0))
        feed(m2, [hello()])
        close = closed_for(feed(m2, [frames.encode(wrong)]))
        assert (close.reason, close.report) == (Refusal.UNASKED_RUN, True)
    for wrong in (run(OTHER, 6, 1), run(OTHER, 5, 6)):  # out of order; beyond what was asked
        m3 = machine()
        m3.start(at(0))
        feed(m3, [hello()])
        m3.want([(OTHER, 5, 9)])
        assert closed_for(feed(m3, [frames.encode(wrong)])).reason is Refusal.UNASKED_RUN


def test_the_peers_wants_are_served_but_not_without_bound() -> None:
    m = machine()
    m.start(at(0))
    feed(m, [hello()])
    want = frames.encode(frames.Want([(US, 1, 100)]))
    for _ in range(MAX_WANTS):
        assert m.receive(want, at(1)) == [ServeRuns([(US, 1, 100)])]
    m.served()
    assert m.receive(want, at(1)) == [ServeRuns([(US, 1, 100)])]
    close = closed_for(m.receive(want, at(1)))
    assert (close.reason, close.report) == (Refusal.FLOOD, True)
    served = frames.Run(US, 1, [b"x"], b"record", True)
    assert m.run_frame(served) == []  # closed: nothing more is sent


# ---- any frames at all

node_ids = st.sampled_from([US, PEER, OTHER])
valid_frames = st.one_of(
    st.builds(lambda n, w, v: hello(n, w, v), node_ids, st.integers(0, 2**40), st.sampled_from([1, 1, 1, 2])),
    st.binary(max_size=32).map(sync),
    st.builds(lambda v, w, b: tip(v, w, b), st.dictionaries(node_ids, st.integers(0, 2**32)),
              st.integers(0, 2**40), st.sampled_from([None, BRIDGE])),
    st.builds(lambda n, f, k, d: frames.encode(run(n, f, k, d)), node_ids, st.integers(1, 20), st.integers(0, 4),
              st.booleans()),
    st.builds(lambda n, f: frames.encode(frames.Want([(n, f, f + 3)])), node_ids, st.integers(1, 20)),
)
field_values = st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=8), st.binary(max_size=8),
                         st.sampled_from(["hello", "sync", "tip", US, PEER]))
near_frames = st.dictionaries(st.sampled_from(["t", "v", "node", "desk", "wall", "m", "e", "vector", "epoch", "ranges",
                                              "first", "events", "record", "done"]), field_values)
messages = st.one_of(valid_frames, st.binary(max_size=64), st.text(max_size=16),
                     near_frames.map(lambda d: msgpack.packb(d, use_bin_type=True)))
steps = st.lists(st.one_of(
    st.tuples(st.just("frame"), messages),
    st.tuples(st.just("timer"), st.floats(0, 2 * HELLO_TIMEOUT)),
    st.tuples(st.just("local"), st.none()),
    st.tuples(st.just("closed"), st.none()),
    st.tuples(st.just("want"), st.integers(1, 20)),
), max_size=30)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), steps, st.lists(st.booleans(), max_size=30), st.sampled_from([PEER, None]))
def test_any_frames_never_raise_and_leave_a_well_formed_state(greet, script, outcomes, proven) -> None:
    """`greet`: the peer says a proper hello first, so that the rules of SYNCING meet random frames too."""
    m = machine(proven)
    log: list[Action] = list(m.start(at(0)))
    if greet:
        script = [("frame", hello()), *script]
    clock = 0.0
    for kind, value in script:
        if kind == "frame":
            actions = m.receive(value, at(clock))
        elif kind == "timer":
            clock += value
            actions = m.timer(at(clock))
        elif kind == "local":
            actions = m.local_change()
        elif kind == "want":
            actions = m.want([(OTHER, value, value + 5)])
        else:
            actions = m.closed()
        for action in list(actions):
            if isinstance(action, ApplySync | ApplyRun):
                assert m.state is State.SYNCING
                if outcomes and outcomes.pop():
                    actions += m.sync_refused(Refused(Refusal.ALTERED_EVENT, "no"))
                elif isinstance(action, ApplySync):
                    actions += m.sync_applied(2)
                else:
                    actions += m.run_applied(action.run, len(action.run.events))
        log += actions
        if m.state is State.SYNCING:  # the writer's side may run between any two inputs
            assert m.tip({US: 1}, None, at(clock)) in ([], [Send(tip({US: 1}, at(clock).wall))])
    linked = [a for a in log if isinstance(a, Linked)]
    closes = [a for a in log if isinstance(a, Close)]
    for action in log:
        if isinstance(action, Send):
            frames.decode(action.data)  # everything we send is a frame
    assert len(linked) <= 1 and len(closes) <= 1
    if m.state is State.AWAIT_HELLO:
        assert not linked and not closes and m.info is None and m.deadline() == HELLO_TIMEOUT
    elif m.state is State.SYNCING:
        assert linked and not closes and m.info is linked[0].info and m.info.node in (PEER, OTHER)
        assert m.info.node == proven or proven is None
    else:
        assert m.deadline() is None and m.local_change() == []
        if closes:
            [close] = closes
            assert log[-1] is close and m.closed_for is close.reason  # nothing after a Close
            # counted here unless the log counted it (the refused sync) or it is not counted at all
            assert close.report == (close.reason is not Refusal.ALTERED_EVENT and close.reason.counted)
