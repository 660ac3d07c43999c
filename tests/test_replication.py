"""Replication through real Automerge documents and real SQLite journals, without sockets: sync messages
between EventLogs are delivered in random order, duplicated or dropped; once the desks are allowed to
finish a clean sync, every desk has the same log, order and state. Also: restart from disk."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.crdt.event import EventError
from node.eventlog import EventLog
from node.storage.gate import StorageFailure
from node.trust.identity import load_or_create_identity
from tests.test_state import summary


def make_logs(root: Path, n: int) -> list[EventLog]:
    logs = []
    for i in range(n):
        d = root / f"d{i}"
        log = EventLog(load_or_create_identity(d), d, f"desk {i}")
        log.open()
        log.link_up()  # these desks replicate through their documents alone
        logs.append(log)
    return logs


async def full_sync(logs: list[EventLog]) -> None:
    """Fresh sync states between every pair, until nobody has anything more to say (bounded)."""
    states = {(i, j): logs[i].new_sync_state() for i in range(len(logs)) for j in range(len(logs)) if i != j}
    for _ in range(50):
        quiet = True
        for (i, j), state in states.items():
            message = logs[i].generate_sync(state)
            if message is not None:
                quiet = False
                logs[j].receive_sync(states[(j, i)], message, f"desk {i}")
        if quiet:
            return
    raise AssertionError("sync did not settle")


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2), st.sampled_from(
    ["scan", "scan", "deliver", "duplicate", "drop", "reorder"]), st.integers(0, 3)), max_size=30),
    seed=st.integers(0, 1000))
def test_any_delivery_schedule_converges_to_identical_logs(tmp_path_factory, script, seed) -> None:
    async def scenario() -> None:
        root = tmp_path_factory.mktemp("repl")
        logs = make_logs(root, 3)
        for log in logs:
            await log.start()
        rng = random.Random(seed)
        states = {(i, j): logs[i].new_sync_state() for i in range(3) for j in range(3) if i != j}
        in_flight: list[tuple[int, int, bytes]] = []
        acknowledged = []
        for a, b, action, item in script:
            if action == "scan":
                kind = rng.choice(["checkout", "checkin"])
                body = {"patron": f"P{b}", "item": f"I{item}"} if kind == "checkout" else {"item": f"I{item}"}
                acknowledged.append((await logs[a].append(kind, body, "tester")).id)
            elif a != b:
                message = logs[a].generate_sync(states[(a, b)])
                if message is not None and action != "drop":
                    in_flight.append((a, b, message))
                    if action == "duplicate":
                        in_flight.append((a, b, message))
                if action == "reorder":
                    rng.shuffle(in_flight)
                if in_flight and action in ("deliver", "duplicate", "reorder"):
                    src, dst, msg = in_flight.pop(0)
                    logs[dst].receive_sync(states[(dst, src)], msg, f"desk {src}")
        await full_sync(logs)
        orders = [[e.id for e in log.ordered()] for log in logs]
        assert orders[0] == orders[1] == orders[2]
        assert set(acknowledged) <= set(orders[0]) and len(orders[0]) == len(acknowledged)
        assert summary(logs[0].state) == summary(logs[1].state) == summary(logs[2].state)
        assert all(not log.refusals for log in logs)
        for log in logs:
            await log.store.commit([])
            log.close()

    asyncio.run(scenario())


async def test_restart_loads_journal_document_and_sequence(tmp_path: Path) -> None:
    [a, b] = make_logs(tmp_path, 2)
    await a.start()
    await b.start()
    for i in range(30):
        await a.append("checkout", {"patron": "P1", "item": f"I{i}"}, "tester")
    await b.append("checkin", {"item": "I0"}, "tester")
    await full_sync([a, b])
    await a.store.commit([])
    a.close()
    [a2] = make_logs(tmp_path, 1)
    assert a2.seq == 30 and len(a2.events) == 31
    assert [e.id for e in a2.ordered()] == [e.id for e in b.ordered()]
    assert "I0" not in a2.state.loans and len(a2.state.loans) == 29
    await a2.start()
    event = await a2.append("checkin", {"item": "I1"}, "tester")
    assert event.seq == 31  # never reuses a sequence number
    await full_sync([a2, b])
    assert [e.id for e in a2.ordered()] == [e.id for e in b.ordered()]
    a2.close()
    b.close()


async def test_compaction_keeps_everything(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("node.eventlog.COMPACT_EVERY", 10)
    [a] = make_logs(tmp_path, 1)
    await a.start()
    for i in range(35):
        await a.append("in_house_use", {"item": f"I{i}"}, "tester")
    await a.store.commit([])
    rows = await a.store.run(lambda c: c.execute("SELECT COUNT(*) FROM changes").fetchone()[0])
    assert rows < 35  # compacted into the saved document
    a.close()
    [a2] = make_logs(tmp_path, 1)
    assert len(a2.events) == 35 and set(a2.doc.keys()) >= {e for e in a2.events}
    a2.close()




async def test_concurrent_appends_chain_and_verify(tmp_path: Path) -> None:
    """A scan and the bridge's outcome can be written at the same moment: both must chain correctly."""
    [a, b] = make_logs(tmp_path, 2)
    await a.start()
    await b.start()
    events = await asyncio.gather(*(a.append("in_house_use", {"item": f"I{i}"}, "t") for i in range(20)))
    assert sorted(e.seq for e in events) == list(range(1, 21))
    await full_sync([a, b])
    assert len(b.events) == 20 and not b.refusals
    a.close()
    b.close()


