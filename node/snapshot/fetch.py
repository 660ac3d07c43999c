"""Every desk gets the snapshot the log names from its peers, chunk by chunk, and switches to it.

The bridge names each new snapshot with a `snapshot` event (refresh.py); the fold keeps the newest
(`state.snapshot`). A desk whose own snapshot is older asks its linked peers for the chunks it lacks, a few
at a time and spread over the peers, so scans and events keep the links. A chunk is kept only if its bytes
hash to its name: one that does not is refused, counted (`bad_chunk`), and asked of another desk, as is one
a peer has not got or does not send in time. Kept chunks are files (atrest.py), so a desk stopped halfway
goes on where it was; a desk started while the ILS is down gets the snapshot from any peer that has it. Once
every chunk is here the rows are replayed, in the index's order, through the bridge's own `Builder`, and the
desk switches to the new file atomically. It also purges a snapshot past the retention (retention.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from node.crdt.refusals import Refusal
from node.crdt.state import SnapshotRef
from node.ports import SnapshotLog
from node.snapshot import store
from node.snapshot.atrest import ChunkFiles, load_or_create_key, shred
from node.snapshot.chunks import ChunkError, Index, names, unpack_index, unpack_rows
from node.snapshot.retention import DAY_MS, RETENTION_DAYS, expired
from node.snapshot.store import DbError, Manifest, SnapshotStore
from node.tasks import reap

log = logging.getLogger(__name__)

WINDOW = 8  # chunks asked and not yet answered, over all peers
ASK_TIMEOUT = 30.0  # seconds a peer has to send a chunk it was asked for; then another is asked
RETRY_S = 2.0  # a look at the log and the links this often, whatever wakes the fetcher


class ChunkLink(Protocol):
    async def ask_chunks(self, names: list[str]) -> bool: ...


class ChunkPeers(Protocol):
    """The desks linked now, by node id (node/discovery/peers.py)."""

    def chunk_links(self) -> Mapping[str, ChunkLink]: ...


class MissingChunk(Exception):
    """A chunk the index names could not be read here (gone, or damaged on disk): fetch it again."""


class Stopped(Exception):
    """The desk stops: the half-built file is removed."""


def install(snapshot: SnapshotStore, chunks: ChunkFiles, index: Index, index_name: str,
            stop: threading.Event | None = None) -> Manifest:
    """Builds the snapshot an index names from its chunks into the store's next file. Blocking; `stop`
    ends it between chunks (a worker thread cannot be cancelled)."""
    builder = store.Builder(snapshot.next_path(), snapshot.key)
    try:
        for entry in index.chunks:
            if stop is not None and stop.is_set():
                raise Stopped
            data = chunks.get(entry.name)
            if data is None:
                raise MissingChunk(entry.name)
            rows = unpack_rows(entry.kind, data)  # of this kind (the decoder's schema), hence the ignores
            if entry.kind == "patrons":
                builder.add_patrons(rows)  # type: ignore[arg-type]
            elif entry.kind == "items":
                builder.add_items(rows)  # type: ignore[arg-type]
            else:
                builder.add_loans(rows)  # type: ignore[arg-type]
        return builder.finish(index.ils_time, index.version, index.source, index_name, index.rules)
    except BaseException:
        builder.abort()
        raise


class Fetcher:
    """Fetches and installs the newest snapshot (see the module); serves this desk's chunks to the links."""

    def __init__(self, eventlog: SnapshotLog, snapshot: SnapshotStore, chunks: ChunkFiles, building: asyncio.Lock,
                 refuse: Callable[[Refusal, str], None], *, window: int = WINDOW, ask_timeout: float = ASK_TIMEOUT,
                 key_dir: Path | None = None,
                 retention_ms: int = int(RETENTION_DAYS * DAY_MS), pending: Callable[[], int] = lambda: 0,
                 now: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> None:
        self.log = eventlog
        self.key_dir = key_dir  # where the snapshot key lives (the data directory): shredded by a purge
        self.retention_ms = retention_ms
        self.pending = pending  # desk events the ILS has not answered: while any, no purge
        self.now = now
        self.purged_at: int | None = None
        self._pending_checked: tuple[int, bool] | None = None
        self.snapshot = snapshot
        self.chunks = chunks
        self.building = building
        self.refuse = refuse
        self.window = window
        self.ask_timeout = ask_timeout
        self.peers: ChunkPeers | None = None  # set once the peer table exists (it needs the fetcher too)
        self.state = "idle"  # idle | fetching | installing | failed
        self.target: SnapshotRef | None = None  # the snapshot being fetched, or the last one fetched
        self.have = self.needed = 0  # its chunks, the index included
        self.refused = 0  # chunks refused: bytes that did not match their name
        self.fetched = 0  # chunks kept from peers since start (a refresh that changed little fetches little)
        self.last_error: str | None = None
        self._held: set[str] | None = None  # chunk names on disk (read once, then kept up to date)
        self._pending: dict[str, tuple[str, float]] = {}  # name -> (node asked, when)
        self._shunned: dict[str, set[str]] = {}  # name -> nodes that had it not, or sent it wrong
        self._arrivals: list[tuple[str, str, bytes | None]] = []
        self._index: tuple[str, Index] | None = None
        self._broken: str | None = None  # an index whose snapshot cannot be read (the bridge's fault): not retried
        self._turn = 0
        self._wake = asyncio.Event()
        self._stopping = threading.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="snapshot-fetch")

    async def stop(self) -> None:
        self._stopping.set()  # an install in a worker thread ends at its next chunk
        await reap(self._task)

    def to_json(self) -> dict[str, Any]:
        target = self.target
        return {"state": self.state, "version": target.version if target else None, "have": self.have,
                "needed": self.needed, "fetched": self.fetched, "refused": self.refused,
                "last_error": self.last_error, "purged_at": self.purged_at}

    # ---- ChunkService: what the links call
    async def read(self, name: str) -> bytes | None:
        return await asyncio.to_thread(self.chunks.get, name)

    def received(self, node: str, name: str, data: bytes | None) -> None:
        self._arrivals.append((node, name, data))
        self._wake.set()

    # ---- the loop
    async def _run(self) -> None:
        waker = self.log.waker()
        try:
            while True:
                try:
                    await self._step()
                except (OSError, DbError) as e:  # a full or failing disk: said in /status, tried again
                    self._failed(f"the snapshot could not be written: {e}")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RETRY_S):
                        waits = [asyncio.create_task(self._wake.wait()), asyncio.create_task(waker.wait())]
                        try:
                            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            for w in waits:
                                w.cancel()
                self._wake.clear()
                waker.clear()
        finally:
            self.log.drop_waker(waker)

    def _wanted(self) -> SnapshotRef | None:
        """The snapshot to fetch: the log's newest, unless this desk holds it or a newer one."""
        target, current = self.log.state.snapshot, self.snapshot.manifest
        if target is None or (current is not None and (current.index == target.index or (
                current.version, current.ils_time) > (target.version, target.ils_time))):
            return None
        if expired(target.ils_time, self.now(), self.retention_ms) and self._nothing_pending():
            return None  # too old to keep, and no outage left to settle: not fetched
        return target

    async def _step(self) -> None:
        if self._held is None:
            self._held = await asyncio.to_thread(self.chunks.names)
        await self._take_arrivals()
        held = self.snapshot.manifest
        if held is not None and expired(held.ils_time, self.now(), self.retention_ms) and self._nothing_pending():
            if self._wanted() is None:  # (a newer snapshot being fetched replaces it anyway: its chunks stay)
                await self._purge()
        target = self._wanted()
        if target is None:  # held already: the last one fetched stays in /status
            self.state = "idle"
            self._pending.clear()
            return
        if self.target != target:  # a new snapshot to fetch: what is asked and held is looked at afresh
            self.target, self._index, self._shunned, self._pending = target, None, {}, {}
            self._held = await asyncio.to_thread(self.chunks.names)
        if target.index == self._broken:
            self.state = "failed"
            return
        self.state = "fetching"
        index = await self._read_index(target)
        if index is None:
            if target.index != self._broken:
                await self._ask([target.index])
            return
        missing = [n for n in names(index) if n not in self._held]
        self.needed, self.have = len(index.chunks) + 1, len(index.chunks) + 1 - len(missing)  # and the index
        if missing:
            await self._ask(missing)
            return
        await self._install(target, index)

    async def _read_index(self, target: SnapshotRef) -> Index | None:
        if self._index is not None and self._index[0] == target.index:
            return self._index[1]
        assert self._held is not None
        if target.index not in self._held:
            return None
        data = await asyncio.to_thread(self.chunks.get, target.index)
        if data is None:
            self._held.discard(target.index)
            return None
        try:
            index = await asyncio.to_thread(unpack_index, data)
        except ChunkError as e:  # the bridge's own bytes (they hash to the name the log carries): nothing to fetch
            self._broken = target.index
            self._failed(f"snapshot {target.version}'s index cannot be read: {e}")
            return None
        self._index = (target.index, index)
        return index

    async def _take_arrivals(self) -> None:
        arrivals, self._arrivals = self._arrivals, []
        assert self._held is not None
        for node, name, data in arrivals:
            if self._pending.get(name, ("", 0.0))[0] == node:
                del self._pending[name]
            if name in self._held:
                continue
            if data is None:
                self._shunned.setdefault(name, set()).add(node)
                continue
            try:
                await asyncio.to_thread(self.chunks.put, name, data)
            except ChunkError:
                self.refused += 1
                self._shunned.setdefault(name, set()).add(node)
                self.refuse(Refusal.BAD_CHUNK, f"desk {node[:12]}: snapshot chunk {name[:12]} has bytes that do "
                                               "not match its name (asked of another desk)")
                continue
            self._held.add(name)
            self.fetched += 1

    async def _ask(self, missing: list[str]) -> None:
        """Asks for what is missing and not asked yet, up to the window, each of a peer that has not failed
        it, taking turns over the peers."""
        now = time.monotonic()
        for name, (node, at) in list(self._pending.items()):
            if now - at > self.ask_timeout:
                del self._pending[name]
                self._shunned.setdefault(name, set()).add(node)
        links = self.peers.chunk_links() if self.peers is not None else {}
        order = sorted(links)
        plan: dict[str, list[str]] = {}
        for name in missing:
            if len(self._pending) >= self.window or not order:
                break
            if name in self._pending:
                continue
            candidates = [n for n in order if n not in self._shunned.get(name, ())]
            if not candidates:  # every linked desk failed it: all may be asked again next round
                self._shunned.pop(name, None)
                continue
            node = candidates[self._turn % len(candidates)]
            self._turn += 1
            plan.setdefault(node, []).append(name)
            self._pending[name] = (node, now)
        for node, asked in plan.items():
            try:
                sent = await links[node].ask_chunks(asked)
            except (ConnectionError, OSError, RuntimeError) as e:  # the link is going: another is asked
                log.info("snapshot fetch: asking %s failed: %s", node[:12], e)
                sent = False
            if not sent:
                for name in asked:
                    self._pending.pop(name, None)

    async def _install(self, target: SnapshotRef, index: Index) -> None:
        self.state = "installing"
        async with self.building:
            if self._wanted() != target:  # a refresh here got there first
                return
            try:
                manifest = await asyncio.to_thread(install, self.snapshot, self.chunks, index, target.index,
                                                   self._stopping)
            except MissingChunk as e:  # damaged on disk since: fetched again
                assert self._held is not None
                self._held.discard(str(e))
                self.state = "fetching"
                return
            except ChunkError as e:
                self._broken = target.index
                self._failed(f"snapshot {target.version} holds a chunk that cannot be read: {e}")
                return
            self.snapshot.switch(self.snapshot.next_path())
            keep = {*names(index), target.index}
            await asyncio.to_thread(self.chunks.keep, keep)  # under the lock: a refresh's new chunks are safe
            self._held = keep
        self.state, self.last_error = "idle", None
        log.info("snapshot %d installed from peers: %d patrons, %d items", manifest.version, manifest.patrons,
                 manifest.items)

    def _nothing_pending(self) -> bool:
        """No upload left (asked at most once a minute: it is a pass over the open work in memory)."""
        now = self.now()
        if self._pending_checked is None or now - self._pending_checked[0] >= 60_000:
            self._pending_checked = (now, self.pending() == 0)
        return self._pending_checked[1]

    async def _purge(self) -> None:
        """Deletes the snapshot, its chunks and its key (retention.py); a new key seals what comes later."""
        async with self.building:
            manifest = self.snapshot.manifest
            if manifest is None or not expired(manifest.ils_time, self.now(), self.retention_ms):
                return  # a refresh got there first
            key = self.snapshot.key
            if self.key_dir is not None:
                await asyncio.to_thread(shred, self.key_dir)
                key = await asyncio.to_thread(load_or_create_key, self.key_dir)
            self.snapshot.forget(key)
            self.chunks.rekey(key)
            await asyncio.to_thread(self.chunks.keep, set())
            self._held, self._index = set(), None
            self.purged_at = self.now()
        log.info("snapshot %d purged: older than the retention, and nothing left to upload", manifest.version)

    def _failed(self, why: str) -> None:
        if self.last_error != why:
            log.warning("snapshot fetch: %s", why)
        self.state, self.last_error = "failed", why
