"""The log in causal order, with its state kept up to date as events arrive in any order.

Order: every event gets an *order stamp* when it is integrated,

    stamp(e) = max(e.hlc, successor of stamp(p) for every predecessor p of e)

where e's predecessors are its desk's previous event and, for every other desk n in its `seen` vector, the
event (n, seen[n]) — the latest of n's events e's writer held. The order key is (stamp, node, seq). So a
predecessor always sorts first, whatever the clocks said: hybrid clocks are bounded (hlc.py), and a desk
that received an event from a desk an hour ahead writes its next event with a smaller hlc than that event's.
A stamp depends only on the event and its causal past, so every desk computes the same stamps whatever the
order events arrived in: same events, same order, same state. While clocks stay within the bound, the
stamp is the hlc itself.

Predecessors arrive first (Automerge delivers changes causally; the event log integrates each batch and the
journal in `causal_sequence`). Data from the network must never make this raise, so a missing predecessor is
left out of the stamp; if it turns up later, every stamp is recomputed, and the order again depends only on
the set of events.

Events usually arrive in order (a desk's own scans): those are folded incrementally. One that sorts before
what was already folded (a live peer's concurrent scan, a healed partition) marks the state stale, and the
next read resumes the fold from the latest *checkpoint* that precedes it: a copy of the state as folded up
to some event, taken every CHECKPOINT_EVERY events folded, the last CHECKPOINTS_KEPT of them kept. A
checkpoint stays valid while nothing is added before its last event; an event added before it drops it.
Voids and admins' answers (they change what is voided and settled in the whole log), a restamp and a new
baseline still refold from the start. Pure: no I/O.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from typing import Protocol

from node.crdt.event import Event, applied_target
from node.crdt.state import (
    CirculationState,
    InMemory,
    Loan,
    Settlements,
    apply_event,
    begin_with,
    copy_state,
    end_fold,
    retire_outcomes,
    settlements_in,
)

OrderKey = tuple[int, int, str, int]  # (stamp wall, stamp counter, node, seq)
Ref = tuple[str, int]  # (node, seq)

# Measured (bench/bench_fold.py): resuming costs folding up to ~CHECKPOINT_EVERY events plus copying the
# state's dicts once; each checkpoint holds a copy of those dicts (not of the events).
CHECKPOINT_EVERY = 500
CHECKPOINTS_KEPT = 3


def predecessors(event: Event) -> Iterator[Ref]:
    """The events `event` directly follows: its desk's previous one, and the latest it held of each other desk."""
    if event.seq > 1:
        yield (event.node, event.seq - 1)
    for node, seq in event.seen.items():
        if node != event.node and seq > 0:
            yield (node, seq)


