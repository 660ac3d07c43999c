"""The bridge pulls a snapshot from the ILS: every patron and item, a page at a time, then switches to it.

Pulled while the ILS is reachable: at the bridge's start, every `interval` after the last success, and when
staff ask (`POST /api/v1/snapshot/refresh`, `circmesh snapshot refresh`). A page the ILS fails to give
stops this refresh (the desk keeps the snapshot it had) and the next try comes after a back-off; rows that do
not fit the schema are left out and counted. The rows are written to a new file in a worker thread, so
scans go on while a million patrons are written, and cut into chunks as they come (chunks.py); once the desk
has switched, a `snapshot` event names the new index, and every other desk fetches the chunks (fetch.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from node.ilsbridge.adapters.base import ID_FIELDS, IlsUnavailable, SnapshotKind, SnapshotUnsupported
from node.ports import SnapshotLog
from node.snapshot import store
from node.snapshot.atrest import ChunkFiles
from node.snapshot.chunks import CHUNK_ROWS, Cutter, Kind
from node.snapshot.loanrules import LoanRules, rules_from_koha
from node.snapshot.rows import item_from_koha, loan_from_koha, patron_from_koha
from node.snapshot.store import DbError, Manifest, SnapshotStore
from node.tasks import reap

log = logging.getLogger(__name__)

PER_PAGE = 1_000
CHUNK_KINDS: dict[SnapshotKind, Kind] = {"patrons": "patrons", "items": "items", "checkouts": "loans"}
INTERVAL_S = 6 * 3600.0
RETRY_S = 60.0


class SnapshotSource(Protocol):
    """What the ILS adapter gives: Koha-shaped rows whose id is above a bound, in id order (adapters/rest.py)."""

    async def fetch_after(self, kind: SnapshotKind, after: int, per_page: int) -> list[dict[str, Any]]: ...

    async def fetch_rules(self) -> tuple[Any, Any]: ...


class Refresher:
    def __init__(self, source: SnapshotSource, snapshot: SnapshotStore, chunks: ChunkFiles, log: SnapshotLog,
                 building: asyncio.Lock, *, name: str = "ILS", interval: float = INTERVAL_S,
                 per_page: int = PER_PAGE, rows_per_chunk: int = CHUNK_ROWS, require_patrons: bool = False) -> None:
        self.source = source
        self.snapshot = snapshot
        self.chunks = chunks
        self.log = log
        self.building = building  # one new snapshot file at a time: a refresh here, or an install (fetch.py)
        self.rows_per_chunk = rows_per_chunk
        # From files (importer.py): a file that gives no patron, or leaves most lines out, is not switched to
        # (a wrong export or encoding would otherwise tell every desk that nobody is known).
        self.require_patrons = require_patrons
        self.name = name
        self.interval = interval
        self.per_page = per_page
        self.state = "idle"  # idle | waiting | pulling | writing | failed
        self.progress: dict[str, int] = {}
        self.left_out: dict[str, int] = {}
        self.last_error: str | None = None
        self.last_success: int | None = None  # ms
        self._asked = asyncio.Event()
        self._unpublished = False  # switched to, and not yet named in the log
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
        wait = self.interval if await self._publish() else RETRY_S  # one not named before the desk stopped
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._asked.wait()
            self._asked.clear()
            manifest = self.snapshot.manifest
            if self._unpublished and manifest is not None and manifest.ils_time <= time.time_ns() // 1_000_000:
                wait = self.interval if await self._publish() else RETRY_S  # named now, not pulled again
                continue
            self._unpublished = False  # (the clock went back behind it: a new refresh, named as it ends)
            wait = self.interval if await self.refresh() else RETRY_S

    async def refresh(self) -> bool:
        """One whole refresh, streamed page by page into a new file; True when the desk switched to it and
        the log names it."""
        self.state = "waiting"  # for a fetch or another build to finish with the snapshot file
        async with self.building:
            switched = await self._refresh()
        return switched and await self._publish()

    async def _refresh(self) -> bool:
        began = time.time_ns() // 1_000_000
        self.progress = {"patrons": 0, "items": 0, "checkouts": 0}
        self.left_out, self.state = dict.fromkeys(self.progress, 0), "pulling"
        latest = self.log.state.snapshot
        version = max(self.snapshot.manifest.version if self.snapshot.manifest else 0,
                      latest.version if latest else 0) + 1
        try:
            builder = await asyncio.to_thread(store.Builder, self.snapshot.next_path(), self.snapshot.key)
        except (OSError, DbError) as e:
            return self._failed(f"the snapshot could not be written: {e}")
        cutter = Cutter(self.rows_per_chunk)
        try:
            await self._pull("patrons", patron_from_koha, builder.add_patrons, cutter)
            await self._pull("items", item_from_koha, builder.add_items, cutter)
            await self._pull("checkouts", loan_from_koha, builder.add_loans, cutter)
            rules = await self._rules()
            self.state = "writing"
            patrons, items, loans = await asyncio.to_thread(builder.counts)
            if self.require_patrons and (patrons == 0 or self.left_out["patrons"] > self.progress["patrons"] // 2):
                raise SnapshotUnsupported(
                    f"{self.left_out['patrons']} of {self.progress['patrons']} patron lines could not be read: "
                    "is it a CSV with Koha's column names (cardnumber, surname, ...), in UTF-8? Nothing was changed")
            index, data = await asyncio.to_thread(cutter.finish, version, began, patrons, items, self.name, loans,
                                                  rules)
            await asyncio.to_thread(self._keep, [*cutter.take(), (index, data)])
            manifest = await asyncio.to_thread(builder.finish, began, version, self.name, index, rules)
            self.snapshot.switch(self.snapshot.next_path())
            await asyncio.to_thread(self.chunks.keep, {*(e.name for e in cutter.entries), index})
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

    async def _rules(self) -> LoanRules | None:
        """The loan rules and calendar; None (due dates from --loan-days) when the ILS will not give them,
        which does not stop the refresh: patrons and items matter more."""
        try:
            return rules_from_koha(*await self.source.fetch_rules())
        except (IlsUnavailable, SnapshotUnsupported) as e:
            log.warning("snapshot refresh: no loan rules from the ILS (%s); due dates use --loan-days", e)
            self.left_out["rules"] = 1
            return None

    def _write(self, kind: SnapshotKind, rows: list[Any], add: Callable[[list[Any]], None], cutter: Cutter) -> None:
        """A page into the new file and its chunks (blocking: SQLite, zlib, files)."""
        add(rows)
        cutter.add(CHUNK_KINDS[kind], rows)
        self._keep(cutter.take())

    def _keep(self, cut: list[tuple[str, bytes]]) -> None:
        for name, data in cut:
            self.chunks.put(name, data)

    async def _publish(self) -> bool:
        """Names this desk's snapshot in the log, unless the log names it or a newer one already; False
        (said in /status, tried again after RETRY_S) when the log cannot take the event now."""
        manifest = self.snapshot.manifest
        latest = self.log.state.snapshot
        if self._unpublished:
            self.state, self.last_error, self._unpublished = "idle", None, False
        if manifest is None or not manifest.index or (latest is not None and (latest.version, latest.ils_time) >= (
                manifest.version, manifest.ils_time)):
            return True
        try:
            await self.log.append("snapshot", snapshot_body(manifest), "bridge")
        except Exception as e:  # a failing journal, or a clock set back behind the refresh: the desks wait
            self._unpublished = True
            self._failed(f"snapshot {manifest.version} could not be named in the log: {type(e).__name__}: {e}")
            return False
        return True

    async def _pull(self, kind: SnapshotKind, read: Callable[[Any], Any], add: Callable[[list[Any]], None],
                    cutter: Cutter) -> None:
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
            await asyncio.to_thread(self._write, kind, rows, add, cutter)
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
    if isinstance(e, (OSError, DbError)):
        return f"the snapshot could not be written: {e}"
    log.exception("snapshot refresh failed")  # anything else the ILS's data led to
    return f"the snapshot could not be made: {type(e).__name__}: {e}"


def snapshot_body(manifest: Manifest) -> dict[str, Any]:
    """The `snapshot` event's body (node/crdt/bodies.py SnapshotBody) for a snapshot this desk holds."""
    return {"index": manifest.index, "version": manifest.version, "ils_time": manifest.ils_time,
            "patrons": manifest.patrons, "items": manifest.items, "source": manifest.source[:200]}
