"""The node's event log: local appends, verified receives, the journal, the ordered view and the state.

Invariants:
- a local event is in SQLite (fsynced) before `append` returns, and before any peer can be sent it:
  `durable()` holds every outgoing sync message back while a local commit is in flight, so a crash can
  never leave a peer holding an event this node forgot (which would make it reuse the sequence number);
- an entry a peer sends is kept only if `verify_touched` accepts everything in that message; otherwise
  the document is rolled back to its heads before the message, nothing is stored, and the refusal is
  counted and reported to the link (which drops the peer); a journal run (the bulk path) is kept whole
  or not at all, the same way;
- the document is the current epoch's (epochs.py): once this node holds everything a seal covers, it
  starts the next epoch's document holding its record. A scan goes in it only while a peer link is up;
  whatever a peer lacks that no document brought it asks for in journal runs (catchup.py);
- the version vector is a prefix of each desk's events: an event a document brings beyond a gap is left
  there until the run that fills the gap brings it too.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter
from collections.abc import Callable, Container, Iterator, Mapping
from pathlib import Path
from typing import Any

from node.cluster import TrustPolicy
from node.crdt import checkpoint
from node.crdt.core import Arrival, LogCore, Taken, journal_entry, own_key
from node.crdt.document import DocumentError, LogDocument, SyncState
from node.crdt.epochs import Epoch, Epochs
from node.crdt.event import GENESIS, Event, EventError, chain_hash, check_body, decode_kept, make_event
from node.crdt.hlc import DEFAULT_MAX_DRIFT_MS, Hlc, HybridClock
from node.crdt.order import Base, OrderedLog, OrderKey
from node.crdt.records import NodeRecord, make_record, record_key
from node.crdt.refusals import Refusal, Refused
from node.crdt.state import CirculationState, Loan, Outcome, answered, open_work
from node.crdt.verify import verify_touched
from node.discovery.catchup import CatchUp
from node.storage import db
from node.storage.gate import CommitGate
from node.trust.identity import NodeIdentity

log = logging.getLogger(__name__)

COMPACT_EVERY = 2000  # change chunks between full saves…
COMPACT_INTERVAL = 60.0  # …and seconds: a healed partition brings thousands at once, a save costs O(log)
BATCH_YIELD = 2000  # events built or put between two turns of the event loop in append_many
RUN_BYTES = 4 * 1024 * 1024  # a journal run served in one frame holds about this much at most
# A batch of local events larger than this (a big offline file) is put in no document: it is written with a
# seal of its own, in the same transaction, and travels in journal runs. As one Automerge change it would
# reach a peer as one sync message, and a link drops a message over its 64 MiB frame limit.
SEALED_BATCH_BYTES = 4 * 1024 * 1024
# The fold's base moves (order.py) once this many events sit in memory after it, to leave about the last
# BASE_TAIL_KEPT there (it moves to an in-memory checkpoint, which costs a copy, not a fold): history leaves
# memory, and a desk starts from the base, not from its whole journal.
BASE_EVERY = 10_000
BASE_TAIL_KEPT = 1_000
# Nor while events may still arrive that sort before it: not while a peer holds events this desk lacks, nor
# for BULK_SETTLE_S after a journal run (catch-up brings one desk's events at a time, not in order), nor over
# events younger than SETTLE_MS (a live peer's concurrent scans). An event that sorts before the base is still
# right (the base is refolded from the journal), but a refold costs a pass over history.
BULK_SETTLE_S = 5.0
SETTLE_MS = 10_000


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class RefusedSync(Exception):
    """A peer's sync message was refused (and counted); the link carrying it should be dropped.
    `refused` is the first of the message's refusals: the one the link is closed for."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(refused.message)
        self.refused = refused


