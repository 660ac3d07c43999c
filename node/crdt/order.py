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
from collections.abc import Iterable, Iterator, Mapping

from node.crdt.event import Event
from node.crdt.state import CirculationState, apply_event, begin_fold, copy_state, end_fold

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


class OrderedLog:
    def __init__(self, baseline: Mapping[str, tuple[str, int | None]] | None = None, *,
                 checkpoint_every: int = CHECKPOINT_EVERY, checkpoints_kept: int = CHECKPOINTS_KEPT) -> None:
        self._every = max(1, checkpoint_every)
        self._kept = checkpoints_kept  # 0: none (every stale read refolds from the start)
        self._keys: list[OrderKey] = []
        self._by_key: dict[OrderKey, Event] = {}
        self._key_of: dict[str, OrderKey] = {}  # event id -> its order key, stamp included
        self._missing: set[str] = set()  # ids some event named as its predecessor, not here (yet)
        self.by_id: dict[str, Event] = {}
        self._baseline = baseline
        self._state: CirculationState | None = None
        # (key of the last event folded, the state then), oldest first; each is the fold of exactly the
        # events sorting up to its key, before `end_fold`. Never handed out: restored as a copy.
        self._checkpoints: list[tuple[OrderKey, CirculationState]] = []
        self._since_checkpoint = 0  # events folded since the latest checkpoint (or since the fold began)
        self._cyclic = False  # a forged cycle of `seen` vectors was seen: no checkpoints (copy_state)
        self.refolds = 0
        self.resumes = 0  # folds resumed from a checkpoint
        self.restamps = 0

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.by_id

    def __iter__(self) -> Iterator[Event]:
        return (self._by_key[k] for k in self._keys)

    def key_of(self, event_id: str) -> OrderKey:
        """Where the event sorts: (stamp wall, stamp counter, node, seq)."""
        return self._key_of[event_id]

    def add(self, event: Event) -> bool:
        """Adds an event once; returns False for a duplicate."""
        event_id = event.id
        if event_id in self.by_id:
            return False
        self.by_id[event_id] = event
        if event_id in self._missing:  # a latecomer some stamp was computed without: recompute them all
            self._restamp()
            return True
        key = self._stamp(event, event_id)
        at_end = not self._keys or key > self._keys[-1]
        self._by_key[key] = event
        if at_end:
            self._keys.append(key)
        else:
            bisect.insort(self._keys, key)
        if event.kind in ("void", "resolve"):  # answers change what is voided and settled everywhere
            self._state = None
            self._checkpoints.clear()
        elif not at_end:
            self._state = None
            while self._checkpoints and self._checkpoints[-1][0] > key:
                self._checkpoints.pop()  # folded events that sort after this one
        elif self._state is not None:
            apply_event(self._state, event)
            # the state has been through end_fold: the same as before it only if no answers disagree
            self._folded(key, self._state, checkpoint=not self._state.disputed)
        return True

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
                if pred_id not in self.by_id:
                    self._missing.add(pred_id)
                else:  # this event will sort before its predecessor: checkpoints would see the latter
                    self._cyclic = True
                    self._checkpoints.clear()
                continue  # absent, or on a forged cycle
            if (pred[0], pred[1]) >= (wall, counter):
                wall, counter = pred[0], pred[1] + 1
        key = (wall, counter, node, seq)
        self._key_of[event_id] = key
        return key

    def _restamp(self) -> None:
        """Every stamp again, from the set of events alone (their arrival order plays no part)."""
        self.restamps += 1
        events = sorted(self.by_id.values(), key=lambda e: e.order_key)
        self._key_of.clear()
        self._missing.clear()
        self._by_key = {self._stamp(e, e.id): e for e in causal_sequence(events)}
        self._keys = sorted(self._by_key)
        self._state = None
        self._checkpoints.clear()

    def set_baseline(self, baseline: Mapping[str, tuple[str, int | None]] | None) -> None:
        self._baseline = baseline
        self._state = None
        self._checkpoints.clear()

    @property
    def state(self) -> CirculationState:
        if self._state is None:
            if self._checkpoints:
                last, checkpoint = self._checkpoints[-1]
                state = copy_state(checkpoint)
                start = bisect.bisect_right(self._keys, last)
                self.resumes += 1
            else:
                state = begin_fold(list(self), self._baseline)
                start = 0
                self.refolds += 1
            self._since_checkpoint = 0
            for key in self._keys[start:]:
                apply_event(state, self._by_key[key])
                self._folded(key, state)
            end_fold(state)
            self._state = state
        return self._state
