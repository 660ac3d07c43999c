"""Building blocks for tests: in-memory node identities and a tiny simulated desk that writes events."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.crdt.event import GENESIS, Event, chain_hash, make_event
from node.crdt.hlc import Hlc, HybridClock
from node.crdt.order import OrderedLog
from node.crdt.records import NodeRecord, make_record
from node.crdt.state import CirculationState
from node.trust.identity import NodeIdentity, node_id_for

START_MS = 1_700_000_000_000  # a SimDesk's clock starts here (November 2023)
DUE = START_MS + 21 * 86_400_000  # a due date three weeks later


def identity() -> NodeIdentity:
    key = Ed25519PrivateKey.generate()
    node_id = node_id_for(key.public_key())
    return NodeIdentity(key=key, node_id=node_id, actor_id=bytes.fromhex(node_id))


@dataclass
class SimDesk:
    """A desk in a simulation: its own (possibly skewed) physical clock, HLC and knowledge of the log.
    Like EventLog, it keeps the log in order and advances its clock to each received event's order stamp,
    never more than `max_drift` past its physical clock (None: no bound)."""

    ident: NodeIdentity = field(default_factory=identity)
    now: int = START_MS
    seq: int = 0
    known: dict[str, Event] = field(default_factory=dict)
    knew_at: dict[str, set[str]] = field(default_factory=dict)  # event id -> ids its writer knew
    last_raw: bytes = b""
    max_drift: int | None = None
    clock: HybridClock = field(init=False)
    log: OrderedLog = field(init=False)

    def __post_init__(self) -> None:
        self.clock = HybridClock(lambda: self.now, max_drift_ms=self.max_drift)
        self.log = OrderedLog()

    @property
    def node(self) -> str:
        return self.ident.node_id

    def record(self, desk: str = "desk", cert: str | None = None) -> NodeRecord:
        return make_record(self.node, self.ident.public_key_raw, desk, self.now, self.ident.sign, cert)

    def vector(self) -> dict[str, int]:
        vec: dict[str, int] = {}
        for e in self.known.values():
            if e.node != self.node:
                vec[e.node] = max(vec.get(e.node, 0), e.seq)
        return vec

    def write(self, kind: str, **body: Any) -> Event:
        self.seq += 1
        knew = set(self.known)
        event = make_event(node=self.node, seq=self.seq, hlc=self.clock.tick(), at=self.now, kind=kind,
                           body=body, staff="tester", seen=self.vector(), sign=self.ident.sign,
                           prev=chain_hash(self.last_raw) if self.last_raw else GENESIS)
        self.last_raw = event.encode()
        self.known[event.id] = event
        self.log.add(event)
        self.knew_at[event.id] = knew
        return event

    def receive(self, event: Event) -> None:
        if event.id not in self.known:
            self.known[event.id] = event
            self.log.add(event)
            key = self.log.key_of(event.id)
            self.clock.observe(Hlc(key[0], key[1]))


class SnapshotLogStub:
    """The log as snapshot distribution sees it (node/ports.py SnapshotLog): the state naming a snapshot or
    not, wakers that never fire (the tests step by hand), and what is appended, kept."""

    def __init__(self) -> None:
        self.state = CirculationState()
        self.appended: list[tuple[str, dict[str, Any]]] = []

    def waker(self) -> asyncio.Event:
        return asyncio.Event()

    def drop_waker(self, waker: asyncio.Event) -> None:
        pass

    async def append(self, kind: str, body: dict[str, Any], staff: str, *, at: int | None = None) -> None:
        self.appended.append((kind, body))
