"""A peer's concurrent event landing just before the tail of a long log (issue 9), then a read of the state.

A log of N events written by 3 desks (each holding the others' events up to a few scans ago), then ROUNDS
rounds of: desk 0 scans (its event sorts last, folded as it comes), desk 1 scans concurrently with a clock
5 ms behind (its event sorts just before desk 0's), and the state is read. CPU seconds of this process
per round. Baseline, same run: the same with no checkpoints, i.e. a full refold from the start at every
read (what `OrderedLog` did before). Also: the memory one checkpoint holds.

    python bench/bench_fold.py [N] [ROUNDS]
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import _common  # noqa: F401  (puts the project on sys.path)

from node.crdt.event import GENESIS, Event, chain_hash, make_event
from node.crdt.order import CHECKPOINT_EVERY, CHECKPOINTS_KEPT, OrderedLog
from node.crdt.state import copy_state, fold
from tests.factories import DUE, START_MS, SimDesk

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 300
LAG = 3  # a desk holds the others' events up to this many scans ago


class Writer:
    """A SimDesk's identity and clock, writing with a version vector it is given (SimDesk.write rebuilds its
    vector from every event it knows: quadratic over a log this long)."""

    def __init__(self) -> None:
        self.desk = SimDesk()
        self.last_raw = b""

    def write(self, i: int, now: int, seen: dict[str, int]) -> Event:
        d = self.desk
        d.now = now
        d.seq += 1
        kind, body = (("checkout", {"patron": f"P{i % 500}", "item": f"I{i % 4000}", "due": DUE}) if i % 3
                      else ("checkin", {"item": f"I{(i - 3) % 4000}"}))
        event = make_event(node=d.node, seq=d.seq, hlc=d.clock.tick(), at=now, kind=kind, body=body,
                           staff="bench", seen=seen, sign=d.ident.sign,
                           prev=chain_hash(self.last_raw) if self.last_raw else GENESIS)
        self.last_raw = event.encode()
        return event


def build() -> tuple[list[Event], list[tuple[Event, Event]]]:
    desks = [Writer() for _ in range(3)]
    written: list[Event] = []
    now = START_MS
    for i in range(N):  # 60 scans/s in all: one every ~17 ms, round robin
        now += 17
        w = desks[i % 3]
        upto = max(0, len(written) - LAG)
        seen = {e.node: e.seq for e in written[max(0, upto - 6):upto] if e.node != w.desk.node}
        written.append(w.write(i, now, seen))
    rounds: list[tuple[Event, Event]] = []
    held = written[-1]
    for r in range(ROUNDS):
        now += 17
        tail = desks[0].write(N + 2 * r, now, {held.node: held.seq} if held.node != desks[0].desk.node else {})
        late = desks[1].write(N + 2 * r + 1, now - 5, {desks[2].desk.node: desks[2].desk.seq})
        rounds.append((tail, late))
        held = tail
    return written, rounds


def run(written: list[Event], rounds: list[tuple[Event, Event]], every: int, kept: int) -> tuple[float, OrderedLog]:
    log = OrderedLog(checkpoint_every=every, checkpoints_kept=kept)
    for e in written:
        log.add(e)
    _ = log.state
    t0 = time.process_time()
    for tail, late in rounds:
        log.add(tail)
        log.add(late)
        _ = log.state
    per_round = (time.process_time() - t0) / len(rounds)
    assert log.state == fold(iter(log))
    return per_round, log


def main() -> None:
    written, rounds = build()
    print(f"log: {N} events from 3 desks, then {ROUNDS} rounds of (desk 0's scan at the tail, desk 1's "
          f"concurrent scan sorting just before it, read the state)")
    baseline, log = run(written, rounds, CHECKPOINT_EVERY, 0)
    late_positions = {log.key_of(late.id) for _, late in rounds}
    assert all(k != log._keys[-1] for k in late_positions)
    print(f"baseline (no checkpoints: full refold at every read): {baseline * 1e3:.2f} ms per round "
          f"({log.refolds} refolds)")
    for every in sorted({500, 1000, 2000, CHECKPOINT_EVERY}):
        per, log = run(written, rounds, every, CHECKPOINTS_KEPT)
        mark = " (default)" if every == CHECKPOINT_EVERY else ""
        print(f"checkpoint every {every}{mark}, {CHECKPOINTS_KEPT} kept: {per * 1e3:.3f} ms per round "
              f"({log.resumes} resumes, {log.refolds} full refolds); baseline / this = {baseline / per:.0f}x")
    t0 = time.process_time()
    for _ in range(5):
        fold(iter(log))
    per_fold = (time.process_time() - t0) / 5
    print(f"fold() of the whole log ({len(log)} events), called directly: {per_fold * 1e3:.1f} ms")
    state = log.state
    tracemalloc.start()
    copy = copy_state(state)
    size, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"one checkpoint holds ~{size / 1e6:.2f} MB ({len(copy.loans)} loans, {len(copy.returned)} returned, "
          f"{len(copy.conflicts)} conflicts; events shared)")


if __name__ == "__main__":
    main()