def causal_sequence(events: Iterable[Event]) -> list[Event]:
    """`events` without duplicates, reordered as little as possible so that each comes after its predecessors
    among them (ties keep the given order). Only forged `seen` vectors can make a cycle; one is broken at its
    earliest-listed event. Returns the input order itself when it is already causal (the usual case)."""
    unique: dict[Ref, Event] = {}
    for e in events:
        unique.setdefault((e.node, e.seq), e)
    done: set[Ref] = set()
    for ref, e in unique.items():
        prev = unique.get((e.node, e.seq - 1))
        if prev is not None and (e.node, e.seq - 1) not in done:
            break
        # what the previous event held was checked with it: only entries received since need a look
        held = prev.seen if prev is not None else {}
        if e.seen != held and any(s > held.get(n, 0) and (n, s) in unique and (n, s) not in done
                                  for n, s in e.seen.items() if n != e.node):
            break
        done.add(ref)
    else:
        return list(unique.values())
    refs = list(unique)
    position = {ref: i for i, ref in enumerate(refs)}
    waiting: dict[Ref, int] = {}
    dependents: dict[Ref, list[Ref]] = {}
    for ref, e in unique.items():
        inside = {p for p in predecessors(e) if p in unique}
        waiting[ref] = len(inside)
        for p in inside:
            dependents.setdefault(p, []).append(ref)
    ready = [position[r] for r, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out: list[Event] = []
    emitted: set[Ref] = set()
    while len(out) < len(refs):
        if not ready:
            heapq.heappush(ready, position[_cycle_start(refs, unique, emitted, position)])
        ref = refs[heapq.heappop(ready)]
        if ref in emitted:
            continue
        emitted.add(ref)
        out.append(unique[ref])
        for d in dependents.get(ref, ()):
            waiting[d] -= 1
            if waiting[d] == 0:
                heapq.heappush(ready, position[d])
    return out


def _cycle_start(refs: list[Ref], unique: Mapping[Ref, Event], emitted: set[Ref], position: Mapping[Ref, int]
                 ) -> Ref:
    """Every event left waits for another one left: walk back from the earliest-listed along each one's
    earliest-listed waiting predecessor until the walk repeats itself, and break that cycle at its earliest."""
    ref = next(r for r in refs if r not in emitted)
    path: dict[Ref, int] = {}
    while ref not in path:
        path[ref] = len(path)
        ref = min((p for p in predecessors(unique[ref]) if p in unique and p not in emitted), key=position.__getitem__)
    cycle = [r for r, i in path.items() if i >= path[ref]]
    return min(cycle, key=position.__getitem__)


class History(Protocol):
    """The events a log's base holds and its memory no longer does: the journal, read back (eventlog.py)."""

    def event(self, event_id: str) -> Event | None: ...

    def key(self, event_id: str) -> OrderKey | None: ...

    def upto(self, key: OrderKey) -> Iterable[tuple[OrderKey, Event]]:
        """Every event sorting at or before `key`, in order, with its order key."""
        ...

    def answer(self, target: str, upto: OrderKey, voided: Container[str]) -> Event | None:
        """The first readable `applied` event about `target` sorting at or before `upto`, not voided."""
        ...


class NoHistory:
    """A log that keeps everything in memory (tests, the first start of an old journal)."""

    def event(self, event_id: str) -> Event | None:
        return None

    def key(self, event_id: str) -> OrderKey | None:
        return None

    def upto(self, key: OrderKey) -> Iterable[tuple[OrderKey, Event]]:
        return ()

    def answer(self, target: str, upto: OrderKey, voided: Container[str]) -> Event | None:
        return None


Base = tuple[OrderKey, CirculationState]  # every event sorting up to the key, folded (before end_fold)


class OrderedLog:
    """The log's order and state. With a *base* (a checkpoint moved out of memory, `advance_base`), memory
    holds only the events after it, those before it that are kept on purpose (open work: `keep`), the late
    ones that sort before it, and every admin's answer (few; each can change the whole log). Whatever sits in
    memory, the state is the fold of every event held, in order: a late event or an answer that changes an
    event before the base refolds the base from the history (the journal) merged with memory."""

    def __init__(self, baseline: Mapping[str, tuple[str, int | None]] | None = None, *,
                 checkpoint_every: int = CHECKPOINT_EVERY, checkpoints_kept: int = CHECKPOINTS_KEPT,
                 history: History | None = None) -> None:
        self._every = max(1, checkpoint_every)
        self._kept = checkpoints_kept  # 0: none (every stale read refolds from the start)
        self._history: History = history or NoHistory()
        self._keys: list[OrderKey] = []  # the events after the base, in order
        self._by_key: dict[OrderKey, Event] = {}
        self._key_of: dict[str, OrderKey] = {}  # event id -> its order key, stamp included (all in memory)
        self._missing: dict[str, list[str]] = {}  # ids some events named as a predecessor, not here (yet): those events
        self.by_id: dict[str, Event] = {}  # every event in memory
        self._baseline = baseline
        self._state: CirculationState | None = None
        # (key of the last event folded, the state then), oldest first; each is the fold of exactly the
        # events sorting up to its key, before `end_fold`. Never handed out: restored as a copy.
        self._checkpoints: list[Base] = []
        self._since_checkpoint = 0  # events folded since the latest checkpoint (or since the fold began)
        self._cyclic = False  # a forged cycle of `seen` vectors was seen: no checkpoints (copy_state)
        self._base: Base | None = None  # never mutated: resumed from as a copy
        self._base_stale = False  # an event or an answer changes what the base holds: refold it first
        self._held: set[str] = set()  # events in memory that sort at or before the base
        self._held_sorted: list[Event] | None = None  # them in order (read on every /status and upload round)
        self._answers: dict[str, Event] = {}  # every void and resolve, in memory or not
        self._settlements = Settlements({}, {}, {})
        self._answered: dict[str, bool] = {}  # target -> answered before the base (see `answered`)
        self._answers_in_memory: dict[str, set[str]] = {}  # target -> readable `applied` events in memory
        self._opening = False  # a base restored, the events after it not all added yet (see `opened`)
        self.refolds = 0
        self.resumes = 0  # folds resumed from a checkpoint
        self.restamps = 0
        self.base_refolds = 0  # bases refolded from the history

    def __len__(self) -> int:
        return len(self.by_id)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.by_id

    def __iter__(self) -> Iterator[Event]:
        """The events in memory, in order: the whole log until a base is taken (see `advance_base`)."""
        if self._held_sorted is None:
            self._held_sorted = [self.by_id[i] for i in sorted(self._held, key=self._key_of.__getitem__)]
        yield from self._held_sorted
        yield from (self._by_key[k] for k in self._keys)

    @property
    def base_key(self) -> OrderKey | None:
        return self._base[0] if self._base is not None else None

    @property
    def current_base(self) -> Base | None:
        """The base, if it is up to date (not due for a refold)."""
        return self._base if not self._base_stale else None

    @property
    def base_loans(self) -> Mapping[str, Loan]:
        """The open loans as the base holds them (none without a base)."""
        return self._base[1].loans if self._base is not None else {}

    @property
    def after_base(self) -> int:
        """Events in memory that sort after the base (all of them, without one)."""
        return len(self._keys)

    @property
    def held_ids(self) -> frozenset[str]:
        """Events in memory that sort at or before the base."""
        return frozenset(self._held)

    @property
    def history(self) -> History:
        return self._history

    def tail_key(self, index: int) -> OrderKey:
        """The key of the index-th event after the base (negative: from the end)."""
        return self._keys[index]

    def known_key(self, event_id: str) -> OrderKey | None:
        """The key of an event in memory (None for one that is not)."""
        return self._key_of.get(event_id)

    def key_of(self, event_id: str) -> OrderKey:
        """Where the event sorts: (stamp wall, stamp counter, node, seq)."""
        key = self._key_of.get(event_id) or self._history.key(event_id)
        if key is None:
            raise KeyError(event_id)
        return key

    def add(self, event: Event) -> bool:
        """Adds an event once; returns False for a duplicate (of one in memory: the caller knows the rest)."""
        event_id = event.id
        if event_id in self.by_id:
            return False
        self.by_id[event_id] = event
        self._index_answer(event)
        answer = event.kind in ("void", "resolve")
        if answer:
            self._answers[event_id] = event
        key = self._stamp(event, event_id)
        if self._raises_a_stamp(event_id, key):  # a latecomer that some stamps were computed without
            self._restamp()  # and that changes one of them: recompute them all
            if self._answers:  # their order may have changed too
                self._answers_changed()
            return True
        if self._base is not None and key <= self._base[0]:  # late: it changes what the base holds
            self._held.add(event_id)
            self._held_sorted = None
            self._base_stale = True
            self._state = None
            self._checkpoints.clear()
            if answer:
                self._answers_changed()
            return True
        at_end = not self._keys or key > self._keys[-1]
        self._by_key[key] = event
        if at_end:
            self._keys.append(key)
        else:
            bisect.insort(self._keys, key)
        if answer:  # answers change what is voided and settled everywhere
            self._answers_changed()
        elif not at_end:
            self._state = None
            while self._checkpoints and self._checkpoints[-1][0] > key:
                self._checkpoints.pop()  # folded events that sort after this one
        elif self._state is not None:
            apply_event(self._state, event, self)
            # the state has been through end_fold: the same as before it only if no answers disagree
            self._folded(key, self._state, checkpoint=not self._state.disputed)
        return True

    def _lookup(self, event_id: str) -> Event | None:
        return self.by_id.get(event_id) or self._history.event(event_id)

    # ---- the past, as the fold reads it (state.Past)
    def event(self, event_id: str) -> Event | None:
        return self._lookup(event_id)

    def answered(self, target: str) -> bool:
        """Whether an outcome for `target` left memory with the base (its `applied` sorts before it).
        Remembered until the base or the answers change: open work before the base is asked about often."""
        if self._base is None:
            return False
        key = self._key_of.get(target)
        if key is not None and key > self._base[0]:  # answered after it, if at all: not retired
            return False
        known = self._answered.get(target)
        if known is None:
            known = self._answered[target] = self.answer(target) is not None
        return known

    def answer(self, target: str) -> Event | None:
        """The `applied` event, before the base, that answered `target` (the outcome the state retired): the
        first in the journal or in memory (a late one may not be committed yet)."""
        if self._base is None:
            return None
        base_key, voided = self._base[0], self._settlements.voided
        found = self._history.answer(target, base_key, voided)
        at = (self._key_of.get(found.id) or self._history.key(found.id)) if found is not None else None
        for event_id in self._answers_in_memory.get(target, ()):
            key = self._key_of.get(event_id)
            if key is not None and key <= base_key and event_id not in voided and (at is None or key < at):
                found, at = self.by_id[event_id], key
        return found

    def _index_answer(self, event: Event) -> None:
        if (target := applied_target(event)) is not None:
            self._answers_in_memory.setdefault(target, set()).add(event.id)

    def _forget(self, event_id: str) -> None:
        event = self.by_id.pop(event_id)
        del self._key_of[event_id]
        if (target := applied_target(event)) is not None:
            ids = self._answers_in_memory.get(target)
            if ids is not None:
                ids.discard(event_id)
                if not ids:
                    del self._answers_in_memory[target]

    def _answers_changed(self) -> None:
        keys = {i: self._key_of.get(i) or self._history.key(i) for i in self._answers}
        ordered = sorted(self._answers.values(), key=lambda e: keys[e.id] or e.order_key)
        self._settlements = settlements_in(ordered)
        self._answered.clear()
        self._state = None
        self._checkpoints.clear()
        if self._base is not None:
            base_key, base = self._base
            new = self._settlements
            # An event voided when the base moved left memory even if it was open work; voided no more, it
            # must be back in memory (the bridge, `/status`, the upload report read open work there).
            for event_id in base.voided.keys() - new.voided.keys():
                if event_id not in self.by_id and (event := self._history.event(event_id)) is not None:
                    key = self._history.key(event_id)
                    if key is not None and key <= base_key:
                        self.hold(event, key)
            if self._base_stale or self._opening:
                return
            voids = base.voided.keys() ^ new.voided.keys()
            for event_id in voids | (set(base.settled.values()) ^ set(new.settled.values())):
                key = self._key_of.get(event_id) or self._history.key(event_id)
                # An event answered before the base has its outcome counted there, wherever the event sorts
                # (or if it is not held at all: an answer can arrive before what it answers).
                if (key is not None and key <= base_key) or (event_id in voids and self.answer(event_id)):
                    self._base_stale = True
                    break

    def _folded(self, key: OrderKey, state: CirculationState, checkpoint: bool = True) -> None:
        """One more event folded into `state`; every `checkpoint_every`, a copy of it is kept."""
        self._since_checkpoint += 1
        if checkpoint and self._since_checkpoint >= self._every and self._kept > 0 and not self._cyclic:
            self._since_checkpoint = 0
            self._checkpoints.append((key, copy_state(state)))
            del self._checkpoints[:-self._kept]

    def _stamp(self, event: Event, event_id: str) -> OrderKey:
        wall, counter, node, seq = event.hlc.wall, event.hlc.counter, event.node, event.seq
        held: Mapping[str, int] = {}
        preds = [(node, seq - 1)] if seq > 1 else []
        if seq > 1 and (prev := self.by_id.get(f"{node}:{seq - 1}")) is not None:
            # What the previous event already held sorts before it, so before this one: only what this
            # desk received since can raise the stamp (a dozen desks' entries compared, not looked up).
            held = prev.seen
        if event.seen != held:
            preds += [(n, s) for n, s in event.seen.items() if s > held.get(n, 0) and n != node]
        for pred_node, pred_seq in preds:
            pred_id = f"{pred_node}:{pred_seq}"
            pred = self._key_of.get(pred_id)
            if pred is None:
                if pred_id in self.by_id:  # this event will sort before its predecessor: checkpoints would see it
                    self._cyclic = True
                    self._checkpoints.clear()
                    continue
                pred = self._history.key(pred_id)
                if pred is None:
                    self._missing.setdefault(pred_id, []).append(event_id)
                    continue  # absent (yet)
            if (pred[0], pred[1]) >= (wall, counter):
                wall, counter = pred[0], pred[1] + 1
        key = (wall, counter, node, seq)
        self._key_of[event_id] = key
        return key

    def _raises_a_stamp(self, event_id: str, key: OrderKey) -> bool:
        """Whether events stamped while this one was missing would sort differently with it. A stamp is the
        greatest of the event's hlc and its predecessors' stamps (plus one): one that is already past this
        event's stamp stands (as, with clocks in step, nearly all do: a healed partition's desks name many
        events they do not hold yet), and so do all that follow from it. Otherwise every stamp is computed
        again, as from the set of events alone."""
        waiting = self._missing.pop(event_id, None)
        if waiting is None:
            return False
        for other in waiting:
            stamped = self._key_of.get(other)
            if stamped is None or (key[0], key[1]) >= (stamped[0], stamped[1]):
                return True
        return False

    def _restamp(self) -> None:
        """Every stamp in memory again, from the set of events alone (their arrival order plays no part).
        The history's stamps stand: a base is only ever taken while no predecessor is missing."""
        self.restamps += 1
        events = sorted(self.by_id.values(), key=lambda e: e.order_key)
        self._key_of.clear()
        self._missing.clear()
        stamped = {self._stamp(e, e.id): e for e in causal_sequence(events)}
        self._held.clear()
        self._held_sorted = None
        self._by_key = {}
        for key, e in stamped.items():
            if self._base is not None and key <= self._base[0]:
                self._held.add(e.id)
                self._held_sorted = None
            else:
                self._by_key[key] = e
        self._keys = sorted(self._by_key)
        self._state = None
        self._checkpoints.clear()
        if self._base is not None:
            self._base_stale = True

    def set_baseline(self, baseline: Mapping[str, tuple[str, int | None]] | None) -> None:
        self._baseline = baseline
        self._state = None
        self._checkpoints.clear()
        if self._base is not None:
            self._base_stale = True

    # ---- the base
    def restore_base(self, base: Base, answers: Iterable[Event]) -> None:
        """Starts from a base read back (before any event is added): `answers` are those it holds."""
        self._base = base
        self._answered.clear()
        self._opening = True
        for e in answers:
            self._answers[e.id] = e
        self._answers_changed()

    def opened(self) -> None:
        """Every event after the restored base is added: the answers are what the base was folded with, unless
        the journal holds some it did not (a refold, then)."""
        self._opening = False
        self._answers_changed()

    def hold(self, event: Event, key: OrderKey) -> None:
        """An event the base holds, kept in memory (open work) with the key it was given."""
        self.by_id[event.id] = event
        self._index_answer(event)
        self._key_of[event.id] = key
        self._held.add(event.id)
        self._held_sorted = None

    def advance_base(self, limit: OrderKey, keep: Callable[[Event], bool], before: OrderKey | None = None
                     ) -> Base | None:
        """Moves the base to the last event at or before `limit` (and before `before`); the events up to it
        leave memory unless `keep` says otherwise (open work: the bridge still needs them). Returns the new
        base, to be saved, or None when none can be taken now (a refold due, a predecessor missing)."""
        self.state  # noqa: B018 - brings the checkpoints up to date
        if self._base_stale or self._missing or self._cyclic:
            return None
        cut = bisect.bisect_right(self._keys, limit)
        if before is not None:
            cut = min(cut, bisect.bisect_left(self._keys, before))
        if cut == 0:
            return None
        key = self._keys[cut - 1]
        candidates = [cp for cp in self._checkpoints if cp[0] <= key]
        if candidates:  # the base goes to that checkpoint: nothing is folded again
            key, checkpoint = candidates[-1]
            state = copy_state(checkpoint)
        else:  # the fold up to `key`, from the base
            state = self._resumed()
            for k in self._keys[:cut]:
                apply_event(state, self._by_key[k], self)
        retire_outcomes(state)
        live = self._state
        self._base = (key, state)
        # Not answered before the old base: answered before the new one only by an answer in between, which
        # the live state (folded on from the old base, or from before it) holds.
        answers = live.outcomes if live is not None else {}

        def answered_since(target: str) -> bool:
            outcome = answers.get(target)
            at = self._key_of.get(outcome.event) if outcome is not None else None
            return at is not None and at <= key

        self._answered = {t: known or answered_since(t) for t, known in self._answered.items()}
        cut = bisect.bisect_right(self._keys, key)
        for k in self._keys[:cut]:
            self._held.add(self._by_key.pop(k).id)
            self._held_sorted = None
        del self._keys[:cut]
        self._checkpoints = [cp for cp in self._checkpoints if cp[0] > key]
        self.release(keep)
        return self._base

    def release(self, keep: Callable[[Event], bool]) -> None:
        """Events before the base that need not stay in memory any more leave it (unless a refold is due)."""
        if self._base_stale:
            return
        for event_id in [i for i in self._held if not keep(self.by_id[i])]:
            self._held.discard(event_id)
            self._held_sorted = None
            self._forget(event_id)

    def _refold_base(self) -> None:
        """The base again, from the history merged with what memory holds before it (late events)."""
        assert self._base is not None
        base_key = self._base[0]
        self.base_refolds += 1
        state = begin_with(self._settlements, self._baseline)
        recent: dict[str, Event] = {}  # the latest events folded: the clock rules look their predecessors up
        past = _Refolding(recent, self._lookup)

        memory = sorted((self._key_of[i], self.by_id[i]) for i in self._held)
        journal = ((k, e) for k, e in self._history.upto(base_key) if e.id not in self.by_id)
        for _, event in heapq.merge(memory, journal, key=lambda pair: pair[0]):
            apply_event(state, event, past)
            recent[event.id] = event
            if len(recent) > 512:
                del recent[next(iter(recent))]
        retire_outcomes(state)
        self._base = (base_key, state)
        self._answered.clear()
        self._base_stale = False

    def _resumed(self) -> CirculationState:
        """The state before the first event after the base: the base's (with the answers as they are now), or
        the start of a fold."""
        if self._base is None:
            self.refolds += 1
            return begin_with(self._settlements, self._baseline)
        self.resumes += 1
        state = copy_state(self._base[1])
        answers = self._settlements
        state.voided, state.settled = dict(answers.voided), dict(answers.settled)
        state.disputed = dict(answers.disputed)
        return state

    @property
    def state(self) -> CirculationState:
        if self._state is None:
            if self._base_stale:
                self._refold_base()
            if self._checkpoints:
                last, checkpoint = self._checkpoints[-1]
                state = copy_state(checkpoint)
                start = bisect.bisect_right(self._keys, last)
                self.resumes += 1
            else:
                state, start = self._resumed(), 0
            self._since_checkpoint = 0
            for key in self._keys[start:]:
                apply_event(state, self._by_key[key], self)
                self._folded(key, state)
            end_fold(state)
            self._state = state
        return self._state


class _Refolding(InMemory):
    """The past while a base is refolded from the start: the latest events folded, else memory or the journal
    (nothing retired yet: every outcome is in the state being built)."""

    def __init__(self, recent: Mapping[str, Event], lookup: Callable[[str], Event | None]) -> None:
        super().__init__(recent)
        self._recent = recent
        self._lookup = lookup

    def event(self, event_id: str) -> Event | None:
        return self._recent.get(event_id) or self._lookup(event_id)
