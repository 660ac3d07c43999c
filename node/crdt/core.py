"""The log in memory, free of I/O: verified events in, effects out.

It is what every desk must agree on, so it is kept where it can be driven by a test without a disk, a
document or an event loop: what this desk holds (the version vector, each desk's latest bytes, the node
records), revocations and seals however old, arrival positions, the causal order and the fold (order.py),
and the judgement of a peer's run or sync verdict. What it answers says what to write (journal entries,
records), what arrived (the live feed) and what was refused, by kind. The shell (eventlog.py) owns the
journal, the Automerge document, the commit gate and the wakers, and does what the answers say.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from node.cluster import TrustPolicy
from node.crdt.epochs import Epochs
from node.crdt.event import Event, applied_target, chain_hash, decode_kept, kind_column
from node.crdt.order import Base, History, OrderedLog, OrderKey, causal_sequence
from node.crdt.records import NodeRecord, decode_record, record_key
from node.crdt.refusals import Refusal, Refused
from node.crdt.verify import verify_run, verify_touched
from node.storage.db import JournalEntry, Loaded, Row, SavedBase

log = logging.getLogger(__name__)

REFUSALS_KEPT = 100  # messages of the latest refusals, for /status


@dataclass(frozen=True)
class Arrival:
    """An event as this node learned of it: `pos` is its local arrival position (the /events cursor)."""

    pos: int
    event: Event
    local: bool


@dataclass
class Taken:
    """What a peer's message changed. `refused` set: nothing was taken and the link is dropped for it.
    Otherwise `records` and `entries` are to be written, `arrivals` to be announced, and `top` is the
    highest order key among them (the clock observes it)."""

    records: list[tuple[NodeRecord, bytes]] = field(default_factory=list)
    entries: list[JournalEntry] = field(default_factory=list)
    arrivals: list[Arrival] = field(default_factory=list)
    top: OrderKey | None = None
    refused: Refused | None = None


StampFix = tuple[str, OrderKey, str, str | None]  # an event's id, its order key, kind and applied target


@dataclass
class Opened:
    """What a start found: order keys the journal lacks or has wrong (written back once), and the highest
    key taken in (the clock observes it)."""

    stamps_due: list[StampFix]
    top: OrderKey | None


class LogCore:
    def __init__(self, policy: TrustPolicy | None = None, history: History | None = None) -> None:
        self.policy = policy or TrustPolicy()
        self.ordered_log = OrderedLog(history=history)
        self.vector: dict[str, int] = {}  # node -> highest seq held (a prefix of each desk's chain)
        # Every desk's latest event as held, which the next run of its events must chain to. (Other events'
        # bytes are read from the journal when asked for.)
        self.latest_raw: dict[str, bytes] = {}
        self.records: dict[str, NodeRecord] = {}
        self.records_raw: dict[str, bytes] = {}
        self.revoked: dict[str, int] = {}  # node -> last seq accepted from it (kept as events arrive)
        self.revoked_by: dict[str, str] = {}  # node -> the revoke event whose `upto` stands
        self.epochs = Epochs()
        self.event_count = 0
        self.next_pos = 1  # the next arrival position (the journal's `pos`, the /events cursor)
        self.restamps = 0  # the order's restamps whose keys the journal has
        self.refusals: Counter[Refusal] = Counter()
        self.refusal_log: list[str] = []

    # ---- what is held
    def holds(self, event_id: str) -> bool:
        if event_id in self.ordered_log.by_id:
            return True
        node, _, seq = event_id.partition(":")
        return seq.isdigit() and 0 < int(seq) <= self.vector.get(node, 0)

    def desk_of(self, node: str) -> str:
        record = self.records.get(node)
        return record.desk if record else node[:8]

    def take_pos(self) -> int:
        pos = self.next_pos
        self.next_pos += 1
        return pos

    # ---- start
    def open_whole(self, loaded: Loaded) -> Opened:
        """Every event of the journal into memory (no base yet)."""
        journal = [(decode_kept(row.raw, row.meaning), row) for row in loaded.journal]
        rows = {event.id: row for event, row in journal}
        # Journals written before order stamps existed may not be in causal order: causal_sequence puts them so.
        for event in causal_sequence(event for event, _ in journal):
            row = rows[event.id]
            self.take(event, row.raw, local=False, pos=row.pos)
        return self._opened(journal)

    def open_from_base(self, loaded: Loaded, base: Base, saved: SavedBase) -> Opened:
        """The fold's base, and from the journal only what memory must hold beside it (see db.Store.load)."""
        kept = [decode_kept(row.raw, row.meaning) for row in loaded.kept or ()]
        self.ordered_log.restore_base(base, [e for e in kept if e.kind in ("void", "resolve")])
        for event in kept:
            self.remember(event)
        held = set(saved.held)
        taken = []
        for row in loaded.journal:
            event = decode_kept(row.raw, row.meaning)
            if event.id in held and row.key is not None and row.key <= saved.key and row.pos <= saved.pos:
                self.ordered_log.hold(event, row.key)  # in the base already: kept in memory as open work
                self.note(event, row.raw)
            else:
                self.take(event, row.raw, local=False, pos=row.pos)
                taken.append((event, row))
        for node, (seq, raw) in (loaded.tips or {}).items():
            if seq > self.vector.get(node, 0):
                self.vector[node] = seq
                self.latest_raw[node] = raw
        self.ordered_log.opened()
        return self._opened(taken)

    def _opened(self, taken: list[tuple[Event, Row]]) -> Opened:
        """Keys to write back: a journal from before order stamps were kept, or a crash between a local
        event's commit and the fix of its key (a peer's clock ran ahead) left its hlc as its key."""
        keys = [(event, row, self.ordered_log.key_of(event.id)) for event, row in taken]
        return Opened(stamps_due=[(event.id, key, kind_column(event), applied_target(event))
                                  for event, row, key in keys if row.key != key],
                      top=max((key for _, _, key in keys), default=None))

    # ---- taking events in
    def take(self, event: Event, raw: bytes, *, local: bool, pos: int | None = None) -> Arrival | None:
        """A verified event, ordered and folded (None: held already). `pos`: its arrival position, if given."""
        if self.holds(event.id):
            return None
        self.event_count += 1
        self.note(event, raw)
        self.ordered_log.add(event)
        self.remember(event)
        return Arrival(self.take_pos() if pos is None else pos, event, local)

    def note(self, event: Event, raw: bytes) -> None:
        if event.seq > self.vector.get(event.node, 0):
            self.vector[event.node] = event.seq
            self.latest_raw[event.node] = raw

    def remember(self, event: Event) -> None:
        """What the log keeps of a seal or a revocation, however old (db.KEPT_KINDS)."""
        if event.kind == "seal" and event.problem is None:
            self.epochs.offer(event)
        if event.kind == "revoke" and event.problem is None and event.body["node"] not in self.revoked:
            # Read on every TLS handshake and every verified batch: kept here so that reading it never
            # refolds the whole log (as `state` would while a healed partition pours events in).
            self.revoked[event.body["node"]] = event.body["upto"]
            self.revoked_by[event.body["node"]] = event.id

    def keep_records(self, records: Iterable[tuple[NodeRecord, bytes]]) -> None:
        for record, raw in records:
            self.records[record.node] = record
            self.records_raw[record.node] = raw

    def load_records(self, raws: dict[str, bytes]) -> None:
        for node, raw in raws.items():
            self.records[node] = decode_record(raw, node)
            self.records_raw[node] = raw

    def entry_of(self, arrival: Arrival, raw: bytes) -> JournalEntry:
        return journal_entry(arrival.event, raw, arrival.pos, self.ordered_log.key_of(arrival.event.id))

    def _taken(self, pairs: Iterable[tuple[Event, bytes]], records: list[tuple[NodeRecord, bytes]]) -> Taken:
        taken = Taken(records=records)
        for event, raw in pairs:
            arrival = self.take(event, raw, local=False)
            if arrival is not None:
                entry = self.entry_of(arrival, raw)
                taken.arrivals.append(arrival)
                taken.entries.append(entry)
                if taken.top is None or entry.key > taken.top:
                    taken.top = entry.key
        return taken

    def take_run(self, node: str, first: int, raws: list[bytes], record_raw: bytes | None, peer: str) -> Taken:
        """A peer's journal run of `node`'s events `first`.. (the bulk path): verified by its hash chain and
        the signature of its last event, then taken whole, or refused whole. Events already held at its
        start are skipped (another link brought them meanwhile)."""
        held = self.vector.get(node, 0)
        if first > held + 1:
            return self._refused(Refused(Refusal.BROKEN_CHAIN,
                                         f"run of {node[:12]} from {first} leaves a gap after {held}"), peer)
        raws = raws[held + 1 - first:]
        first = held + 1
        records: list[tuple[NodeRecord, bytes]] = []
        signer = self.records.get(node)
        if record_raw is not None and record_raw != self.records_raw.get(node):  # new to us, or newer
            verdict = verify_touched([record_key(node)], lambda _key: record_raw, lambda _key: None,
                                     self.records.get, admitted=self.policy.admit)
            if verdict.records:
                records = verdict.records
                signer = verdict.records[0][0]
            elif signer is None:
                return self._refused(verdict.refusals[0], peer)
            # else an older copy of the record held here, which vouches for the run as well
        if signer is None:
            return self._refused(Refused(Refusal.UNKNOWN_NODE, f"a run of {node[:12]}, a node without a record"),
                                 peer)
        if not records and (reason := self.policy.admit(signer)):
            return self._refused(Refused(Refusal.NOT_A_MEMBER, f"a run of {node[:12]}: {reason}"), peer)
        if not raws:
            self.keep_records(records)
            return Taken(records=records)
        before = self.latest_raw.get(node) if held else None
        verdict = verify_run(node, first, raws, before, signer, refuse_event=self.refuse_event)
        if not self.only_revoked_tails(verdict.refusals, peer):
            return self._refused(verdict.refusals[0], peer)
        self.keep_records(records)
        return self._taken(verdict.events, records)

    def take_synced(self, events: list[tuple[Event, bytes]], records: list[tuple[NodeRecord, bytes]],
                    problems: list[Refused], peer: str) -> Taken:
        """What a verified sync message brought (verify.verify_touched), or its refusal: every problem is
        counted then, and the first is the one the link is dropped for."""
        if not self.only_revoked_tails(problems, peer):
            for problem in problems:
                self.refuse(problem.kind, f"{peer}: {problem.message}")
            return Taken(refused=problems[0])
        self.keep_records(records)
        raws = {event.id: raw for event, raw in events}
        in_order = causal_sequence(sorted((event for event, _ in events), key=lambda e: e.order_key))
        return self._taken(((event, raws[event.id]) for event in self.contiguous(in_order)), records)

    def contiguous(self, events: Iterable[Event]) -> Iterator[Event]:
        """The events from the document that follow what is held of their desks. One that lies beyond a gap
        (its desk wrote the ones before while it was alone, so they are in no document) is left there: the
        version vector stays a prefix, and the run that brings the gap brings it too (catchup.py)."""
        top: dict[str, int] = {}
        for event in events:
            held = top.get(event.node, self.vector.get(event.node, 0))
            if event.seq > held + 1:
                log.debug("%s lies beyond a gap: it comes in a run", event.id)
                continue
            top[event.node] = max(held, event.seq)
            yield event

    # ---- refusals
    def refuse_event(self, event: Event, record: NodeRecord) -> Refused | None:
        return self.policy.refuse_event(event, record, self.revoked.get(event.node))

    def refuse(self, kind: Refusal, message: str) -> None:
        """Counts a refusal by its kind (/status `refusals`) and keeps its message (`recent_refusals`)."""
        self.refusals[kind] += 1
        self.refusal_log.append(message)
        del self.refusal_log[:-REFUSALS_KEPT]
        log.warning("refused from %s", message)

    def _refused(self, refused: Refused, peer: str) -> Taken:
        self.refuse(refused.kind, f"{peer}: {refused.message}")
        return Taken(refused=refused)

    def only_revoked_tails(self, problems: list[Refused], peer: str) -> bool:
        """Whether every problem is a revoked desk's event after its revocation (counted here, then). Those
        are not taken in, but an honest peer may well send them: it received them before it learnt of the
        revocation. What came with them is kept (the events the desk wrote before it stand; a run's are
        vouched for by the signature of the last of them), and the link stays: dropping it would drop it
        again on every reconnection."""
        if any(problem.kind is not Refusal.REVOKED_NODE for problem in problems):
            return False
        for problem in problems:
            self.refuse(problem.kind, f"{peer}: {problem.message} (left out; the rest is kept)")
        return True

    # ---- order keys the journal must be told
    def stamp_fixes(self, local: Iterable[Event]) -> list[StampFix]:
        """Local events were written with their hlc as their order key, which it is unless a peer's clock ran
        ahead; and a restamp (order.py) changes keys already written: the keys memory has, to write."""
        fixes = [(e.id, key, kind_column(e), applied_target(e)) for e in local
                 if (key := self.ordered_log.key_of(e.id)) != own_key(e)]
        if self.ordered_log.restamps != self.restamps:
            self.restamps = self.ordered_log.restamps
            fixes = [(e.id, self.ordered_log.key_of(e.id), kind_column(e), applied_target(e))
                     for e in self.ordered_log.by_id.values()]
        return fixes

    def chain_tip(self, node: str) -> bytes:
        """The hash a desk's next event chains to, from its latest event held."""
        return chain_hash(self.latest_raw[node])


def own_key(event: Event) -> OrderKey:
    """The order key a local event is written with: its hlc (order.py restamps it if a peer ran ahead)."""
    return (event.hlc.wall, event.hlc.counter, event.node, event.seq)


def journal_entry(event: Event, raw: bytes, pos: int, key: OrderKey) -> JournalEntry:
    return JournalEntry(event.id, raw, event.problem, kind_column(event), pos, key, applied_target(event))
