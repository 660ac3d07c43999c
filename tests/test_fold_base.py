"""The fold's base: history leaves memory, a desk starts from a checkpoint, and the state is still the fold of
every event it holds. Real EventLogs on real SQLite journals and Automerge documents, without sockets
(tests/test_epochs.py `settle` moves events between them as the links do)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

import node.eventlog as eventlog
from node.crdt.event import DESK_KINDS, Event
from node.crdt.state import CirculationState, fold
from node.eventlog import EventLog
from node.ilsbridge.bridge import history_floor, recorded_times
from node.ilsbridge.mapping import IlsTime, ils_times
from tests.test_epochs import make_log, settle
from tests.test_state import summary

EVERY, KEPT = 60, 15


@pytest.fixture(autouse=True)
def small_bases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eventlog, "BASE_EVERY", EVERY)
    monkeypatch.setattr(eventlog, "BASE_TAIL_KEPT", KEPT)
    monkeypatch.setattr(eventlog, "SETTLE_MS", 0)  # these desks write their history within seconds
    monkeypatch.setattr(eventlog, "BULK_SETTLE_S", 0.0)


async def quiet(log: EventLog) -> None:
    """Until everything is written."""
    await log.store.commit([])
    await asyncio.sleep(0)


def whole(log: EventLog) -> tuple:
    """The state folded from every event the journal (and memory) holds, in order: what the desk must show."""
    state = fold(log.in_order())
    return (*summary(state), sorted((t, o.status, o.event) for t, o in state.outcomes.items()), *rest(state))


def full_summary(log: EventLog) -> tuple:
    """What the desk shows: its state, and every outcome, those retired with the history read back."""
    state = log.state
    targets = {e.body["event"] for e in log.in_order() if e.kind == "applied"}
    outcomes = sorted((t, o.status, o.event) for t in targets if (o := log.outcome(t)) is not None)
    return (*summary(state), outcomes, *rest(state))


def rest(state: CirculationState) -> tuple:
    return (sorted(state.in_house_uses.items()), sorted(state.registrations.items()), state.events_seen)


async def traffic(log: EventLog, n: int, rng: random.Random, *, answer: float = 0.9, prefix: str = "I") -> list[str]:
    """Scans as a desk makes them (loans, returns, in-house uses), most of them answered by the ILS."""
    written = []
    for _ in range(n):
        item = f"{prefix}{rng.randrange(40)}"
        kind = rng.choice(["checkout", "checkout", "checkin", "in_house_use"])
        body = {"item": item, "patron": f"P{rng.randrange(9)}"} if kind == "checkout" else {"item": item}
        event = await log.append(kind, body, "staff")
        written.append(event.id)
        if rng.random() < answer:
            await log.append("applied", {"event": event.id, "status": "applied", "message": "", "term": 1}, "bridge")
    return written


async def test_history_leaves_memory_and_a_desk_restarts_from_its_base(tmp_path: Path) -> None:
    log = make_log(tmp_path, "a")
    await log.start()
    rng = random.Random(1)
    written = await traffic(log, 400, rng)
    await quiet(log)
    assert log.ordered_log.base_key is not None
    assert len(log.ordered_log) < log.event_count / 2  # most of the history is only in the journal now
    assert log.event_count == len(list(log.in_order()))
    assert full_summary(log) == whole(log)
    unanswered = {e.id for e in log.ordered() if e.kind != "applied" and not log.answered(e.id)}
    assert unanswered and unanswered <= set(log.ordered_log.by_id)  # open work stays in memory
    before = full_summary(log)
    log.close()

    again = make_log(tmp_path, "a")
    await again.start()
    assert again.ordered_log.base_key is not None  # started from the base…
    assert len(again.ordered_log) < again.event_count / 2  # …reading back only what follows it and open work
    assert full_summary(again) == before == whole(again)
    assert again.vector == log.vector and again.seq == log.seq
    assert {e.id for e in again.ordered() if e.kind != "applied" and not again.answered(e.id)} == unanswered
    assert sum(again.state.retired.values()) > 300  # history's outcomes are counted, not held
    assert again.event(written[0]) is not None and written[0] in again.events  # history read from the journal
    more = await traffic(again, 30, rng)  # it goes on writing, chained to what it wrote before
    assert again.event(more[-1]) is not None and full_summary(again) == whole(again)
    again.close()


async def test_a_late_desk_sorting_before_the_base_refolds_it_on_every_desk(tmp_path: Path) -> None:
    """A desk cut off for a while, its clock behind: its scans sort before the others' bases. Every desk ends
    with the fold of all events, before and after a restart."""
    a, b, late = await started(tmp_path, "a", "b", "late")
    rng = random.Random(2)
    offline = await traffic(late, 40, rng, answer=0, prefix="I")  # on items the others lend too
    for _ in range(3):
        await traffic(a, 60, rng)
        await settle([a, b])
        await traffic(b, 60, rng)
        await settle([a, b])
    for log in (a, b):
        await quiet(log)
        assert log.ordered_log.base_key is not None
    assert min(late.ordered_log.key_of(i) for i in offline) < a.ordered_log.base_key  # it sorts inside history
    refolds = a.ordered_log.base_refolds
    await settle([a, b, late])
    for log in (a, b, late):
        await quiet(log)
    states = [full_summary(log) for log in (a, b, late)]
    assert a.ordered_log.base_refolds > refolds
    assert states[0] == states[1] == states[2] == whole(a)
    assert set(offline) <= set(a.ordered_log.by_id)  # unanswered: open work, in memory for the bridge
    for name, log in zip(("a", "b", "late"), (a, b, late), strict=True):
        log.close()
        again = make_log(tmp_path, name)
        await again.start()
        assert full_summary(again) == states[0]
        again.close()


async def started(root: Path, *names: str) -> list[EventLog]:
    """Desks started, and linked to each other once."""
    logs = [make_log(root, name) for name in names]
    for log in logs:
        await log.start()
    await settle(logs)
    return logs


async def answered_history(root: Path) -> tuple[EventLog, Event]:
    """Desk "a", whose first scan (of item OLD), answered by the ILS, its base has moved past."""
    log = make_log(root, "a")
    await log.start()
    first = await log.append("checkout", {"item": "OLD", "patron": "P1"}, "staff")
    await log.append("applied", {"event": first.id, "status": "applied", "message": "", "term": 1}, "bridge")
    await traffic(log, 200, random.Random(3))
    await quiet(log)
    return log, first


async def test_an_answer_about_history_refolds_the_base(tmp_path: Path) -> None:
    log, first = await answered_history(tmp_path)
    assert log.ordered_log.base_key is not None and first.id not in log.ordered_log.by_id
    assert log.state.loans.get("OLD") is not None
    refolds = log.ordered_log.base_refolds
    await log.append("void", {"event": first.id}, "admin")
    assert "OLD" not in log.state.loans and log.ordered_log.base_refolds == refolds + 1
    assert full_summary(log) == whole(log)
    await log.append("checkout", {"item": "NEW", "patron": "P2"}, "staff")
    assert log.ordered_log.base_refolds == refolds + 1  # an event after the base folds on from it
    before = full_summary(log)
    log.close()
    again = make_log(tmp_path, "a")
    await again.start()
    assert full_summary(again) == before
    again.close()


async def test_the_time_the_ils_was_given_is_exported_after_its_outcome_retired(tmp_path: Path) -> None:
    """An export gives each operation the time the bridge recorded when it sent it (a desk clock that was
    off, corrected), also once that outcome left memory with the history."""
    log = make_log(tmp_path, "a")
    await log.start()
    first = await log.append("checkout", {"item": "OLD", "patron": "P1"}, "staff")
    answer = {"event": first.id, "status": "applied", "message": "", "term": 1}
    await log.append("applied", answer | {"ils_at": first.at - 3_600_000, "ils_at_by": "link"}, "bridge")
    await log.append("applied", answer | {"ils_at": first.at - 60_000, "ils_at_by": "link"}, "bridge")  # not first
    await traffic(log, 200, random.Random(5))
    await quiet(log)
    log.close()
    log = make_log(tmp_path, "a")  # started again: from its base, which retired that outcome
    await log.start()
    assert first.id not in log.ordered_log.by_id and first.id not in log.state.outcomes
    times = recorded_times(log.in_order(), log.state.voided)
    assert times[first.id] == first.at - 3_600_000
    exported = ils_times([e for e in log.in_order() if e.kind in DESK_KINDS], lambda node: None, times)
    assert exported[first.id].at == first.at - 3_600_000
    log.close()


async def test_a_checkin_is_not_dated_before_a_loan_that_left_memory(tmp_path: Path) -> None:
    """The bridge corrects a desk clock that runs ahead, but never dates a checkin before the loan it ends,
    even when that loan was lent (and sent) before the fold's base: its time is read back from history."""
    log, first = await answered_history(tmp_path)
    log.close()
    log = make_log(tmp_path, "a")
    await log.start()
    assert first.id not in log.ordered_log.by_id and log.base_loans()["OLD"].event == first.id
    checkin = await log.append("checkin", {"item": "OLD"}, "staff")
    ahead = lambda node: (checkin.at - first.at + 60_000, "link")  # noqa: E731 - corrected to before the loan
    in_memory = {e.id: e for e in log.ordered()}
    assert ils_times([checkin], ahead)[checkin.id].at < first.at  # what the in-memory events alone would give
    floor = history_floor(log, [checkin], log.base_loans(), in_memory)
    assert floor == {"item:OLD": first.at}
    assert ils_times([checkin], ahead, {}, floor)[checkin.id] == IlsTime(first.at, "order")
    log.close()


