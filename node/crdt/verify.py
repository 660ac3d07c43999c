"""Deciding what a peer may add to the log (DESIGN.md §3, "Trust in what arrives").

Automerge changes are hash-linked but not signed, and any peer may write any key. So after a sync
message is applied, every entry it touched is checked here: a new event must be well formed, stored under
its own id and signed by the node it names; a node record must be self-certifying; nothing that exists
may be altered or deleted (put again byte for byte is no change: desks of an earlier version carried events
into each new epoch's document). Pure: lookups are passed in.

Signatures are checked per run: a desk's new events that chain (`prev` = hash of the one before, back to
one this node already holds or to the first) are all bound into the signature of the last, so one
signature check covers the run. A healed partition brings thousands of events a desk in a few runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from node.crdt.event import GENESIS, Event, EventError, chain_hash, decode_event, verify_event
from node.crdt.records import RECORD_PREFIX, NodeRecord, RecordError, decode_record
from node.crdt.refusals import Refusal, Refused

EVENT_KEY = re.compile(r"^[0-9a-f]{32}:[1-9][0-9]{0,17}$")


@dataclass
class Verdict:
    events: list[tuple[Event, bytes]] = field(default_factory=list)
    records: list[tuple[NodeRecord, bytes]] = field(default_factory=list)
    refusals: list[Refused] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refusals

    def refuse(self, kind: Refusal, message: str) -> None:
        self.refusals.append(Refused(kind, message))


def verify_touched(
    keys: Iterable[str],
    value_of: Callable[[str], bytes | None],
    known_event: Callable[[str], bytes | None],
    known_record: Callable[[str], NodeRecord | None],
    admitted: Callable[[NodeRecord], str | None] = lambda record: None,
    refuse_event: Callable[[Event, NodeRecord], Refused | None] = lambda event, record: None,
) -> Verdict:
    """`admitted` may refuse a record (it returns the reason: the node is then not a member) and
    `refuse_event` an event (it returns the refusal): the hooks where membership and revocation slot in.
    Every refusal is typed where it is found, so nobody downstream has to guess its kind from its words."""
    verdict = Verdict()
    keys = list(keys)
    fresh_records: dict[str, NodeRecord] = {}
    for key in (k for k in keys if k.startswith(RECORD_PREFIX)):
        node = key[len(RECORD_PREFIX):]
        raw = value_of(key)
        if raw is None:
            verdict.refuse(Refusal.BAD_NODE_RECORD, f"node record {node[:12]} deleted")
            continue
        try:
            record = decode_record(raw, node)
        except RecordError as e:
            verdict.refuse(Refusal.BAD_NODE_RECORD, f"node record {node[:12]}: {e}")
            continue
        previous = known_record(node)
        if previous is not None and record.at <= previous.at:
            # The same record, or an older one: nothing changes (the newer one held stays). Each desk puts
            # its record into each new epoch's document (and earlier versions the records of the events they
            # carried), some holding older versions; refusing those would drop links between honest desks.
            continue
        reason = admitted(record)
        if reason:
            verdict.refuse(Refusal.NOT_A_MEMBER, f"node record {node[:12]}: {reason}")
            continue
        fresh_records[node] = record
        verdict.records.append((record, raw))
    fresh: dict[str, list[tuple[Event, bytes]]] = {}
    for key in keys:
        if key.startswith(RECORD_PREFIX):
            continue
        if not EVENT_KEY.match(key):
            verdict.refuse(Refusal.MALFORMED, f"unexpected entry {key[:60]!r}")
            continue
        raw = value_of(key)
        existing = known_event(key)
        if existing is not None:
            if raw == existing:
                continue  # put again, byte for byte (an earlier version carried events into new documents)
            what = "deletes" if raw is None else "alters"
            verdict.refuse(Refusal.ALTERED_EVENT, f"change {what} existing event {key}")
            continue
        if raw is None:
            verdict.refuse(Refusal.MALFORMED, f"entry {key} is not an event")
            continue
        try:
            event = decode_event(raw)
        except EventError as e:
            verdict.refuse(Refusal.MALFORMED, f"event {key}: {e}")
            continue
        if event.id != key:
            verdict.refuse(Refusal.MALFORMED, f"event stored under {key} claims to be {event.id}")
            continue
        fresh.setdefault(event.node, []).append((event, raw))
    for node, events in fresh.items():
        signer = fresh_records.get(node) or known_record(node)
        if signer is None:
            for event, _ in events:
                verdict.refuse(Refusal.UNKNOWN_NODE, f"event {event.id} is signed by an unknown node")
            continue
        reason = admitted(signer) if node not in fresh_records else None
        if reason:
            for event, _ in events:
                verdict.refuse(Refusal.NOT_A_MEMBER, f"event {event.id}: {reason}")
            continue
        allowed = []
        for event, raw in events:
            refused = refuse_event(event, signer)
            if refused is not None:
                verdict.refusals.append(refused)
            else:
                allowed.append((event, raw))
        _verify_runs(sorted(allowed, key=lambda er: er[0].seq), signer.key, known_event, verdict)
    return verdict


def _verify_runs(events: list[tuple[Event, bytes]], key: bytes, known_event: Callable[[str], bytes | None],
                 verdict: Verdict) -> None:
    """Splits one desk's new events into hash-chained runs and checks the last signature of each."""
    run: list[tuple[Event, bytes]] = []
    for event, raw in events:
        if run and run[-1][0].seq + 1 == event.seq:
            linked = event.prev == chain_hash(run[-1][1])
        else:
            if run:
                _close_run(run, key, verdict)
            before = GENESIS if event.seq == 1 else known_event(f"{event.node}:{event.seq - 1}")
            if before is None:  # its predecessor is missing: it must stand on its own signature
                linked = True
                run = []
                _close_run([(event, raw)], key, verdict)
                continue
            linked = event.prev == (GENESIS if event.seq == 1 else chain_hash(before))
            run = []
        if not linked:
            verdict.refuse(Refusal.BROKEN_CHAIN,
                           f"event {event.id} does not chain to {event.node[:12]}'s previous event")
            if run:
                _close_run(run, key, verdict)
            run = []
            continue
        run.append((event, raw))
    if run:
        _close_run(run, key, verdict)


