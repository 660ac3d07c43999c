"""Catch-up (issue 9): one desk that lacks N events absorbs them from one peer, in this process.

The peer's journal holds N events written by 7 desks (a healed partition, or a desk back after a week);
it then sealed its document, so they travel as journal runs: read from the peer's SQLite journal
(EventLog.read_run), then verified and kept by the empty desk (EventLog.receive_run: envelope decode, hash
chain, one signature per run, order stamps and fold, one INSERT statement per run). CPU seconds of this
process for the receiving side, and events per CPU second. Baseline, same run: Automerge alone carrying
the same events (one change each, as desks write them) into an empty document with its sync protocol.

    python bench/bench_catchup.py [N] [--profile]
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
from automerge import _automerge as am
from automerge.core import ROOT, ScalarType

from node import collector
from node.crdt.core import journal_entry
from node.crdt.event import decode_event
from node.eventlog import EventLog
from node.storage import db
from node.trust.identity import load_or_create_identity

N = int(next((a for a in sys.argv[1:] if a.isdigit()), "35000"))
PROFILE = "--profile" in sys.argv
WRITERS = 7


def open_log(root: Path, name: str) -> EventLog:
    log = EventLog(load_or_create_identity(root / name), root / name, name)
    log.open()
    return log


async def build(root: Path) -> tuple[EventLog, list[tuple[str, bytes]]]:
    """N events by WRITERS desks, all in one peer's journal (through runs, as the peer would hold them)."""
    writers = [open_log(root, f"w{i}") for i in range(WRITERS)]
    peer = open_log(root, "peer")
    for w in writers:
        await w.start()
    await peer.start()
    per = N // WRITERS
    for i, w in enumerate(writers):
        entries = [("checkout", {"patron": f"P{k % 900}", "item": f"W{i}-{k}"}, None) for k in range(per)]
        await w.append_many(entries, "bench")
        await w.store.commit([])
        node = w.identity.node_id
        first = 1
        while first <= per:
            raws = await w.read_run(node, first, per)
            peer.receive_run(node, first, raws, w.record_raw(node), w.desk)
            first += len(raws)
    await peer.seal()  # the peer's epoch covers them all: they travel in runs only
    await peer.store.commit([])
    raws = {}
    for node, top in peer.vector.items():
        raws.update({f"{node}:{i + 1}": raw for i, raw in enumerate(await peer.read_run(node, 1, top))})
    pairs = [(e.id, raws[e.id]) for e in peer.ordered()]
    for w in writers:
        w.close()
    return peer, pairs


async def absorb(root: Path, peer: EventLog) -> tuple[float, float, int]:
    fresh = open_log(root, "fresh")
    await fresh.start()
    collector.freeze_loaded()  # as `circmesh run` does once the desk serves
    cpu, wall, main_cpu = time.process_time(), time.perf_counter(), time.thread_time()
    got = 0
    for node, top in sorted(peer.vector.items()):
        first = 1
        while first <= top:
            raws = await peer.read_run(node, first, top)
            got += fresh.receive_run(node, first, raws, peer.record_raw(node), peer.desk)
            first += len(raws)
    await fresh.store.commit([])
    state = fresh.state  # the fold is part of taking them in
    cpu, wall, main_cpu = time.process_time() - cpu, time.perf_counter() - wall, time.thread_time() - main_cpu
    print(f"of which the event loop's thread {main_cpu:.2f} CPU s, the journal's writer thread {cpu - main_cpu:.2f}")
    assert got == len(peer.ordered()) and len(state.loans) == got - 1, (got, len(state.loans))
    assert fresh.epoch == peer.epoch and not fresh.doc_events, (fresh.epoch, fresh.doc_events)
    fresh.close()
    return cpu, wall, got


async def floor(root: Path, pairs: list[tuple[str, bytes]]) -> tuple[float, float]:
    """CPU seconds of two parts no design of the bulk path can skip, alone: reading each envelope
    (event.decode_event) and writing each event as a journal row with its indexes (db.journal_insert, one
    statement per desk's run, committed, as receive_run does)."""
    cpu = time.process_time()
    events = [decode_event(raw) for _, raw in pairs]
    decode_cpu = time.process_time() - cpu
    runs: dict[str, list[db.JournalEntry]] = {}
    for pos, (event, (_, raw)) in enumerate(zip(events, pairs, strict=True), start=1):
        runs.setdefault(event.node, []).append(journal_entry(event, raw, pos, event.order_key))
    store = db.Store(root / "floor.sqlite")
    cpu = time.process_time()
    for entries in runs.values():
        for i in range(0, len(entries), 5000):
            store.submit([db.journal_insert(entries[i:i + 5000])])
    await store.commit([])
    insert_cpu = time.process_time() - cpu
    store.close()
    return decode_cpu, insert_cpu


def automerge_only(pairs: list[tuple[str, bytes]]) -> tuple[float, float]:
    """The same events, one change each, carried by Automerge's sync protocol into an empty document."""
    source = am.Document(b"\x01" * 16)
    for key, raw in pairs:
        with source.transaction() as tx:
            tx.put(ROOT, key, ScalarType.Bytes, raw)
    target = am.Document(b"\x02" * 16)
    s_out, t_in = am.SyncState(), am.SyncState()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(100):
        quiet = True
        for a, b, sa, sb in ((source, target, s_out, t_in), (target, source, t_in, s_out)):
            message = a.generate_sync_message(sa)
            if message is not None:
                quiet = False
                b.receive_sync_message(sb, am.Message.decode(message.encode()))
        if quiet:
            break
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    assert len(target.keys(ROOT)) == len(pairs)
    return cpu, wall


async def main() -> None:
    collector.tune()  # as `circmesh run` does
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        peer, pairs = await build(root)
        size = sum(len(raw) for _, raw in pairs)
        took = time.perf_counter() - t0
        print(f"built: {len(pairs)} events by {WRITERS} desks, {size / 1e6:.1f} MB, in {took:.1f} s")
        profiler = cProfile.Profile() if PROFILE else None
        if profiler:
            profiler.enable()
        cpu, wall, got = await absorb(root, peer)
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
        am_cpu, am_wall = automerge_only(pairs)
        decode_cpu, insert_cpu = await floor(root, pairs)
        peer.close()
    print(f"journal runs: {got} events absorbed in {wall:.2f} s wall, {cpu:.2f} CPU s: "
          f"{got / cpu:,.0f} events per CPU second (budget >= 70,000)")
    print(f"Automerge alone, same events: {am_wall:.2f} s wall, {am_cpu:.2f} CPU s: "
          f"{len(pairs) / am_cpu:,.0f} events per CPU second")
    print(f"ratio runs / Automerge-only CPU: {cpu / am_cpu:.2f}x (goal <= 3x)")
    per = 1e6 / len(pairs)
    print(f"floor, same events: envelope reading alone {decode_cpu * per:.1f} us, journal rows alone "
          f"{insert_cpu * per:.1f} us an event: together at most {len(pairs) / (decode_cpu + insert_cpu):,.0f} "
          f"events per CPU second before any chain, order or fold (runs take {cpu * per:.1f} us an event)")


if __name__ == "__main__":
    asyncio.run(main())