async def test_a_base_that_cannot_be_read_is_not_used(tmp_path: Path) -> None:
    log = make_log(tmp_path, "a")
    await log.start()
    await traffic(log, 200, random.Random(4))
    await quiet(log)
    before = full_summary(log)
    log.close()
    with sqlite3.connect(tmp_path / "a" / "circmesh.sqlite") as c:
        c.execute("UPDATE base SET bytes = ?", (b"\x93garbage",))
    again = make_log(tmp_path, "a")
    await again.start()
    assert again.ordered_log.base_key is None and len(again.ordered_log) == again.event_count
    assert full_summary(again) == before
    again.close()


async def test_the_base_moves_while_scans_are_always_in_flight(tmp_path: Path) -> None:
    """A busy desk always has a scan being written: the base moves all the same, to before the earliest one
    in flight, and a restart finds every scan."""
    log = make_log(tmp_path, "a")
    await log.start()
    for round_ in range(8):
        made = await asyncio.gather(*(log.append("checkout", {"item": f"R{round_}-{k}", "patron": "P1"}, "staff")
                                      for k in range(25)))
        await asyncio.gather(*(log.append("applied", {"event": e.id, "status": "applied", "message": "",
                                                      "term": 1}, "bridge") for e in made))
    await quiet(log)
    assert log.ordered_log.base_key is not None and len(log.ordered_log) < log.event_count
    before = full_summary(log)
    assert before == whole(log)
    log.close()
    again = make_log(tmp_path, "a")
    await again.start()
    assert full_summary(again) == before and len(again.state.loans) == 200
    again.close()