def _close_run(run: list[tuple[Event, bytes]], key: bytes, verdict: Verdict) -> None:
    try:
        verify_event(run[-1][0], key)
    except EventError as e:
        verdict.refuse(Refusal.BAD_SIGNATURE, f"{e} (refusing the {len(run)} event(s) it vouches for)")
        return
    verdict.events.extend(run)


def verify_run(node: str, first: int, raws: list[bytes], before: bytes | None, signer: NodeRecord,
               refuse_event: Callable[[Event, NodeRecord], Refused | None] = lambda event, record: None) -> Verdict:
    """A journal run (the bulk path): `node`'s events `first`.. in a hash chain that continues `before` (the
    raw event first-1 as this node holds it; None for the first). All are kept or none: the chain binds
    each event to the next, so the one signature of the last vouches for the run. One exception: a run that
    runs past its desk's revocation keeps the events before it, vouched for by the last one's signature."""
    verdict = Verdict()
    events: list[tuple[Event, bytes]] = []
    link = GENESIS if first == 1 else (chain_hash(before) if before is not None else None)
    if link is None:
        verdict.refuse(Refusal.BROKEN_CHAIN, f"run of {node[:12]} from {first} does not follow an event held")
        return verdict
    for i, raw in enumerate(raws):
        try:
            event = decode_event(raw)
        except EventError as e:
            verdict.refuse(Refusal.MALFORMED, f"run of {node[:12]}, event {first + i}: {e}")
            return verdict
        if event.node != node or event.seq != first + i:
            verdict.refuse(Refusal.MALFORMED, f"run of {node[:12]} from {first} holds {event.id}")
            return verdict
        if event.prev != link:
            verdict.refuse(Refusal.BROKEN_CHAIN,
                           f"event {event.id} does not chain to {node[:12]}'s previous event")
            return verdict
        refused = refuse_event(event, signer)
        if refused is not None:
            verdict.refusals.append(refused)
            if refused.kind is Refusal.REVOKED_NODE and events:  # what the desk wrote before it was revoked
                _close_run(events, signer.key, verdict)  # stands, vouched for by its own last signature
            return verdict
        link = chain_hash(raw)
        events.append((event, raw))
    if events:
        _close_run(events, signer.key, verdict)
    return verdict
