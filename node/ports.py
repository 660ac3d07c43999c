"""The seams between a desk's parts: what each part reads or does of another, as `typing.Protocol`s.

`EventLog` (node/eventlog.py) and `PeerTable` (node/discovery/peers.py) satisfy these structurally: nothing
here names them, and no consumer imports them to read them. `DeskNode` (node/desk.py) hands each part what
it needs, and mypy checks at that point that the part fits the seam. Seams used by a single consumer live
next to it: the bridge's `UploadLog` (node/ilsbridge/bridge.py), the peer table's `LinkSource`
(node/discovery/peers.py), what `/status` reads (node/status.py), revocation's source (node/revocation.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from node.crdt.event import Event
from node.crdt.order import OrderKey
from node.crdt.records import NodeRecord
from node.crdt.state import CirculationState
from node.discovery.link_machine import LinkInfo
from node.eventlog import Arrival


class CirculationView(Protocol):
    """What the desk's views read of the log: the folded state, events by id, their causal order, and the
    name of the desk each node is."""

    @property
    def state(self) -> CirculationState: ...

    @property
    def events(self) -> Mapping[str, Event]: ...

    def ordered(self) -> list[Event]: ...

    def desk_of(self, node: str) -> str: ...


class EventWriter(Protocol):
    """Writing to the log: one event, or a batch that is durable whole or not at all."""

    async def append(self, kind: str, body: dict[str, Any], staff: str, *, at: int | None = None) -> Event: ...

    async def append_many(self, entries: list[tuple[str, dict[str, Any], int | None]], staff: str) -> list[Event]: ...


class OrderKeys(Protocol):
    def key_of(self, event_id: str) -> OrderKey: ...


class DeskLog(CirculationView, EventWriter, Protocol):
    """What the desk API (node/api/) reads and writes of the log, beyond its views: what each node has
    written (`vector`), the node records (desk names, certificates), and arrivals in local order (the
    `/events` cursor), sorted by where each event sits in the causal order."""

    @property
    def vector(self) -> Mapping[str, int]: ...

    @property
    def records(self) -> Mapping[str, NodeRecord]: ...

    @property
    def arrivals(self) -> Sequence[Arrival]: ...

    @property
    def ordered_log(self) -> OrderKeys: ...


class LinkedPeers(Protocol):
    """Which peers this desk is linked to now, as their links know them (the clock measurements, the
    desks screen)."""

    def linked(self) -> list[LinkInfo]: ...
