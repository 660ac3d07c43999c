"""The gate between this desk's commits and what it sends: no sync message leaves while a local change is
being written, and nothing more is acknowledged or sent once the journal could not be written.

A local event is put in the document before its commit (the change bytes go to disk with it). Were a sync
message generated meanwhile, a peer could hold an event this desk forgets in a crash, and the desk would
reuse its sequence number. So every local write holds the gate (`enter` .. `leave`), and a link's write round
waits for `durable()` first. A storage failure closes the gate for good: the desk stops, its peers keep
everything it acknowledged.
"""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


class StorageFailure(RuntimeError):
    """The journal could not be written: nothing more may be acknowledged or sent."""


class CommitGate:
    def __init__(self) -> None:
        self.failed: str | None = None  # why the journal could not be written, once it could not
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        """A local change is being put and written: sync messages wait."""
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    @property
    def idle(self) -> bool:
        """No local change is being written: sync may go on."""
        return self._idle.is_set()

    async def durable(self) -> None:
        """Waits until no local change is waiting for its fsync; never returns after a storage failure."""
        await self._idle.wait()
        if self.failed:
            await asyncio.Event().wait()

    def check_healthy(self) -> None:
        if self.failed:
            raise StorageFailure(self.failed)

    def fail(self, cause: BaseException | str) -> StorageFailure:
        """The journal could not be written. Sending on could let peers keep an event this desk would forget,
        so the desk stops: no more scans, no more sync."""
        self.failed = f"storage failure: {cause}"
        log.error("%s; this desk stops taking scans", self.failed)
        return StorageFailure(self.failed)