class JournalHistory:
    """The events the fold's base holds, read back from the journal (order.py `History`)."""

    def __init__(self, reader: db.Reader) -> None:
        self._reader = reader

    def event(self, event_id: str) -> Event | None:
        row = self._row(event_id)
        return decode_kept(row.raw, row.meaning) if row is not None else None

    def key(self, event_id: str) -> OrderKey | None:
        row = self._row(event_id)
        return row.key if row is not None else None

    def _row(self, event_id: str) -> db.Row | None:
        node, _, seq = event_id.partition(":")
        return self._reader.event(node, int(seq)) if seq.isdigit() else None

    def upto(self, key: OrderKey) -> Iterator[tuple[OrderKey, Event]]:
        for row in self._reader.upto(key):
            if row.key is not None:
                yield row.key, decode_kept(row.raw, row.meaning)

    def answer(self, target: str, upto: OrderKey, voided: Container[str]) -> Event | None:
        for row in self._reader.answers(target, upto):
            event = decode_kept(row.raw, row.meaning)
            if event.id not in voided:
                return event
        return None


class HeldEvents(Mapping[str, Event]):
    """Every event this desk holds, by id: from memory, or from the journal for those that left it (the
    history a fold base holds). Its length is what the desk holds; iterating reads the whole journal."""

    def __init__(self, log: EventLog) -> None:
        self._log = log

    def __getitem__(self, event_id: str) -> Event:
        event = self._log.event(event_id)
        if event is None:
            raise KeyError(event_id)
        return event

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and self._log.holds(event_id)

    def __len__(self) -> int:
        return self._log.event_count

    def __iter__(self) -> Iterator[str]:
        memory = self._log.ordered_log.by_id
        yield from memory
        for row in self._log.reader.page(0, 1 << 62):
            event_id = decode_kept(row.raw, row.meaning).id
            if event_id not in memory:
                yield event_id