async def test_no_base_is_taken_while_events_may_still_come_that_sort_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A desk that knows a peer holds more than it does (catching up), or that has just received runs, keeps
    its history in memory for now: what comes next would sort inside it and cost a refold from the journal."""
    log = make_log(tmp_path, "a")
    await log.start()
    log.catchup.plan("peer", {"0" * 32: 5}, log.vector)  # a peer holds 5 we lack
    await traffic(log, 200, random.Random(5))
    assert log.ordered_log.base_key is None and log.catchup.behind(log.vector)
    log.catchup.seen.clear()
    monkeypatch.setattr(eventlog, "SETTLE_MS", 3_600_000)  # none of these scans is an hour old
    await traffic(log, 100, random.Random(6))
    assert log.ordered_log.base_key is None
    monkeypatch.setattr(eventlog, "SETTLE_MS", 0)
    await traffic(log, 100, random.Random(7))
    assert log.ordered_log.base_key is not None and full_summary(log) == whole(log)
    log.close()


async def test_a_key_a_crash_left_unfixed_is_written_back_at_start(tmp_path: Path) -> None:
    """A local event is written with its hlc as its key and fixed once folded (a peer's clock ran ahead): a
    crash in between leaves the wrong key in the journal, and the next start from the base writes it back."""
    log, _ = await answered_history(tmp_path)
    last = await log.append("checkout", {"item": "LAST", "patron": "P1"}, "staff")
    await quiet(log)
    right = log.ordered_log.key_of(last.id)
    log.close()
    with sqlite3.connect(tmp_path / "a" / "circmesh.sqlite") as c:
        c.execute("UPDATE journal SET counter = counter + 7 WHERE id = ?", (last.id,))
    again = make_log(tmp_path, "a")
    await again.start()
    await again.store.commit([])
    with sqlite3.connect(tmp_path / "a" / "circmesh.sqlite") as c:
        row = c.execute("SELECT wall, counter FROM journal WHERE id = ?", (last.id,)).fetchone()
    assert again.ordered_log.base_key is not None and (row[0], row[1]) == right[:2]
    again.close()
