"""Keeps the replicated document small: a seal (node/crdt/epochs.py) once it carries enough events.

Why every desk, and why small: generating an Automerge sync message costs time that grows with the document
once two desks or more write into it (about 0.23 µs per change in the document for each message, measured
with the binding alone), and a desk generates one for every link on every scan. Three desks scanning 20 a
second each saturated at about 6,000 events in the document (p99 105 ms), so the document is kept to
SEAL_EVERY events and a seal is not left to the bridge alone: a cluster with no bridge, or desks cut off from
it, would never seal.

The bridge seals at the threshold. Every other desk is a fallback, at a threshold of its own, higher by its
rank among the cluster's desks (by node id): usually one desk seals and the others follow its seal before
they reach theirs. A rival seal is harmless: every desk picks the same one (epochs.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from node.tasks import reap

if TYPE_CHECKING:  # `circmesh --help` reads SEAL_EVERY: the log's modules stay unloaded for it
    from node.crdt.event import Event

log = logging.getLogger(__name__)

SEAL_EVERY = 1_000  # events in the document before the bridge seals it
FALLBACK = 1.5  # a desk that is not the bridge seals at SEAL_EVERY × (FALLBACK + STEP × its rank)
STEP = 0.25


class SealLog(Protocol):
    """What the sealer reads and writes of the log."""

    @property
    def doc_events(self) -> int: ...

    @property
    def records(self) -> Mapping[str, object]: ...

    def waker(self) -> asyncio.Event:
        """Set whenever the document changes."""

    def drop_waker(self, waker: asyncio.Event) -> None: ...

    async def seal(self, staff: str = "bridge") -> Event: ...


def threshold(seal_every: int, node: str, nodes: list[str], bridge: bool) -> int:
    """Events in the document at which this desk seals (0: never)."""
    if seal_every <= 0:
        return 0
    if bridge:
        return seal_every
    rank = sorted(nodes).index(node) if node in nodes else len(nodes)
    return int(seal_every * (FALLBACK + STEP * rank))


class Sealer:
    def __init__(self, log: SealLog, node: str, seal_every: int = SEAL_EVERY, *, bridge: bool = False) -> None:
        self.log = log
        self.node = node
        self.seal_every = seal_every
        self.bridge = bridge
        self.sealed = 0  # seals this desk wrote
        self._task: asyncio.Task[None] | None = None

    @property
    def threshold(self) -> int:
        return threshold(self.seal_every, self.node, list(self.log.records), self.bridge)

    def _is_due(self) -> bool:
        limit = self.threshold
        return limit > 0 and self.log.doc_events >= limit

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(self.log.waker()), name="sealer")

    async def stop(self) -> None:
        await reap(self._task)

    async def _run(self, waker: asyncio.Event) -> None:
        """A task of its own, woken whenever the document changes (by a scan, or by a peer's sync message,
        even one that brings only events a run brought first): an upload round of 30,000 events (whose
        outcomes fill the document) must not hold the seal back until it ends."""
        try:
            while True:
                if self._is_due():
                    await self._seal()
                await waker.wait()
                waker.clear()
        finally:
            self.log.drop_waker(waker)

    async def _seal(self) -> None:
        try:
            # Shielded: a desk that stops while the seal is being written lets the write finish (its journal is
            # flushed at stop), where a cancel inside it would be taken for a storage failure.
            seal = await asyncio.shield(self.log.seal("bridge" if self.bridge else "desk"))
        except Exception:  # a failed journal: the desk stops taking scans anyway; tried again at the next change
            log.exception("sealing failed; trying again at the next change")
            return
        self.sealed += 1
        log.info("sealed epoch %d at %d events in its document", seal.body["epoch"] - 1, self.threshold)
