"""The fold's base at its edges, found by a review and kept as regression tests: a base moving while a peer's
batch is taken in, a late `applied` sorting before the base, a void withdrawn by a rival answer, and a restart
after an answer about history. Real EventLogs and SQLite journals, no sockets (tests/test_epochs.py `settle`)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

from node.eventlog import EventLog
from node.ilsbridge.schedule import pending_events
from tests.test_epochs import make_log, settle
from tests.test_fold_base import (  # noqa: F401 - small_bases is a fixture
    answered_history,
    full_summary,
    quiet,
    small_bases,
    started,
    traffic,
    whole,
)


def when_the_base_moves_in(log: EventLog, then: Callable[[], None]) -> list[bool]:
    """Wraps log.receive_sync and log.receive_run (a peer's batch by either path): the first time a batch
    moves the base, calls `then()`; returns whether every event held was readable at that moment (from
    memory or the journal)."""
    seen: list[bool] = []

    def wrap(original: Callable[..., int]) -> Callable[..., int]:
        def wrapped(*args: object) -> int:
            before = log.ordered_log.base_key
            log.catchup.seen.clear()  # as if the peer had not announced more yet: the base may move now
            n = original(*args)
            if not seen and log.ordered_log.base_key != before:
                seen.append(all(log.event(f"{node}:{s}") is not None
                                for node, top in log.vector.items() for s in range(1, top + 1)))
                then()
            return n
        return wrapped

    log.receive_sync = wrap(log.receive_sync)  # type: ignore[method-assign]
    log.receive_run = wrap(log.receive_run)  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("in_window", [True, False])
async def test_a_base_moved_by_a_peers_batch_keeps_every_event_readable(tmp_path: Path, in_window: bool) -> None:
    """Another link's late run right after (before the batch's fsync) or later: every desk ends with the fold
    of all events."""
    a, b, c = await started(tmp_path, "a", "b", "c")
    rng = random.Random(9)
    await traffic(c, 10, rng, answer=0)  # c: cut off, its scans sort early
    await traffic(a, 200, rng)
    raws = await c.read_run(c.identity.node_id, 1, c.seq)

    def late_run() -> None:
        b.receive_run(c.identity.node_id, 1, raws, c.record_raw(c.identity.node_id), "c")
        _ = b.state  # any read: the stale base is refolded from the journal and memory

    readable = when_the_base_moves_in(b, late_run if in_window else (lambda: None))
    await settle([a, b])
    assert readable == [True]
    if not in_window:
        late_run()
    await settle([a, b, c])
    for log in (a, b, c):
        await quiet(log)
    assert full_summary(b) == whole(b) == full_summary(a)


async def test_no_predecessor_goes_missing_when_the_base_moves_mid_batch(tmp_path: Path) -> None:
    """An event naming one the base just moved past must find it: else it waits for it forever, and the base
    never moves again."""
    a, b, d = await started(tmp_path, "a", "b", "d")
    rng = random.Random(9)
    await traffic(a, 100, rng)
    await settle([a, d])
    await d.append("in_house_use", {"item": "Z"}, "staff")  # names a's latest as its predecessor
    await traffic(a, 100, rng)
    raws = await d.read_run(d.identity.node_id, 1, d.seq)
    readable = when_the_base_moves_in(b, lambda: b.receive_run(d.identity.node_id, 1, raws,
                                                               d.record_raw(d.identity.node_id), "d"))
    await settle([a, b])
    assert readable == [True]
    await quiet(b)
    base = b.ordered_log.base_key
    for _ in range(3):
        await traffic(b, 100, rng)
        await quiet(b)
    assert b.ordered_log.base_key != base and full_summary(b) == whole(b)


async def late_answer(tmp_path: Path) -> tuple[EventLog, str]:
    """A desk cut off (an old bridge) answered a scan; its `applied` reaches `a` after a's base moved past it."""
    a, c = await started(tmp_path, "a", "c")
    scan = await a.append("checkout", {"item": "X", "patron": "P"}, "staff")
    await settle([a, c])
    await c.append("applied", {"event": scan.id, "status": "applied", "message": "", "term": 1}, "bridge")
    await traffic(a, 200, random.Random(4))  # a's base moves past both; the scan stays in memory as open work
    await quiet(a)
    assert scan.id in a.ordered_log.held_ids and not a.answered(scan.id)
    raws = await c.read_run(c.identity.node_id, 1, c.seq)
    a.receive_run(c.identity.node_id, 1, raws, c.record_raw(c.identity.node_id), "c")
    return a, scan.id


async def test_a_late_answer_counts_before_its_row_is_written(tmp_path: Path) -> None:
    a, scan = await late_answer(tmp_path)
    assert a.answered(scan)  # asked before the commit: memory holds the answer
    await quiet(a)
    assert a.answered(scan)


async def test_a_late_answer_still_counts_after_the_base_moves_again(tmp_path: Path) -> None:
    """Else the bridge would send the scan to the ILS a second time."""
    a, scan = await late_answer(tmp_path)
    a.answered(scan)
    await quiet(a)
    await traffic(a, 200, random.Random(5))
    await quiet(a)
    assert a.answered(scan)
    state = a.state
    pending = pending_events([e for e in a.ordered() if e.id not in state.voided], state, a.answered)
    assert scan not in {e.id for e in pending}


def pending(log: EventLog) -> set[str]:
    state = log.state
    return {e.id for e in pending_events([e for e in log.ordered() if e.id not in state.voided], state, log.answered)}


async def test_a_scan_voided_no_more_is_open_work_again(tmp_path: Path) -> None:
    """An admin's answer voided a scan, which left memory with the base; a rival answer disputes it (neither
    stands): the scan is open work again, and the bridge must see it."""
    a, b = await started(tmp_path, "a", "b")
    ea = await a.append("checkout", {"item": "X", "patron": "PA"}, "staff")
    eb = await b.append("checkout", {"item": "X", "patron": "PB"}, "staff")
    await settle([a, b])
    conflict = next(k for k in a.state.conflicts.values() if k.kind == "concurrent_checkout")
    await a.append("resolve", {"conflict": conflict.id, "action": "keep", "event": ea.id}, "admin")
    await b.append("resolve", {"conflict": conflict.id, "action": "keep", "event": eb.id}, "admin")
    await traffic(a, 200, random.Random(3))  # a's base moves past eb, voided on a: it leaves memory
    await quiet(a)
    await settle([a, b])
    for log in (a, b):
        await quiet(log)
    assert conflict.id in a.state.disputed and eb.id not in a.state.voided
    assert full_summary(a) == whole(a) == full_summary(b)
    assert pending(a) == pending(b) and eb.id in pending(a)


async def test_a_restart_after_an_answer_about_history_does_not_refold_it_again(tmp_path: Path) -> None:
    log, first = await answered_history(tmp_path)
    await log.append("void", {"event": first.id}, "admin")
    _ = log.state
    await log.append("checkout", {"item": "NEW", "patron": "P2"}, "staff")  # the refolded base is saved
    await quiet(log)
    log.close()
    again = make_log(tmp_path, "a")
    await again.start()
    _ = again.state
    assert again.ordered_log.base_refolds == 0  # started from the saved base: no pass over history
    assert "OLD" not in again.state.loans and "NEW" in again.state.loans
    assert full_summary(again) == whole(again)
    again.close()
