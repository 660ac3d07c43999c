"""Epochs and the bulk path, through real Automerge documents and real SQLite journals, without sockets.

`settle` does what the link loop does between every linked pair (node/discovery/link.py): a desk asks the
catch-up plan what to want of its peer and receives it as journal runs read from the peer's journal, and
desks in the same epoch run Automerge's sync protocol on that epoch's document. The link loop itself is
exercised with real desks in tests/test_cluster_processes.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from node.crdt.epochs import Epochs, seal_problem
from node.crdt.refusals import Refusal
from node.eventlog import EventLog, RefusedSync
from node.trust.identity import load_or_create_identity
from tests.factories import SimDesk as Desk
from tests.test_state import summary


def make_log(root: Path, name: str) -> EventLog:
    d = root / name
    log = EventLog(load_or_create_identity(d), d, name)
    log.open()
    log.link_up()  # linked to a peer: its scans go in the document too (`settle` carries them as links do)
    return log


async def settle(logs: list[EventLog], linked: set[frozenset[int]] | None = None,
                 states: dict | None = None, *, documents_first: bool = False) -> dict[str, int]:
    """Until nobody has anything more to send (bounded). Returns events moved by runs and by documents.
    `documents_first`: each pair syncs its documents before the runs (a document may then bring an event
    beyond a gap, which waits for its run)."""
    states = {} if states is None else states
    moved = {"runs": 0, "documents": 0}
    pairs = [(i, j) for i in range(len(logs)) for j in range(len(logs))
             if i != j and (linked is None or frozenset((i, j)) in linked)]

    async def runs(a: EventLog, b: EventLog) -> bool:
        quiet = True
        peer = a.identity.node_id
        for node, first, last in b.catchup.plan(peer, a.vector, b.vector, b.revoked):
            while first <= last:
                raws = await a.read_run(node, first, last)
                n = b.receive_run(node, first, raws, a.record_raw(node), a.desk)
                moved["runs"] += n
                quiet &= n == 0
                if not raws:
                    break
                first += len(raws)
            b.catchup.done(peer, node)
        return quiet

    async def documents(i: int, j: int) -> bool:
        a, b = logs[i], logs[j]
        if a.epoch.tag != b.epoch.tag:
            return True
        seal = a.epoch.seal
        out = states.setdefault((i, j, seal), a.new_sync_state())
        into = states.setdefault((j, i, seal), b.new_sync_state())
        await a.durable()
        message = a.generate_sync(out)
        if message is None:
            return True
        moved["documents"] += b.receive_sync(into, message, a.desk)
        return False

    for _ in range(60):
        quiet = True
        for i, j in pairs:
            a, b = logs[i], logs[j]  # b catches up from a
            await a.store.commit([])
            if documents_first:  # both ways, until the documents have said all (bounded), then the runs
                for _ in range(4):
                    if await documents(i, j) & await documents(j, i):
                        break
                    quiet = False
                quiet &= await runs(a, b)
            else:
                quiet &= await runs(a, b)
                quiet &= await documents(i, j)
        if quiet:
            for log in logs:
                await log.store.commit([])
            return moved
    raise AssertionError("did not settle")


async def scans(log: EventLog, n: int, prefix: str) -> list[str]:
    out = []
    for k in range(n):
        out.append((await log.append("checkout", {"patron": f"P{k % 7}", "item": f"{prefix}{k}"}, "staff")).id)
    return out


def same_everywhere(logs: list[EventLog]) -> None:
    orders = [[e.id for e in log.ordered()] for log in logs]
    assert all(o == orders[0] for o in orders)
    assert all(summary(log.state) == summary(logs[0].state) for log in logs)
    assert all(log.epoch == logs[0].epoch for log in logs)


def doc_events(log: EventLog) -> set[str]:
    return {k for k in log.doc.keys() if not k.startswith("n:")}


async def started(root: Path, names: list[str]) -> list[EventLog]:
    logs = [make_log(root, n) for n in names]
    for log in logs:
        await log.start()
    return logs


def close_all(logs: list[EventLog]) -> None:
    for log in logs:
        log.close()


# ---- the rules, pure


def test_a_seal_must_cover_exactly_its_causal_past() -> None:
    a, b = Desk(), Desk()
    b.receive(a.write("checkout", patron="P1", item="I1"))
    good = b.write("seal", epoch=1, upto={a.node: 1, b.node: 1})
    assert seal_problem(good) is None
    premature = b.write("seal", epoch=1, upto={a.node: 5, b.node: 2})  # claims what it never held
    assert seal_problem(premature) is not None
    partial = b.write("seal", epoch=1, upto={b.node: 3})  # leaves out what it held
    assert seal_problem(partial) is not None


def test_an_epoch_is_entered_once_everything_it_seals_is_held() -> None:
    a, b = Desk(), Desk()
    b.receive(a.write("checkout", patron="P1", item="I1"))
    seal = b.write("seal", epoch=1, upto={a.node: 1, b.node: 1})
    epochs = Epochs()
    epochs.offer(seal)
    assert epochs.advance({b.node: 1}).number == 0  # a's event is not here yet
    assert epochs.advance({a.node: 1, b.node: 1}).seal == seal.id
    # the next seal must be built on this one; one that skips a number, or names a wrong upto, opens nothing
    b.write("checkin", item="I1")
    skip = b.write("seal", epoch=3, upto={a.node: 1, b.node: 3})
    bad = b.write("seal", epoch=2, upto={a.node: 1})
    epochs.offer(skip)
    epochs.offer(bad)
    assert epochs.advance({a.node: 1, b.node: 4}).number == 1 and bad.id in epochs.ignored


def test_of_two_rival_seals_the_one_that_sorts_first_wins_wherever_it_arrives() -> None:
    a, b = Desk(), Desk()
    early = a.write("seal", epoch=1, upto={a.node: 1})
    b.now += 1000
    late = b.write("seal", epoch=1, upto={b.node: 1})
    assert early.order_key < late.order_key
    for order in ([early, late], [late, early]):
        epochs = Epochs()
        held = {}
        for seal in order:
            epochs.offer(seal)
            held[seal.node] = 1
            epochs.advance(held)
        assert epochs.current.seal == early.id and [e.number for e in epochs.entered] == [0, 1]


# ---- desks


async def test_a_seal_starts_small_documents_and_every_desk_follows(tmp_path: Path) -> None:
    logs = await started(tmp_path, ["bridge", "front", "returns"])
    try:
        for log, prefix in zip(logs, "ABC", strict=True):
            await scans(log, 40, prefix)
        await settle(logs)
        assert all(len(doc_events(log)) == 120 for log in logs)
        seal = await logs[0].seal()
        # the seal covers itself: its desk moves at once, and the others get it (and what they lack) by runs
        assert logs[0].epoch.seal == seal.id and doc_events(logs[0]) == set()
        late = await scans(logs[1], 3, "L")  # written before the seal reached this desk: in the old document
        await settle(logs)
        same_everywhere(logs)
        assert logs[1].epoch.seal == seal.id
        assert all(doc_events(log) == set() for log in logs)  # a new document is empty: `late` came in runs
        assert set(late) <= {e.id for e in logs[0].ordered()}
        more = await scans(logs[2], 5, "M")
        await settle(logs)
        same_everywhere(logs)
        assert all(doc_events(log) == set(more) for log in logs)
        assert len(logs[0].ordered()) == 120 + 1 + 3 + 5
    finally:
        close_all(logs)


async def test_a_scan_whose_commit_is_in_flight_when_the_epoch_moves_reaches_every_desk(tmp_path: Path) -> None:
    """Found under load: a scan put in the old document, its fsync still running, when a journal run brought
    the seal, was in no document of the new epoch; the desks in that epoch never got it. (Then it was carried
    into the new document; now the new epoch's desks ask for it in runs, as for anything they lack.)"""
    logs = await started(tmp_path, ["bridge", "front"])
    try:
        await scans(logs[1], 3, "F")
        await settle(logs)
        seal = await logs[0].seal()
        await logs[0].store.commit([])
        node = logs[0].identity.node_id
        raws = await logs[0].read_run(node, 1, logs[0].seq)
        pending = asyncio.ensure_future(logs[1].append("checkout", {"patron": "P1", "item": "X"}, "staff"))
        await asyncio.sleep(0)
        assert not pending.done() and logs[1].links  # put in the old document, not yet durable
        logs[1].receive_run(node, 1, raws, logs[0].record_raw(node), "bridge")
        assert logs[1].epoch.seal == seal.id
        event = await pending
        await settle(logs)
        same_everywhere(logs)
        assert event.id in {e.id for e in logs[0].ordered()}
    finally:
        close_all(logs)


async def test_what_a_desk_behind_sends_in_runs_reaches_the_others_after_it_is_gone(tmp_path: Path) -> None:
    """A desk back from a week offline sends its scans in runs to a desk ahead of it, and is switched off
    before it moves to the new epoch itself: a third desk, in that epoch and linked only to the second, still
    gets them (in runs: a desk asks a peer for whatever it lacks)."""
    logs = await started(tmp_path, ["bridge", "front", "away"])
    try:
        await settle(logs)
        offline = await scans(logs[2], 6, "W")
        await scans(logs[1], 4, "F")
        await logs[0].seal()
        await settle(logs[:2])
        await logs[2].store.commit([])
        node = logs[2].identity.node_id
        raws = await logs[2].read_run(node, 1, logs[2].seq)
        assert logs[0].receive_run(node, 1, raws, logs[2].record_raw(node), "away") == 6
        gone = logs.pop()
        gone.close()
        await settle(logs)
        assert set(offline) <= {e.id for e in logs[1].ordered()}
        same_everywhere(logs)
        assert all(set(log.doc.keys()) >= {f"n:{log.identity.node_id}"} for log in logs)
    finally:
        close_all(logs)


def test_a_link_turned_away_gives_back_what_it_was_asked() -> None:
    from node.discovery.catchup import CatchUp

    plan = CatchUp(window=10)
    first, second = object(), object()  # two links to the same desk: both dialled at once
    assert plan.plan(first, {"n": 25}, {}) == [("n", 1, 10)]
    assert plan.plan(second, {"n": 25}, {}) == []  # asked already
    plan.release(first)  # the link that asked was the one turned away
    assert plan.plan(second, {"n": 25}, {}) == [("n", 1, 10)]
    plan.done(second, "n")
    assert plan.plan(second, {"n": 25}, {"n": 10}) == [("n", 11, 20)]
    plan.done(second, "n")
    assert plan.plan(second, {"n": 25}, {"n": 25}) == []  # nothing more


def test_the_plan_never_asks_past_a_revocation() -> None:
    from node.discovery.catchup import CatchUp

    plan = CatchUp()
    assert plan.plan("p", {"n": 9}, {"n": 3}, {"n": 5}) == [("n", 4, 5)]
    plan.done("p", "n")
    assert plan.plan("p", {"n": 9}, {"n": 5}, {"n": 5}) == []
    assert plan.behind({"n": 5}) and not plan.behind({"n": 5}, {"n": 5})  # nothing more it may take


async def test_a_desk_cut_off_for_two_epochs_comes_back(tmp_path: Path) -> None:
    """Its events reach every desk once, it gets what it missed by runs, and all fold the same state."""
    logs = await started(tmp_path, ["bridge", "front", "away"])
    try:
        await scans(logs[2], 5, "before")
        await settle(logs)
        cluster = {frozenset((0, 1))}
        away = await scans(logs[2], 30, "away")  # nobody sees these for two epochs
        await scans(logs[1], 50, "F")
        await settle(logs, cluster)
        await logs[0].seal()
        await scans(logs[0], 20, "B")
        await settle(logs, cluster)
        second = await logs[0].seal()
        await scans(logs[1], 10, "G")
        await settle(logs, cluster)
        assert logs[1].epoch.seal == second.id and logs[2].epoch.number == 0
        moved = await settle(logs)  # the cable is back
        same_everywhere(logs)
        assert logs[2].epoch.seal == second.id
        assert set(away) <= {e.id for e in logs[0].ordered()}
        assert not set(away) & doc_events(logs[0])  # they came in runs, as what it missed went to it
        assert moved["runs"] >= 30 + 50 + 20 + 2
        ids = [e.id for e in logs[0].ordered()]
        assert len(ids) == len(set(ids)) == 5 + 30 + 50 + 20 + 10 + 2
        assert all(log.epochs.entered[-2].number == 1 for log in logs)
    finally:
        close_all(logs)


async def test_a_new_desk_gets_the_history_by_runs_and_the_same_state(tmp_path: Path) -> None:
    logs = await started(tmp_path, ["bridge", "front", "gone"])
    try:
        for log, prefix in zip(logs, "ABC", strict=True):
            await scans(log, 300, prefix)
        await settle(logs)
        await logs[0].seal()
        tail = await scans(logs[1], 7, "T")
        await settle(logs[:2])
        gone = logs.pop()  # its PC died: its events live on in the others' journals
        gone.close()
        newcomer = make_log(tmp_path, "new")
        await newcomer.start()
        logs.append(newcomer)
        moved = await settle(logs)
        same_everywhere(logs)
        assert moved["runs"] >= 900 and len(newcomer.ordered()) == 900 + 1 + 7
        assert not doc_events(newcomer)  # all it lacked came in runs; its document carries what it writes
        assert set(tail) <= {e.id for e in newcomer.ordered()}
        # and a restart keeps the epoch, the small document, and every event
        newcomer.close()
        again = make_log(tmp_path, "new")
        await again.start()
        logs[-1] = again
        assert again.epoch == logs[0].epoch and len(again.ordered()) == 908
        assert not doc_events(again)
        same_everywhere(logs)
    finally:
        close_all(logs)


async def test_what_a_desk_writes_alone_travels_in_runs_and_what_follows_it_waits_for_them(tmp_path: Path) -> None:
    """A desk with no peer linked writes its scans to its journal only (no document would carry them to
    anyone): its peers get them in runs once it is back. A scan it writes once linked goes in the document
    at once; a peer that gets it there before the run leaves it there (it lies beyond a gap), so that the
    version vector stays a prefix, and takes it with the run."""
    a, b = logs = await started(tmp_path, ["a", "b"])
    try:
        node = a.identity.node_id
        a.link_down()
        alone = await scans(a, 5, "A")
        assert not doc_events(a) & set(alone)
        a.link_up()
        live = await scans(a, 1, "L")
        assert set(live) <= doc_events(a)
        await a.durable()
        out, into = a.new_sync_state(), b.new_sync_state()
        for _ in range(5):  # the document only
            if (message := a.generate_sync(out)) is not None:
                b.receive_sync(into, message, a.desk)
            if (message := b.generate_sync(into)) is not None:
                a.receive_sync(out, message, b.desk)
        assert live[0] in doc_events(b) and not b.holds(live[0]) and b.vector.get(node, 0) == 0
        moved = await settle(logs)
        assert moved["runs"] == 6 and b.vector[node] == 6
        same_everywhere(logs)
        b.close()
        b = logs[1] = make_log(tmp_path, "b")  # and after a restart
        await b.start()
        same_everywhere(logs)
    finally:
        close_all(logs)


@pytest.mark.parametrize("documents_first", [False, True])
async def test_a_revoked_desks_events_before_its_revocation_reach_every_desk(tmp_path: Path,
                                                                           documents_first: bool) -> None:
    """Found by review: a desk writes alone, then once linked, then is revoked as of the events it wrote
    alone. A desk linked only to an honest relay (which got the later one before the revocation) must still
    get those: asked for past the revocation, the run was refused whole, and asked again, forever; the
    relay's document holding the later event dropped the link the same way."""
    relay, later, revoked = logs = await started(tmp_path, ["relay", "later", "revoked"])
    try:
        node = revoked.identity.node_id
        await scans(revoked, 3, "X")
        await settle(logs)
        revoked.link_down()
        alone = await scans(revoked, 2, "A")  # 4, 5: in no document
        revoked.link_up()
        await scans(revoked, 1, "L")  # 6: in its document
        await settle([relay, revoked], documents_first=True)  # the relay gets 6 in the document, then 4-6
        assert relay.vector[node] == 6 and f"{node}:6" in doc_events(relay)
        await relay.append("revoke", {"node": node, "upto": 5, "reason": "stolen"}, "admin")
        await relay.store.commit([])
        own = relay.identity.node_id  # `later` learns of the revocation first (the relay's own run)
        later.receive_run(own, 1, await relay.read_run(own, 1, relay.seq), relay.record_raw(own), relay.desk)
        assert later.revoked == {node: 5}
        await settle([relay, later], documents_first=documents_first)
        assert later.vector[node] == 5 and set(alone) <= {e.id for e in later.ordered()}
        assert not later.holds(f"{node}:6")
        assert later.refusals[Refusal.REVOKED_NODE] >= 1  # the relay's document holds 6: left out, counted
    finally:
        close_all(logs)


async def test_a_tampered_run_is_refused_whole(tmp_path: Path) -> None:
    logs = await started(tmp_path, ["a", "b"])
    try:
        await scans(logs[0], 10, "A")
        await logs[0].store.commit([])
        node = logs[0].identity.node_id
        raws = await logs[0].read_run(node, 1, 10)
        record = logs[0].record_raw(node)
        tampered = [*raws[:4], raws[4].replace(b"A4", b"A9"), *raws[5:]]
        for bad, kind in ((tampered, Refusal.BROKEN_CHAIN), (raws[:3] + raws[4:], Refusal.MALFORMED),
                          ([raws[0][:-1] + bytes([raws[0][-1] ^ 1])], Refusal.BAD_SIGNATURE)):
            with pytest.raises(RefusedSync) as refused:
                logs[1].receive_run(node, 1, bad, record, "a")
            assert refused.value.refused.kind is kind
            assert logs[1].vector.get(node, 0) == 0
        with pytest.raises(RefusedSync) as refused:  # no record: nobody to vouch for it
            logs[1].receive_run(node, 1, raws, None, "a")
        assert refused.value.refused.kind is Refusal.UNKNOWN_NODE
        with pytest.raises(RefusedSync) as refused:  # a gap
            logs[1].receive_run(node, 3, raws[2:], record, "a")
        assert refused.value.refused.kind is Refusal.BROKEN_CHAIN
        assert logs[1].receive_run(node, 1, raws, record, "a") == 10
        assert logs[1].receive_run(node, 1, raws, record, "a") == 0  # held already: nothing new
        assert logs[1].refusals[Refusal.BROKEN_CHAIN] == 2
    finally:
        close_all(logs)


async def test_a_seal_with_a_false_upto_opens_nothing(tmp_path: Path) -> None:
    logs = await started(tmp_path, ["a", "b"])
    try:
        await scans(logs[0], 3, "A")
        await settle(logs)
        # a seal is written through the log, which fills upto in; one claiming more than its desk held
        forged = await logs[1].append("seal", {"epoch": 1, "upto": {logs[0].identity.node_id: 99}}, "x")
        await settle(logs)
        assert all(log.epoch.number == 0 and forged.id in log.epochs.ignored for log in logs)
        same_everywhere(logs)
    finally:
        close_all(logs)


# ---- any schedule


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# found by this test: two rival seals, the loser's desk sealing again on top; the winner's desk, an epoch
# "behind", was asked for nothing, so the other never saw the winning seal
@example(script=[("seal", 0, 0), ("seal", 1, 0), ("seal", 1, 0)], documents_first=False)
# a desk writes alone, then linked: the document brings its latest beyond the gap, before the run
@example(script=[("alone", 0, 0), ("scan", 0, 1), ("alone", 0, 0), ("scan", 0, 0), ("sync", 0, 1)],
         documents_first=True)
@given(script=st.lists(st.tuples(st.sampled_from(["scan", "scan", "scan", "seal", "sync", "import", "alone"]),
                                 st.integers(0, 2), st.integers(0, 2)), max_size=25),
       documents_first=st.booleans())
def test_any_schedule_of_scans_seals_and_partial_syncs_converges(tmp_path_factory, script,
                                                                  documents_first: bool) -> None:
    """Whatever desks seal when, whoever talks to whom in between (a partition is a pair that never
    talks), whichever desks write while no link is up, once all talk every desk holds every event once,
    in the same order, state and epoch."""
    async def scenario() -> None:
        root = tmp_path_factory.mktemp("epochs")
        logs = await started(root, ["d0", "d1", "d2"])
        states: dict = {}
        written: list[str] = []
        try:
            for action, a, b in script:
                if action == "scan":
                    written += await scans(logs[a], 1 + b, f"S{len(written)}-")
                elif action == "seal":
                    written.append((await logs[a].seal()).id)
                elif action == "import":
                    written += [e.id for e in await logs[a].append_many(
                        [("checkin", {"item": f"I{len(written)}-{k}"}, None) for k in range(5)], "staff")]
                elif action == "alone":  # its links go down, or come back
                    if logs[a].links:
                        logs[a].link_down()
                    else:
                        logs[a].link_up()
                elif a != b:
                    await settle(logs, {frozenset((a, b))}, states, documents_first=documents_first)
            await settle(logs, None, states, documents_first=documents_first)
            same_everywhere(logs)
            assert sorted(e.id for e in logs[0].ordered()) == sorted(written)
            for log in logs:  # the document holds only what the epoch's seal does not cover
                assert all(not log.epoch.covers(*_split(k)) for k in doc_events(log))
        finally:
            close_all(logs)

    asyncio.run(scenario())


def _split(event_id: str) -> tuple[str, int]:
    node, _, seq = event_id.partition(":")
    return node, int(seq)
