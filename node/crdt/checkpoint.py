"""A fold state as bytes and back: the checkpoint a desk starts from instead of folding its whole history.

The journal keeps every event; a checkpoint keeps what folding those up to an order key left behind (order.py
`Base`), so a desk starting reads the checkpoint and the events after it, not the events before it. Written
only by this desk for itself (never sent to a peer), so it is trusted as read: a checkpoint that cannot be
read, or from another version, is simply not used (the desk refolds from the journal). Pure: no I/O.
"""

from __future__ import annotations

import sys
from decimal import Decimal
from typing import Any

import msgpack

from node.crdt.clocks import Bound, ClockEvidence
from node.crdt.conflicts import Conflict
from node.crdt.state import CirculationState, Loan, Outcome, SnapshotRef, shared

VERSION = 3  # 2: the newest snapshot; 3: snapshots ordered by version first
OrderKey = tuple[int, int, str, int]


class CheckpointError(ValueError):
    """The bytes are not a checkpoint this version wrote."""


def _conflict(k: Conflict) -> list[Any]:
    return [k.id, k.kind, k.item, list(k.patrons), list(k.events), k.needs_admin, k.about, k.reason, k.node,
            k.offset_ms]


def _conflict_from(v: list[Any]) -> Conflict:
    return Conflict(v[0], v[1], v[2], tuple(v[3]), tuple(v[4]), v[5], v[6], v[7], v[8], v[9])


def encode(key: OrderKey, state: CirculationState) -> bytes:
    """The state as folded up to and including the event at `key` (before `end_fold`)."""
    clocks = state.clocks
    obj = {
        "v": VERSION,
        "key": list(key),
        "loans": [[x.item, x.patron, x.due, x.event, x.node, x.at] for x in state.loans.values()],
        "returned": state.returned,
        "payments": {p: str(a) for p, a in state.payments.items()},
        "in_house_uses": state.in_house_uses,
        "registrations": state.registrations,
        "conflicts": [_conflict(k) for k in state.conflicts.values()],
        "settled": state.settled,
        "voided": state.voided,
        "away": {n: list(a) for n, a in state.away.items()},
        "outcomes": {t: [o.status, o.message, o.term, o.event] for t, o in state.outcomes.items()},
        "retired": state.retired,
        "quarantined": state.quarantined,
        "disputed": {k: list(v) for k, v in state.disputed.items()},
        "bounds": {n: {m: [b.ms, b.ahead, b.behind] for m, b in theirs.items()}
                   for n, theirs in clocks.bounds.items()},
        "flagged": {n: _conflict(k) for n, k in clocks.flagged.items()},
        "folded": clocks.folded,
        "acknowledged": clocks.acknowledged,
        "snapshot": None if state.snapshot is None else [
            getattr(state.snapshot, f) for f in SnapshotRef.__slots__],
        "events_seen": state.events_seen,
        "baseline_known": state._baseline_known,
    }
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def decode(data: bytes) -> tuple[OrderKey, CirculationState]:
    try:
        o = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if not isinstance(o, dict) or o.get("v") != VERSION:
            raise CheckpointError("not a checkpoint of this version")
        wall, counter, node, seq = o["key"]
        clocks = ClockEvidence(
            {n: {m: Bound(*b) for m, b in theirs.items()} for n, theirs in o["bounds"].items()},
            {n: _conflict_from(k) for n, k in o["flagged"].items()}, o["folded"], o["acknowledged"])
        state = CirculationState(
            loans={v[0]: Loan(*v) for v in o["loans"]},
            returned=o["returned"],
            payments={p: Decimal(a) for p, a in o["payments"].items()},
            in_house_uses=o["in_house_uses"],
            registrations=o["registrations"],
            conflicts={v[0]: _conflict_from(v) for v in o["conflicts"]},
            settled=o["settled"],
            voided=o["voided"],
            away={n: (a[0], a[1]) for n, a in o["away"].items()},
            outcomes={t: Outcome(sys.intern(v[0]), shared(v[1]), v[2], v[3]) for t, v in o["outcomes"].items()},
            retired=o["retired"],
            quarantined=o["quarantined"],
            disputed={k: tuple(v) for k, v in o["disputed"].items()},
            clocks=clocks,
            snapshot=None if o["snapshot"] is None else SnapshotRef(*o["snapshot"]),
            events_seen=o["events_seen"],
            _baseline_known=o["baseline_known"],
        )
    except CheckpointError:
        raise
    except Exception as e:  # a checkpoint this desk wrote and cannot read: refold instead
        raise CheckpointError(f"checkpoint unreadable ({type(e).__name__})") from None
    return (wall, counter, node, seq), state