class EventLog:
    def __init__(self, identity: NodeIdentity, data_dir: Path, desk: str,
                 physical_ms: Callable[[], int] = wall_ms, *, policy: TrustPolicy | None = None,
                 cert: str | None = None, max_drift_ms: int = DEFAULT_MAX_DRIFT_MS) -> None:
        self.identity = identity
        self.desk = desk
        self.policy = policy or TrustPolicy()
        self.core = LogCore(self.policy)  # what the desk holds, ordered and folded: no I/O (crdt/core.py)
        self.cert = cert  # this desk's certificate from the cluster CA, published in its node record
        self.store = db.Store(data_dir / "circmesh.sqlite")
        self._physical_ms = physical_ms
        self.clock = HybridClock(physical_ms, max_drift_ms=max_drift_ms)  # peers push it at most this far ahead
        self.doc: LogDocument
        self.reader: db.Reader  # reads on the event loop's thread (the history, /events pages)
        self.events = HeldEvents(self)
        self._uncommitted: set[str] = set()  # received events integrated, their journal rows not yet committed
        self._in_flight_keys: dict[str, OrderKey] = {}  # local events being written, not yet integrated
        self._base_due = BASE_EVERY  # when the fold's base is next tried (events after it)
        self._bulk_until = 0.0  # monotonic time until which no base is taken (see BULK_SETTLE_S)
        self._saved_refolds = 0  # the base refolds (order.py) when the base was last saved
        self.seq = 0
        self._tip: bytes | None = None  # this desk's latest event as stored
        self._listeners: list[Callable[[Arrival], None]] = []
        self._wakers: set[asyncio.Event] = set()
        self.gate = CommitGate()  # sync waits while a local change is written (node/storage/gate.py)
        self._writing = asyncio.Lock()
        self._since_save = 0
        self._last_compaction = float("-inf")
        self.catchup = CatchUp()  # which peer is asked for which journal runs (shared by the links)
        self.doc_events = 0  # events in the current epoch's document: when the bridge seals
        self._doc_epoch = ""  # the seal whose epoch the document in memory (and on disk) belongs to
        # Peer links up (link_up/link_down): a desk alone writes its scans to the journal only (see _append).
        self.links = 0

    # What the core holds, read where the desk's parts look for it (ports.py).
    @property
    def vector(self) -> dict[str, int]:
        return self.core.vector

    @property
    def records(self) -> dict[str, NodeRecord]:
        return self.core.records

    @property
    def records_raw(self) -> dict[str, bytes]:
        return self.core.records_raw

    @property
    def revoked(self) -> dict[str, int]:
        return self.core.revoked

    @property
    def revoked_by(self) -> dict[str, str]:
        return self.core.revoked_by

    @property
    def epochs(self) -> Epochs:
        return self.core.epochs

    @property
    def ordered_log(self) -> OrderedLog:
        return self.core.ordered_log

    @property
    def event_count(self) -> int:
        return self.core.event_count

    @property
    def refusals(self) -> Counter[Refusal]:
        return self.core.refusals

    @property
    def refusal_log(self) -> list[str]:
        return self.core.refusal_log

    # ---- start
    def open(self) -> None:
        loaded = self.store.load()
        self.reader = db.Reader(self.store.path)
        self.core = LogCore(self.policy, history=JournalHistory(self.reader))
        self.doc = LogDocument(self.identity.actor_id, loaded.document)
        self.core.load_records(loaded.records)
        base = None
        if loaded.base is not None:
            try:
                base = checkpoint.decode(loaded.base.data)
            except checkpoint.CheckpointError as e:
                log.warning("the fold's checkpoint cannot be read (%s): folding the whole journal", e)
                loaded = self.store.load(with_base=False)
        self.core.next_pos = loaded.last_pos + 1
        if base is not None and loaded.base is not None:
            opened = self.core.open_from_base(loaded, base, loaded.base)
        else:
            opened = self.core.open_whole(loaded)
        self._observe(opened.top)
        self._stamps_due = opened.stamps_due
        self.core.event_count = loaded.count
        self.core.restamps = self.ordered_log.restamps  # those of the start are in _stamps_due
        self.seq = self.vector.get(self.identity.node_id, 0)
        self._doc_epoch = loaded.meta.get("epoch", "")
        self.epochs.advance(self.vector)  # the epoch the journal says (start moves the document there)
        self.doc_events = sum(1 for key in self.doc.keys() if not key.startswith("n:"))
        own = self.records.get(self.identity.node_id)
        if own is None or own.desk != self.desk or own.cert != self.cert:
            record = make_record(self.identity.node_id, self.identity.public_key_raw, self.desk,
                                 max(self._physical_ms(), own.at + 1 if own else 0), self.identity.sign, self.cert)
            self._pending_record: NodeRecord | None = record
        else:
            self._pending_record = None

    async def start(self) -> None:
        """Publishes this node's record (its key and desk name) if the document lacks it, and moves the
        document to the epoch the journal says (a crash may have come between a seal and the move)."""
        if self._stamps_due:  # a journal from before order stamps were kept, or a key left unfixed: written once
            self.store.submit([db.journal_stamps(self._stamps_due)]).add_done_callback(self._remote_committed)
            self._stamps_due = []
        self._advance()
        record = self._pending_record
        if record is not None:
            raw = record.encode()
            key = record_key(record.node)
            self.gate.enter()
            try:
                chunks = self.doc.put({key: raw})
                self.core.keep_records([(record, raw)])
                await self.store.commit([db.record_upsert(record.node, raw)]
                                        + [db.change_insert(c) for c in chunks])
            finally:
                self.gate.leave()
            self._pending_record = None
            self._wake()

    def close(self) -> None:
        self.store.close()
        self.reader.close()

    # ---- reading
    @property
    def epoch(self) -> Epoch:
        return self.epochs.current

    @property
    def state(self) -> CirculationState:
        return self.ordered_log.state

    def ordered(self) -> list[Event]:
        """The events in memory, in order: every event until the fold's base first moves, then those after
        it and the open work before it (history: `in_order`)."""
        return list(self.ordered_log)

    def event(self, event_id: str) -> Event | None:
        """An event held here, from memory or from the journal."""
        return self.ordered_log.event(event_id) if self.holds(event_id) else None

    def answered(self, event_id: str) -> bool:
        """Whether the ILS answered the event (its outcome in the state, or retired with the history)."""
        return answered(self.state, self.ordered_log, event_id)

    def outcome(self, event_id: str) -> Outcome | None:
        """The ILS's answer to the event, from the state or, once retired, from its `applied` in the journal."""
        outcome = self.state.outcomes.get(event_id)
        if outcome is None and (applied := self.ordered_log.answer(event_id)) is not None:
            body = applied.body
            outcome = Outcome(body["status"], body["message"], body["term"], applied.id)
        return outcome

    def base_loans(self) -> Mapping[str, Loan]:
        return self.ordered_log.base_loans

    def holds(self, event_id: str) -> bool:
        return self.core.holds(event_id)

    def in_order(self) -> Iterator[Event]:
        """Every event held, in the log's order, the history read from the journal (exports)."""
        memory = self.ordered_log.by_id
        journal = ((row.key, decode_kept(row.raw, row.meaning)) for row in self.reader.in_order()
                   if row.key is not None)
        merged = heapq.merge(((self.ordered_log.key_of(i), e) for i, e in
                              sorted(memory.items(), key=lambda ie: self.ordered_log.key_of(ie[0]))),
                             ((k, e) for k, e in journal if e.id not in memory), key=lambda pair: pair[0])
        return (e for _, e in merged)

    def page(self, after: int, limit: int) -> list[tuple[int, Event, OrderKey]]:
        """Events written to the journal after arrival position `after` (the /events cursor), by position."""
        out = []
        for row in self.reader.page(after, limit):
            event = decode_kept(row.raw, row.meaning)
            key = self.ordered_log.known_key(event.id) or row.key or event.order_key
            out.append((row.pos, event, key))
        return out

    def desk_of(self, node: str) -> str:
        return self.core.desk_of(node)

    def subscribe(self, listener: Callable[[Arrival], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    # ---- local events
    async def append(self, kind: str, body: dict[str, Any], staff: str, *, at: int | None = None) -> Event:
        """Writes one event; returns once it is durable. Raises EventError for a malformed body.
        `at` overrides the desk's clock for operations done earlier elsewhere (an imported offline file)."""
        return await self._append(kind, lambda _seq, _seen: body, staff, at)

    async def _append(self, kind: str, body_for: Callable[[int, dict[str, int]], dict[str, Any]], staff: str,
                      at: int | None) -> Event:
        async with self._writing:  # never waits unless a batch is being built (see append_many)
            seq = self.seq + 1
            seen = {n: s for n, s in self.vector.items() if n != self.identity.node_id}
            event = make_event(
                node=self.identity.node_id, seq=seq, hlc=self.clock.tick(),
                at=self._physical_ms() if at is None else at, kind=kind,
                body=body_for(seq, seen), staff=staff, seen=seen,
                sign=self.identity.sign, prev=self._chain_tip(),
            )
            raw = event.encode()
            self.seq = seq
            self._tip = raw  # the next event chains to this one even if it is written before this one is durable
            self.gate.check_healthy()
            self.gate.enter()
            self._in_flight_keys[event.id] = own_key(event)
            pos = self.core.take_pos()
            try:
                chunks = self.doc.put({event.id: raw}) if self.links else []
                statements = [db.journal_insert([journal_entry(event, raw, pos, own_key(event))])]
                written = self.store.submit(statements + [db.change_insert(c) for c in chunks])
            except BaseException as e:
                raise self.gate.fail(e) from e
        try:
            await written
        except BaseException as e:
            raise self.gate.fail(e) from e
        try:
            self._integrate(event, raw, local=True, pos=pos)
            self._write_stamps([event])
        finally:
            # The event is durable: whatever happens while folding it, sync must go on (a stuck gate
            # would silence this desk while its links still looked connected).
            self._in_flight_keys.pop(event.id, None)
            self.gate.leave()
            self.doc_events += 1 if chunks else 0
            self._count_change(len(chunks))
            self._advance()
            self._move_base_if_due()
            self._wake()
        return event

    async def append_many(self, entries: list[tuple[str, dict[str, Any], int | None]], staff: str) -> list[Event]:
        """Writes (kind, body, at) entries as one: all durable when it returns, or none ever written.

        An imported offline file must be all or nothing; appending its lines one by one would leave a
        prefix behind when one is refused or the disk fails. Every body is checked before anything is
        touched (EventError names the entry), then the events go to disk in one SQLite transaction.
        Shielded: a caller that goes away (a client hanging up) cannot stop it half way.
        A batch over SEALED_BATCH_BYTES is sealed as it is written (the seal is not among the events returned)."""
        for i, (kind, body, at) in enumerate(entries):
            try:
                check_body(kind, body, at)
            except EventError as e:
                raise EventError(f"entry {i + 1}: {e}") from None
        return await asyncio.shield(asyncio.ensure_future(self._append_many(entries, staff)))

    async def _append_many(self, entries: list[tuple[str, dict[str, Any], int | None]], staff: str) -> list[Event]:
        built: list[tuple[Event, bytes]] = []
        size = 0
        async with self._writing:  # no other local event may take a sequence number in between
            self.gate.check_healthy()
            seq, prev = self.seq, self._chain_tip()
            seen = {n: s for n, s in self.vector.items() if n != self.identity.node_id}
            for kind, body, at in entries:
                seq += 1
                event = make_event(node=self.identity.node_id, seq=seq, hlc=self.clock.tick(),
                                   at=self._physical_ms() if at is None else at, kind=kind, body=body,
                                   staff=staff, seen=seen, sign=self.identity.sign, prev=prev)
                raw = event.encode()
                size += len(raw)
                prev = chain_hash(raw)
                built.append((event, raw))
                if len(built) % BATCH_YIELD == 0:
                    await asyncio.sleep(0)  # signing is the slow part: let the desk answer meanwhile
            if not built:
                return []
            self.gate.check_healthy()
            sealed = size > SEALED_BATCH_BYTES
            if sealed:
                seq += 1
                seen = {n: s for n, s in self.vector.items() if n != self.identity.node_id}
                seal = make_event(node=self.identity.node_id, seq=seq, hlc=self.clock.tick(), at=self._physical_ms(),
                                  kind="seal", body=self._seal_body(seq, seen), staff=staff, seen=seen,
                                  sign=self.identity.sign, prev=prev)
                events = [*built, (seal, seal.encode())]
            else:
                events = built
            # From the first change put in the document until the commit, no sync message may leave.
            self.gate.enter()
            self._in_flight_keys.update((e.id, own_key(e)) for e, _ in events)
            chunks: list[bytes] = []
            try:
                # No yield from the first put to the submit: an epoch moving in between would save a
                # document holding events whose journal rows come after it (sealed batches are put nowhere).
                if not sealed and self.links:
                    chunks += self.doc.put({e.id: raw for e, raw in built})
                positions = [self.core.take_pos() for _ in events]
                statements = ([db.journal_insert([journal_entry(e, raw, pos, own_key(e))
                                                  for (e, raw), pos in zip(events, positions, strict=True)])]
                              + [db.change_insert(c) for c in chunks])
                written = self.store.submit(statements)
            except BaseException as e:
                raise self.gate.fail(e) from e
            self.seq = seq
            self._tip = events[-1][1]
        try:
            await written
        except BaseException as e:
            raise self.gate.fail(e) from e
        try:
            for (event, raw), pos in zip(events, positions, strict=True):
                self._integrate(event, raw, local=True, pos=pos)
            self._write_stamps([e for e, _ in events])
        finally:  # durable: sync goes on whatever happens while folding
            for event, _ in events:
                self._in_flight_keys.pop(event.id, None)
            self.gate.leave()
            self.doc_events += len(built) if chunks else 0
            self._count_change(len(chunks))
            self._advance()
            self._move_base_if_due()
            self._wake()
        return [e for e, _ in built]

    def _chain_tip(self) -> bytes:
        if self.seq == 0:
            return GENESIS
        if self._tip is None:
            return self.core.chain_tip(self.identity.node_id)
        return chain_hash(self._tip)

    @property
    def failed(self) -> str | None:
        """Why this desk stopped taking scans (its journal could not be written), if it did."""
        return self.gate.failed

    async def durable(self) -> None:
        """Waits until no local change is waiting for its fsync; never returns after a storage failure."""
        await self.gate.durable()

    # ---- replication
    def new_sync_state(self) -> SyncState:
        return self.doc.new_sync_state()

    def generate_sync(self, sync_state: SyncState) -> bytes | None:
        return self.doc.generate_sync(sync_state)

    def receive_sync(self, sync_state: SyncState, message: bytes, peer: str) -> int:
        """Applies and verifies a peer's sync message; returns how many new events it brought."""
        try:
            before, touched = self.doc.receive_sync(sync_state, message)
        except DocumentError as e:
            self.refuse(Refusal.GARBAGE, f"{peer}: {e}")
            raise RefusedSync(Refused(Refusal.GARBAGE, str(e))) from None
        if not touched.keys and not touched.problems:
            if sorted(self.doc.heads()) != sorted(before):
                # Changes that touched nothing visible (e.g. an empty change): persist them all the same.
                self._persist_remote(before, [], [])
            return 0
        verdict = verify_touched(touched.keys, self.doc.value, self._held_raw, self.records.get,
                                 admitted=self.policy.admit, refuse_event=self.core.refuse_event)
        problems = [Refused(Refusal.MALFORMED, p) for p in touched.problems] + verdict.refusals
        taken = self.core.take_synced(verdict.events, verdict.records, problems, peer)
        if taken.refused is not None:
            self.doc.rollback(before)
            raise RefusedSync(taken.refused)
        self._persist_remote(before, taken.entries, taken.records)  # the journal stays in causal order too
        self._announce(taken)
        self.doc_events += sum(1 for key in touched.keys if not key.startswith("n:"))  # even those a run brought first
        self._advance()
        self._move_base_if_due()
        self._wake()
        return len(taken.entries)

    # ---- the bulk path (journal runs)
    def receive_run(self, node: str, first: int, raws: list[bytes], record_raw: bytes | None, peer: str) -> int:
        """Verifies and keeps a peer's run of `node`'s events (all or none); returns how many were new.
        Events already held at its start are skipped (another link brought them meanwhile). They are not put
        in the document: a peer that lacks them asks for them in runs too (catchup.py)."""
        self._bulk_until = time.monotonic() + BULK_SETTLE_S
        taken = self.core.take_run(node, first, raws, record_raw, peer)
        if taken.refused is not None:
            raise RefusedSync(taken.refused)
        statements = [db.record_upsert(r.node, raw) for r, raw in taken.records]
        if taken.entries:
            statements.append(db.journal_insert(taken.entries))
        if statements:
            self._submit_remote(statements, [e.id for e in taken.entries])
        if not taken.entries:
            return 0
        self._announce(taken)
        self._write_stamps([])
        self._advance()
        self._move_base_if_due()
        self._wake()
        return len(taken.entries)

    def link_up(self) -> None:
        """A peer link is up: this desk's scans go into the document too, to reach its peers at once."""
        self.links += 1

    def link_down(self) -> None:
        self.links = max(0, self.links - 1)

    async def read_run(self, node: str, first: int, last: int) -> list[bytes]:
        """`node`'s events first..last from the journal (those committed), at most about RUN_BYTES."""
        return await self.store.run(lambda c: db.read_run(c, node, first, last, RUN_BYTES))

    def record_raw(self, node: str) -> bytes | None:
        return self.records_raw.get(node)

    # ---- epochs
    async def seal(self, staff: str = "bridge") -> Event:
        """Closes the current epoch's document (the bridge does, now and then): see epochs.py. Its `upto` is
        exactly its causal past, the seal included."""
        return await self._append("seal", self._seal_body, staff, None)

    def _seal_body(self, seq: int, seen: dict[str, int]) -> dict[str, Any]:
        """The next epoch, and `upto` = exactly the seal's causal past: what it has seen, and itself."""
        return {"epoch": self.epoch.number + 1, "upto": {**seen, self.identity.node_id: seq}}

    def _advance(self) -> None:
        """Moves the document to the epoch the seals held say, if it is not there."""
        target = self.epochs.advance(self.vector)
        if target.seal == self._doc_epoch:
            return
        # A new, empty document with this desk's own record: it carries what is written from now on. What
        # a peer in the new epoch lacks of the events before, it asks for in runs (catchup.py).
        doc = LogDocument(self.identity.actor_id)
        own = self.records_raw.get(self.identity.node_id)
        if own is not None:
            doc.put({record_key(self.identity.node_id): own})
        self.doc = doc
        self._doc_epoch = target.seal
        self.doc_events = 0
        self._since_save = 0
        self._submit_remote(db.rebase(doc.save(), target.seal))
        log.info("epoch %d (sealed by %s): a new document", target.number,
                 self.desk_of(target.seal.partition(":")[0]))
        self._wake()

    def _persist_remote(self, before: list[bytes], entries: list[db.JournalEntry],
                        records: list[tuple[NodeRecord, bytes]]) -> None:
        """Remote entries exist on other nodes too, so their commit is not awaited: group commit batches."""
        chunks = self.doc.changes_since(before)
        statements = ([db.record_upsert(r.node, raw) for r, raw in records]
                      + ([db.journal_insert(entries)] if entries else [])
                      + [db.change_insert(c) for c in chunks])
        self._submit_remote(statements, [e.id for e in entries])
        self._write_stamps([])
        self._count_change(len(chunks))

    def _submit_remote(self, statements: list[db.Statement], events: list[str] | None = None) -> None:
        """Written without waiting (see _persist_remote). `events` written stay in memory until committed:
        the fold's base never lets go of one the journal cannot give back yet."""
        future = self.store.submit(statements)
        if events:
            self._uncommitted.update(events)
            future.add_done_callback(lambda _: self._uncommitted.difference_update(events))
        future.add_done_callback(self._remote_committed)

    def _remote_committed(self, future: asyncio.Future[None]) -> None:
        if not future.cancelled() and (error := future.exception()) is not None:
            self.gate.fail(error)

    def refuse(self, kind: Refusal, message: str) -> None:
        """Counts a refusal by its kind (/status `refusals`) and keeps its message (`recent_refusals`)."""
        self.core.refuse(kind, message)

    def _wake(self) -> None:
        for waker in self._wakers:
            waker.set()

    def waker(self) -> asyncio.Event:
        """An asyncio.Event set whenever the document changes; the link that owns it clears it."""
        waker = asyncio.Event()
        self._wakers.add(waker)
        return waker

    def drop_waker(self, waker: asyncio.Event) -> None:
        self._wakers.discard(waker)

    def _held_raw(self, event_id: str) -> bytes | None:
        """The bytes of an event held here, for a document that brings it again: a second version of it is
        refused. The desk's latest from memory, any other from the journal over the reader's connection,
        which never waits for the writer. One whose row is not committed yet is not found there: it is
        verified as if new (an altered copy then fails its signature instead), then found held."""
        if not self.holds(event_id):
            return None
        node, seq = _node_seq(event_id)
        if seq == self.vector.get(node):
            return self.core.latest_raw.get(node)
        row = self.reader.event(node, seq)
        return row.raw if row is not None else None

    # ---- internals
    def _integrate(self, event: Event, raw: bytes, *, local: bool, pos: int | None = None) -> Arrival | None:
        """Takes a local verified event in (None: held already). `pos`: its arrival position, if given."""
        arrival = self.core.take(event, raw, local=local, pos=pos)
        if arrival is not None:
            self._observe(self.ordered_log.key_of(event.id))
            self._notify(arrival)
        return arrival

    def _announce(self, taken: Taken) -> None:
        """What a peer's message brought: the clock observes it, the listeners hear of each event."""
        self._observe(taken.top)
        for arrival in taken.arrivals:
            self._notify(arrival)

    def _observe(self, key: OrderKey | None) -> None:
        """The clock observes an order stamp taken in: bounded by the clock, as far as it goes (a catch-up's
        are mostly behind it: then nothing to do)."""
        last = self.clock.last
        if key is not None and (key[0], key[1]) >= (last.wall, last.counter):
            self.clock.observe(Hlc(key[0], key[1]))

    def _notify(self, arrival: Arrival) -> None:
        for listener in list(self._listeners):
            try:
                listener(arrival)
            except Exception:
                log.exception("event listener failed")

    def _write_stamps(self, local: list[Event]) -> None:
        fixes = self.core.stamp_fixes(local)
        if fixes:
            self._submit_remote([db.journal_stamps(fixes)])

    def _move_base_if_due(self) -> None:
        """Called once what was just taken in is submitted to the journal (never in the middle of a batch: the
        batch's events would leave memory before the journal could give them back). A base refolded in memory
        (a late event, an answer about history) is saved too, or every start would refold it again."""
        if self.ordered_log.after_base >= self._base_due:
            self._move_base()
        elif self.ordered_log.base_refolds != self._saved_refolds and not self.failed:
            base = self.ordered_log.current_base
            if base is not None:
                self._save_base(base)

    def _save_base(self, base: Base) -> None:
        """Everything submitted so far sorts after it or is in it: it holds the journal's rows up to its key
        among those up to the last position given."""
        self._saved_refolds = self.ordered_log.base_refolds
        held = sorted(self.ordered_log.held_ids)
        self.store.submit([db.base_save(checkpoint.encode(*base), base[0], held, self.core.next_pos - 1)]
                          ).add_done_callback(self._remote_committed)

    def _move_base(self) -> None:
        """Moves the fold's base to leave BASE_TAIL_KEPT events after it and saves it. The events up to it
        leave memory, except open work, and those whose journal rows are not committed yet (the history
        reads the journal). Local events being written sort after it: the saved base holds exactly the
        journal's rows up to its key, among those up to its position, and a restart finds any other."""
        self._base_due = self.ordered_log.after_base + BASE_TAIL_KEPT  # tried again later if it cannot move
        if self.failed or time.monotonic() < self._bulk_until or self.catchup.behind(self.vector, self.revoked):
            return
        try:
            voided, uncommitted = self.state.voided, self._uncommitted

            def kept(e: Event) -> bool:
                return e.id in uncommitted or open_work(e, voided, self.answered)

            settled = (self.clock.last.wall - SETTLE_MS, 0, "", 0)
            before = min([*self._in_flight_keys.values(), settled])
            base = self.ordered_log.advance_base(self.ordered_log.tail_key(-BASE_TAIL_KEPT), kept, before=before)
            if base is None:
                return
            self._save_base(base)
            self._base_due = BASE_EVERY
            log.info("the fold's base moved: %d events in memory (%d of them before it: open work)",
                     len(self.ordered_log), len(self.ordered_log.held_ids))
        except Exception:  # memory stays as it was: a fold from the start is still right
            log.exception("the fold's base could not be moved")

    def _count_change(self, n: int) -> None:
        self._since_save += n
        now = time.monotonic()
        if self._since_save >= COMPACT_EVERY and now - self._last_compaction >= COMPACT_INTERVAL:
            self._since_save = 0
            self._last_compaction = now
            self.store.submit(db.compaction(self.doc.save()))


def _node_seq(event_id: str) -> tuple[str, int]:
    node, _, seq = event_id.partition(":")
    return node, int(seq)
