"""An admin gives a desk the patrons (and items) as files: the desk builds a snapshot from them and names it in
the log, and every desk fetches it as it would a bridge's refresh (fetch.py).

For a library whose ILS has no REST API (SIP2 only), or a desk that must work before any bridge has read the
ILS. The files arrive through the desk's API (`POST /api/v1/snapshot/import`, `circmesh snapshot import`),
are kept in the data directory only while the snapshot is built (mode 0600), and deleted after, whatever
happens: they are personal data in clear.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from node.ports import SnapshotLog
from node.snapshot.atrest import ChunkFiles
from node.snapshot.csvfile import CsvSource
from node.snapshot.refresh import Refresher
from node.snapshot.store import SnapshotStore
from node.tasks import reap

log = logging.getLogger(__name__)


class SnapshotImport:
    def __init__(self, snapshot: SnapshotStore, chunks: ChunkFiles, eventlog: SnapshotLog, building: asyncio.Lock,
                 directory: Path) -> None:
        self.snapshot, self.chunks, self.log, self.building = snapshot, chunks, eventlog, building
        self.directory = directory  # where uploaded files wait for the build
        self._refresher: Refresher | None = None
        self._task: asyncio.Task[None] | None = None
        self._reserved = False  # files are being received for a build
        for path in directory.glob("*") if directory.exists() else ():
            path.unlink(missing_ok=True)  # left by a desk that stopped mid-import: personal data in clear

    def busy(self) -> bool:
        return self._reserved or (self._task is not None and not self._task.done())

    def reserve(self) -> bool:
        """Claims the importer before a request's files are received; False if it is taken."""
        if self.busy():
            return False
        self._reserved = True
        return True

    def release(self) -> None:
        self._reserved = False

    def start(self, patrons: Path, items: Path | None, name: str) -> None:
        """Builds a snapshot from the files in the background (the caller reserved the importer)."""
        self._reserved = False
        self._refresher = Refresher(CsvSource(patrons, items), self.snapshot, self.chunks, self.log, self.building,
                                    name=name, require_patrons=True)
        self._task = asyncio.create_task(self._run(self._refresher, [patrons, *([items] if items else [])]),
                                         name="snapshot-import")

    async def _run(self, refresher: Refresher, files: list[Path]) -> None:
        try:
            await refresher.refresh()
        finally:
            for path in files:
                path.unlink(missing_ok=True)

    def to_json(self) -> dict[str, Any] | None:
        return self._refresher.to_json() if self._refresher is not None else None

    async def stop(self) -> None:
        await reap(self._task)
        for path in self.directory.glob("*.csv") if self.directory.exists() else ():
            path.unlink(missing_ok=True)