async def test_a_batch_written_while_desks_scan_chains_verifies_and_survives_a_restart(tmp_path: Path) -> None:
    """An imported file is written as one batch while the desk keeps scanning: no sequence number is
    taken twice, the hash chain holds for a peer, and the batch is on disk whole."""
    [a, b] = make_logs(tmp_path, 2)
    await a.start()
    await b.start()
    batch = [("checkout", {"patron": f"P{i}", "item": f"B{i}"}, 1_790_000_000_000 + i) for i in range(5_000)]
    results = await asyncio.gather(a.append_many(batch, "t"),
                                   *(a.append("in_house_use", {"item": f"I{i}"}, "t") for i in range(20)))
    written, scans = results[0], results[1:]
    assert [e.seq for e in written] == list(range(written[0].seq, written[0].seq + 5_000))
    assert sorted([e.seq for e in written] + [e.seq for e in scans]) == list(range(1, 5_021))
    assert [e.at for e in written[:2]] == [1_790_000_000_000, 1_790_000_000_001]
    await full_sync([a, b])
    assert len(b.events) == 5_020 and not b.refusals
    await a.store.commit([])
    a.close()
    [a2] = make_logs(tmp_path, 1)
    assert a2.seq == 5_020 and len(a2.events) == 5_020
    a2.close()
    b.close()


async def test_a_batch_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    """A malformed entry anywhere, or a disk that fills up half way, leaves no event of the batch."""
    [a] = make_logs(tmp_path, 1)
    await a.start()
    for i in range(3):
        await a.append("in_house_use", {"item": f"I{i}"}, "t")
    good = [("checkin", {"item": f"B{i}"}, None) for i in range(4_000)]
    with pytest.raises(EventError, match="entry 2001"):
        await a.append_many([*good[:2_000], ("payment", {"patron": "P", "amount": "0.001"}, None), *good], "t")
    with pytest.raises(EventError, match="entry 1: its time is not a date"):
        await a.append_many([("checkin", {"item": "B"}, -1)], "t")
    assert a.seq == 3 and len(a.events) == 3
    # a real full disk: SQLite may not grow the file past its present size
    pages = await a.store.run(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
    await a.store.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 2}").fetchone())
    with pytest.raises(StorageFailure, match="full"):
        await a.append_many(good, "t")
    assert len(a.events) == 3 and a.failed  # and the desk takes no more scans
    with pytest.raises(StorageFailure):
        await a.append("checkin", {"item": "X"}, "t")
    a.close()
    [a2] = make_logs(tmp_path, 1)
    assert a2.seq == 3 and len(a2.events) == 3
    a2.close()


async def test_a_journal_kept_before_meanings_and_chains_were_stored_is_read_in_full(tmp_path: Path) -> None:
    """Journals written by earlier versions lack (node, seq) and `meaning`: both are added at start, and
    their rows are decoded and checked in full, as they were."""
    import sqlite3

    [log] = make_logs(tmp_path, 1)
    await log.start()
    written = [await log.append("checkout", {"patron": "P1", "item": f"I{k}"}, "staff") for k in range(5)]
    await log.store.commit([])
    log.close()
    with sqlite3.connect(tmp_path / "d0" / "circmesh.sqlite") as conn:  # as an older desk left it
        conn.execute("DROP INDEX journal_chain")
        conn.execute("CREATE TABLE old AS SELECT pos, id, raw FROM journal")
        conn.execute("DROP TABLE journal")
        conn.execute("ALTER TABLE old RENAME TO journal")
    [again] = make_logs(tmp_path, 1)
    assert [e.id for e in again.ordered()] == [e.id for e in written]
    assert (await again.read_run(written[0].node, 2, 3)) == [e.encode() for e in written[1:3]]
    again.close()
