"""The seams between a desk's parts: what each part reads or does of another, as `typing.Protocol`s.

`EventLog` (node/eventlog.py) and `PeerTable` (node/discovery/peers.py) satisfy these structurally: nothing
here names them, and no consumer imports them to read them. `DeskNode` (node/desk.py) hands each part what
it needs, and mypy checks at that point that the part fits the seam. Seams used by a single consumer live
next to it: the bridge's `UploadLog` (node/ilsbridge/bridge.py), the peer table's `LinkSource`
(node/discovery/peers.py), what `/status` reads (node/status.py), revocation's source (node/revocation.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from node.crdt.event import Event
from node.crdt.order import OrderKey
from node.crdt.records import NodeRecord
from node.crdt.state import CirculationState, Outcome
from node.discovery.link_machine import LinkInfo
from node.snapshot.loanrules import LoanRules
from node.snapshot.rows import IlsLoan, Item, Patron
from node.snapshot.store import Manifest


class CirculationView(Protocol):
    """What the desk's views read of the log: the folded state, events by id (from memory or the journal),
    the events in memory in causal order (all of them until the fold's base moves: then those after it and
    the open work before it), and the name of the desk each node is."""

    @property
    def state(self) -> CirculationState: ...

    def event(self, event_id: str) -> Event | None: ...

    def answered(self, event_id: str) -> bool: ...

    def outcome(self, event_id: str) -> Outcome | None: ...

    def ordered(self) -> list[Event]: ...

    def desk_of(self, node: str) -> str: ...


class EventWriter(Protocol):
    """Writing to the log: one event, or a batch that is durable whole or not at all."""

    async def append(self, kind: str, body: dict[str, Any], staff: str, *, at: int | None = None) -> Event: ...

    async def append_many(self, entries: list[tuple[str, dict[str, Any], int | None]], staff: str) -> list[Event]: ...


class DeskLog(CirculationView, EventWriter, Protocol):
    """What the desk API (node/api/) reads and writes of the log, beyond its views: what each node has
    written (`vector`), the node records (desk names, certificates), pages of events in local arrival order
    (the `/events` cursor) with where each sits in the causal order, every event in order (exports), and how
    many events the desk holds."""

    @property
    def vector(self) -> Mapping[str, int]: ...

    @property
    def records(self) -> Mapping[str, NodeRecord]: ...

    @property
    def event_count(self) -> int: ...

    def page(self, after: int, limit: int) -> list[tuple[int, Event, OrderKey]]: ...

    def in_order(self) -> Iterator[Event]: ...


class LinkedPeers(Protocol):
    """Which peers this desk is linked to now, as their links know them (the clock measurements, the
    desks screen)."""

    def linked(self) -> list[LinkInfo]: ...


class SnapshotView(Protocol):
    """What the desk reads of its patron and item snapshot (node/snapshot/store.py): None before the first."""

    @property
    def manifest(self) -> Manifest | None: ...

    @property
    def rules(self) -> LoanRules | None: ...

    def patron(self, barcode: str) -> Patron | None: ...

    def item(self, barcode: str) -> Item | None: ...

    def loan(self, item: str) -> IlsLoan | None: ...

    def loans_of(self, patron: str) -> list[IlsLoan]: ...

    def search(self, text: str, limit: int = 50) -> list[Patron]: ...


class SnapshotLog(Protocol):
    """What snapshot distribution needs of the log (node/snapshot): the newest snapshot it names
    (`state.snapshot`), a way for the bridge to name a new one, and a wake-up when the log changes."""

    @property
    def state(self) -> CirculationState: ...

    async def append(self, kind: str, body: dict[str, Any], staff: str, *, at: int | None = None) -> Event: ...

    def waker(self) -> asyncio.Event: ...

    def drop_waker(self, waker: asyncio.Event) -> None: ...
