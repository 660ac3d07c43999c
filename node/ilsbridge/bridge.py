"""The bridge: while the ILS answers, apply every pending event to it, exactly once, and record each
outcome as an `applied` event that replicates to every desk.

- Reachability is probed; losing the ILS mid-upload pauses (in-flight requests finish or fail as
  transient) and the upload resumes when a probe succeeds.
- Events go in the order `UploadSchedule` allows, with at most `concurrency` requests in flight.
- Before a request leaves, an attempt marker is committed. After a crash, an event with a marker and no
  outcome is reconciled against the ILS's current state instead of being sent blindly again.
- A refusal ("Item not issued.") is an outcome, recorded like a success; only transient failures retry.
  An event that keeps failing while the ILS answers is named in `problem`, so it never waits silently.
- A renewal scanned without a patron goes for the patron of the loan it renews as the log knows it
  (`renewal_patrons`): an ILS that cannot say who has an item (plain SIP2) can still be asked.
- The ILS gets each event's time corrected for its desk's clock when that clock is off (mapping.ils_times);
  the `applied` event records the time sent and how it was known (`ils_at`, `ils_at_by`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from node.crdt.core import Arrival
from node.crdt.event import Event
from node.crdt.state import CirculationState, Loan
from node.eventlog import wall_ms
from node.ilsbridge.adapters.base import IlsAdapter, IlsUnavailable
from node.ilsbridge.mapping import IlsTime, ils_times, operation_of
from node.ilsbridge.operation import Outcome
from node.ilsbridge.schedule import UploadSchedule, held_events, pending_events, renewal_patrons
from node.ports import CirculationView
from node.storage import db
from node.tasks import reap

log = logging.getLogger(__name__)

PROBE_INTERVAL = 1.0
AUTH_RETRY = 30.0  # a refused login will not fix itself quickly: try again now and then, not in a loop
STUCK_AFTER = 3  # transient failures in a row of one event, the ILS answering, before `problem` names it
RETRY_START = 0.1  # a failing event's first retry, while the ILS answers others: it doubles for that event…
RETRY_MAX = 2.0  # …up to this (a streak of failures, not one event's, is what says the ILS struggles: probed)
PROBE_AFTER = 8  # transient answers in a row, none answered between, before the ILS is probed
LOST_CODES = {"auth", "unreachable", "timeout"}  # answers that say the ILS itself is in question: probed at once


T = TypeVar("T")


@dataclass
class BridgeConfig:
    concurrency: int = 16
    term: int = 1  # a single configured bridge for now; elections bring real terms


class AttemptJournal(Protocol):
    """Where attempt markers are committed (the log's SQLite journal, node/storage/db.py)."""

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T: ...

    async def commit(self, statements: list[db.Statement]) -> None: ...


class UploadLog(CirculationView, Protocol):
    """What the bridge reads and writes of the log: what is pending (state, order, events), a wake-up on
    every arrival, the `applied` events it records, and the journal its attempt markers go to."""

    @property
    def store(self) -> AttemptJournal: ...

    def subscribe(self, listener: Callable[[Arrival], None]) -> Callable[[], None]: ...

    async def append(self, kind: str, body: dict[str, Any], staff: str, *, at: int | None = None) -> Event: ...

    def base_loans(self) -> Mapping[str, Loan]:
        """The open loans as the fold's base holds them: a renewal of a loan lent before it names its patron."""


def log_clock_offset(eventlog: CirculationView) -> Callable[[str], tuple[int, str] | None]:
    """A desk's clock offset as the log shows it (an open clock_ahead conflict), for want of a measurement."""
    def offset(node: str) -> tuple[int, str] | None:
        flagged = eventlog.state.clocks.flagged.get(node)
        return (flagged.offset_ms or 0, "log") if flagged is not None else None
    return offset


def _time_given(at: int, applied: Event | None) -> int:
    """The time the ILS was given: the `ils_at` its `applied` recorded, else the event's own `at`."""
    recorded = applied.body.get("ils_at") if applied is not None else None
    return at if recorded is None else recorded


def sent_times(lookup: Callable[[str], Event | None], state: CirculationState) -> dict[str, int]:
    """The time the ILS was given for every event it answered that `lookup` finds (`ils_at` of its `applied`
    event, else `at`)."""
    out = {}
    for target, outcome in state.outcomes.items():
        event = lookup(target)
        if event is not None:
            out[target] = _time_given(event.at, lookup(outcome.event))
    return out


def history_floor(log: CirculationView, pending: Iterable[Event], loans: Mapping[str, Loan],
                  in_memory: Container[str]) -> dict[str, int]:
    """For the items of `pending`, the time the ILS was given for their loans lent before the fold's base
    (`loans`) whose checkouts left memory with it: a checkin is never dated before the loan it ends."""
    floor = {}
    for event in pending:
        item = event.body.get("item")
        loan = loans.get(item) if isinstance(item, str) else None
        if (loan is None or loan.event is None or loan.at is None or loan.event in in_memory
                or f"item:{item}" in floor):
            continue
        outcome = log.outcome(loan.event)
        floor[f"item:{item}"] = _time_given(loan.at, log.event(outcome.event) if outcome is not None else None)
    return floor


def recorded_times(history: Iterable[Event], voided: Container[str]) -> dict[str, int]:
    """sent_times for a whole history read in the log's order (exports): an outcome that retired with the
    fold's base is no longer in the state, but its `applied` event is in the history. The first readable,
    unvoided answer about an event stands, as in the fold."""
    at: dict[str, int] = {}
    first: dict[str, Event] = {}  # target -> its first answer (even one sorting before it, as in the fold)
    for event in history:
        if event.problem is not None or event.id in voided:
            continue
        if event.kind != "applied":
            at[event.id] = event.at
        elif (target := event.body["event"]) not in first:
            first[target] = event
    return {target: _time_given(at[target], applied) for target, applied in first.items() if target in at}


class Bridge:
    def __init__(self, eventlog: UploadLog, adapter: IlsAdapter, url: str, config: BridgeConfig | None = None,
                 clock_offset: Callable[[str], tuple[int, str] | None] | None = None) -> None:
        """`clock_offset(node)`: how far that desk's clock reads ahead, and how it is known, when it is off."""
        self.log = eventlog
        self.clock_offset = clock_offset or log_clock_offset(eventlog)
        self._times: dict[str, IlsTime] = {}
        self.adapter = adapter
        self.url = url
        self.config = config or BridgeConfig()
        self.reachable = False
        self.last_probe: int | None = None
        self.uploading = False
        self.problem: str | None = None  # why the upload is paused although the ILS answers
        self._auth_retry_at = 0.0
        self.counters = {"applied": 0, "refused": 0, "transient": 0, "reconciled": 0}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._attempted: set[str] = set()
        self._before_restart: set[str] = set()
        self._renewal_patrons: dict[str, str | None] = {}

    # ---- lifecycle
    async def start(self) -> None:
        rows = await self.log.store.run(db.attempted)
        self._attempted = set(rows)
        self._before_restart = set(rows)
        self.log.subscribe(lambda arrival: self._wake.set())
        self._task = asyncio.create_task(self._run(), name="bridge")

    async def stop(self) -> None:
        await reap(self._task)  # lets a cancel of this stop through, unlike suppress(CancelledError)
        await self.adapter.close()

    @property
    def term(self) -> int:
        return self.config.term

    # ---- the loop
    async def _run(self) -> None:
        while True:
            try:
                await self._probe()
                if self.reachable and asyncio.get_running_loop().time() >= self._auth_retry_at:
                    finished = await self._upload_round()
                    if finished:
                        self._wake.clear()
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(PROBE_INTERVAL * 5):
                                await self._wake.wait()
                        continue
                await asyncio.sleep(PROBE_INTERVAL)  # the ILS is down: probe again shortly
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("bridge loop error; retrying")
                await asyncio.sleep(PROBE_INTERVAL)

    async def _probe(self) -> None:
        try:
            self.reachable = await self.adapter.probe()
        except Exception as e:  # an adapter should not raise, but the loop must not die if it does
            log.warning("ILS probe failed: %s", e)
            self.reachable = False
        self.last_probe = wall_ms()

    async def _upload_round(self) -> bool:
        """Uploads what is pending now. True when nothing is left that could go; False when the ILS went away."""
        state = self.log.state
        in_memory = self.log.ordered()  # every pending event is: the fold's base keeps open work in memory
        ordered = [e for e in in_memory if e.id not in state.voided]
        pending = pending_events(ordered, state, self.log.answered)
        if not pending:
            return True
        by_id = {e.id: e for e in in_memory}
        floor = history_floor(self.log, pending, self.log.base_loans(), by_id)
        self._times = ils_times(ordered, self.clock_offset, sent_times(by_id.get, state), floor)
        schedule = UploadSchedule(pending, held=held_events(state, pending))
        if any(e.kind == "renew" and not e.body.get("patron") for e in pending):
            self._renewal_patrons = renewal_patrons(in_memory, state.voided, self.log.base_loans())
        in_flight: dict[asyncio.Task[tuple[Event, Outcome]], Event] = {}
        failures: Counter[str] = Counter()  # transient answers per event, in this round
        waiting: list[tuple[float, str]] = []  # (when, event id): events backing off, each on its own
        streak = 0  # transient answers in a row, no answer between them: then the ILS is probed
        loop = asyncio.get_running_loop()
        self.uploading = True
        lost = False
        try:
            while True:
                while waiting and waiting[0][0] <= loop.time():
                    schedule.retry(heapq.heappop(waiting)[1])
                while not lost and len(in_flight) < self.config.concurrency and (event := schedule.take()):
                    task = asyncio.create_task(self._send(event))
                    in_flight[task] = event
                if not in_flight and (lost or not waiting):
                    break
                if not in_flight:  # only events backing off: wait for the first of them
                    await asyncio.sleep(max(0.0, waiting[0][0] - loop.time()))
                    continue
                wake = max(0.0, waiting[0][0] - loop.time()) if waiting and not lost else None
                done, _ = await asyncio.wait(in_flight, timeout=wake, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    event = in_flight.pop(task)
                    outcome = task.result()[1]
                    if outcome.status == "transient":
                        # One failing request backs off alone: the other slots keep the ILS busy. Only a
                        # streak of failures (or one that says the ILS is gone) makes the bridge probe it.
                        self.counters["transient"] += 1
                        failures[event.id] += 1
                        streak += 1
                        if not lost and (outcome.code in LOST_CODES or streak >= PROBE_AFTER):
                            streak = 0
                            lost = not await self._still_reachable(outcome)
                        if lost:
                            continue  # the round ends; the next one, once the ILS answers, sends it again
                        if failures[event.id] >= STUCK_AFTER:
                            self.problem = _stuck(event, outcome)
                        backoff = min(RETRY_START * 2 ** (failures[event.id] - 1), RETRY_MAX)
                        heapq.heappush(waiting, (loop.time() + backoff, event.id))
                        continue
                    streak = 0
                    failures.pop(event.id, None)
                    if not any(n >= STUCK_AFTER for n in failures.values()):
                        self.problem = None  # no event keeps failing any more
                    await self._record(event, outcome)
                    if event.kind == "patron_register" and outcome.status == "refused":
                        schedule.hold_patron(event.body["patron"])  # before done(): their loans wait
                    schedule.done(event.id)
        finally:
            self.uploading = False
        return not lost

    async def _still_reachable(self, outcome: Outcome) -> bool:
        if outcome.code == "auth":
            log.error("the ILS refused the bridge's credentials: upload paused (%s)", outcome.message)
            self.problem = outcome.message
            self._auth_retry_at = asyncio.get_running_loop().time() + AUTH_RETRY
            return False
        await self._probe()
        if not self.reachable:
            log.warning("the ILS went away during upload: paused until it answers again")
            self.problem = None  # the reason now is plain: the ILS does not answer
        return self.reachable

    async def _send(self, event: Event) -> tuple[Event, Outcome]:
        if event.id in self._attempted:
            reconciled = await self._reconcile(event, after_restart=event.id in self._before_restart)
            if reconciled is not None:
                return event, reconciled
        else:
            await self.log.store.commit([db.attempt_insert(event.id, wall_ms())])
            self._attempted.add(event.id)
        time = self._times.get(event.id)
        op = operation_of(event, time.at if time else None)
        if op.kind == "renew" and not op.patron:
            op = replace(op, patron=self._renewal_patrons.get(event.id))
        try:
            return event, await self.adapter.apply(op)
        except Exception as e:
            return event, Outcome("transient", f"adapter error: {e}")

    async def _reconcile(self, event: Event, *, after_restart: bool) -> Outcome | None:
        """An earlier attempt may or may not have reached the ILS: look before sending again. Loans and
        returns can be checked against the ILS's loans, and a registration is resent as it is (the adapter
        finds the card there already). Payments and the rest cannot: within one run they are resent (a
        transient answer means the ILS did not take them); after a restart nobody knows."""
        kind, body = event.kind, event.body
        try:
            if kind == "checkout":
                holder = await self.adapter.current_loan(body["item"])
                if holder == body["patron"]:
                    self.counters["reconciled"] += 1
                    return Outcome("applied", "Success. (found applied at the ILS after a bridge restart)")
            elif kind == "checkin":
                holder = await self.adapter.current_loan(body["item"])
                if holder is None:
                    self.counters["reconciled"] += 1
                    return Outcome("applied", "Success. (found checked in at the ILS after a bridge restart)")
            elif after_restart and kind in ("payment", "in_house_use"):
                # The ILS keeps no trace the bridge can query: resending could pay twice. Staff must check.
                return Outcome("refused", "outcome unknown: the bridge stopped while the ILS was answering; "
                                          "check the patron's account at the ILS", "unknown")
        except IlsUnavailable as e:
            return Outcome("transient", f"cannot reconcile now: {e}")
        return None

    async def _record(self, event: Event, outcome: Outcome) -> None:
        status = "applied" if outcome.status == "applied" else "refused"
        self.counters[status] += 1
        body: dict[str, Any] = {"event": event.id, "status": status, "message": outcome.message[:500] or status,
                                "term": self.config.term}
        time = self._times.get(event.id)
        if time is not None and time.by is not None and time.at != event.at:
            body |= {"ils_at": time.at, "ils_at_by": time.by}
        await self.log.append("applied", body, "bridge")


def _stuck(event: Event, outcome: Outcome) -> str:
    what = event.body.get("item") or event.body.get("patron") or event.id
    return f"the ILS answers, but the {event.kind} of {what} keeps failing (retrying): {outcome.message}"
