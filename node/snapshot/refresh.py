"""The bridge pulls a snapshot from the ILS: every patron and item, a page at a time, then switches to it.

Pulled while the ILS is reachable: at the bridge's start, every `interval` after the last success, and when
staff ask (`POST /api/v1/snapshot/refresh`, `circmesh snapshot refresh`). A page the ILS fails to give
stops this refresh (the desk keeps the snapshot it had) and the next try comes after a back-off; rows that do
not fit the schema are left out and counted. The rows are written to a new file in a worker thread, so
scans go on while a million patrons are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Protocol

from node.ilsbridge.adapters.base import ID_FIELDS, IlsUnavailable, SnapshotKind, SnapshotUnsupported
from node.snapshot import store
from node.snapshot.rows import item_from_koha, patron_from_koha
from node.snapshot.store import SnapshotStore
from node.tasks import reap

log = logging.getLogger(__name__)

PER_PAGE = 1_000
INTERVAL_S = 6 * 3600.0
RETRY_S = 60.0


class SnapshotSource(Protocol):
    """What the ILS adapter gives: Koha-shaped rows whose id is above a bound, in id order (adapters/rest.py)."""

    async def fetch_after(self, kind: SnapshotKind, after: int, per_page: int) -> list[dict[str, Any]]: ...


class Refresher:
    def __init__(self, source: SnapshotSource, snapshot: SnapshotStore, *, name: str = "ILS",
                 interval: float = INTERVAL_S, per_page: int = PER_PAGE) -> None:
        self.source = source
        self.snapshot = snapshot
        self.name = name
        self.interval = interval
        self.per_page = per_page
        self.state = "idle"  # idle | pulling | writing | failed
        self.progress: dict[str, int] = {}
        self.left_out: dict[str, int] = {}
        self.last_error: str | None = None
        self.last_success: int | None = None  # ms
        self._asked = asyncio.Event()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._asked.set()  # a first refresh at start
        self._task = asyncio.create_task(self._run(), name="snapshot-refresh")

    async def stop(self) -> None:
        await reap(self._task)

    def request(self) -> None:
        """Staff asked for a refresh now."""
        self._asked.set()

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "progress": dict(self.progress), "left_out": dict(self.left_out),
                "last_error": self.last_error, "last_success": self.last_success}

    async def _run(self) -> None:
        wait = self.interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._asked.wait()
            self._asked.clear()
            wait = self.interval if await self.refresh() else RETRY_S

    async def refresh(self) -> bool:
        """One whole refresh, streamed page by page into a new file; True when the desk switched to it."""
        began = time.time_ns() // 1_000_000
        self.progress, self.left_out, self.state = {"patrons": 0, "items": 0}, {"patrons": 0, "items": 0}, "pulling"
        version = (self.snapshot.manifest.version if self.snapshot.manifest else 0) + 1
        try:
            builder = await asyncio.to_thread(store.Builder, self.snapshot.next_path())
        except (OSError, sqlite3.Error) as e:
            return self._failed(f"the snapshot could not be written: {e}")
        try:
            await self._pull("patrons", patron_from_koha, builder.add_patrons)
            await self._pull("items", item_from_koha, builder.add_items)
            self.state = "writing"
            manifest = await asyncio.to_thread(builder.finish, began, version, self.name)
            self.snapshot.switch(self.snapshot.next_path())
        except asyncio.CancelledError:  # the desk stops: no half-built file left behind
            builder.abort()  # waits for the page being written (Builder's lock)
            raise
        except Exception as e:  # whatever it was, this refresh fails and says why; the next one runs
            why = _why(e)
            await asyncio.to_thread(builder.abort)
            return self._failed(why)
        self.state, self.last_error, self.last_success = "idle", None, time.time_ns() // 1_000_000
        log.info("snapshot %d: %d patrons, %d items (%s left out)", manifest.version, manifest.patrons,
                 manifest.items, self.left_out)
        return True

    async def _pull(self, kind: SnapshotKind, read: Callable[[Any], Any], add: Callable[[list[Any]], None]) -> None:
        """Every row of `kind`, a page at a time after the last id seen (keyset paging: each page costs the
        ILS the same), each page written as it comes (memory holds one page). Only an empty page ends it: an
        ILS may give fewer rows a page than asked (Koha caps `_per_page`)."""
        after = 0
        while True:
            got = await self.source.fetch_after(kind, after, self.per_page)
            if not got:
                return
            rows = [row for row in map(read, got) if row is not None]
            self.left_out[kind] += len(got) - len(rows)
            await asyncio.to_thread(add, rows)
            self.progress[kind] += len(got)
            last = got[-1].get(ID_FIELDS[kind]) if isinstance(got[-1], dict) else None
            if not isinstance(last, int) or isinstance(last, bool) or last <= after:
                raise IlsUnavailable(f"the ILS's {kind} page ends without a greater {ID_FIELDS[kind]} ({last!r})")
            after = last

    def _failed(self, why: str) -> bool:
        self.state, self.last_error = "failed", why
        log.warning("snapshot refresh stopped: %s", why)
        return False


def _why(e: Exception) -> str:
    """A failed refresh's reason, for /status (called in the handler: an unexpected one is logged whole)."""
    if isinstance(e, IlsUnavailable):
        return f"the ILS did not answer: {e}"
    if isinstance(e, SnapshotUnsupported):
        return str(e)
    if isinstance(e, (OSError, sqlite3.Error)):
        return f"the snapshot could not be written: {e}"
    log.exception("snapshot refresh failed")  # anything else the ILS's data led to
    return f"the snapshot could not be made: {type(e).__name__}: {e}"
