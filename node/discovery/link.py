"""One peer link: the thin loop around `LinkMachine` (link_machine.py), which makes every decision.

The loop only moves bytes and outcomes. The reader hands each WebSocket message to `machine.receive` and
does what the actions say: send, apply a sync message or a journal run through the log (which verifies it)
and report the outcome, ask the catch-up plan what to want, close. The writer task runs the write rounds
the machine asks for (sync messages for the current epoch's document, once the log is durable, then a
tip), and sleeps until the document changes or the machine's next deadline. The server task answers the
peer's wants from the journal, apart from the reader, so that two desks serving each other large runs
never wait on each other's full socket buffers. Anything a peer sends that does not parse or verify closes
the link; the node goes on. Snapshot chunks are asked for by the desk's fetcher (`ask_chunks`), served by the
server task from `ChunkService`, and handed to it as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
from aiohttp import WSMsgType

from node.crdt.document import SyncState
from node.discovery import frames
from node.discovery.catchup import WINDOW
from node.discovery.link_machine import (
    Action,
    ApplyChunk,
    ApplyRun,
    ApplySync,
    CatchUp,
    Close,
    GenerateSync,
    Linked,
    LinkInfo,
    LinkMachine,
    Now,
    Send,
    ServeChunks,
    ServeRuns,
)
from node.eventlog import EventLog, RefusedSync, wall_ms
from node.tasks import reap

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 2.0  # seconds a close waits for the peer's answer: a stopped or half-gone peer never answers


class LinkClosed(Exception):
    pass


class WebSocket(Protocol):
    """What a link needs of its socket: aiohttp's server (`/peer`) and client (dialled) WebSockets."""

    async def send_bytes(self, data: bytes) -> None: ...

    async def receive(self) -> aiohttp.WSMessage: ...

    def exception(self) -> BaseException | None: ...

    async def close(self) -> bool: ...


class ChunkService(Protocol):
    """Snapshot chunks, for the links (node/snapshot/fetch.py): those this desk keeps, to serve, and those
    its peers send, asked for by the fetcher, to judge and keep."""

    async def read(self, name: str) -> bytes | None: ...

    def received(self, node: str, name: str, data: bytes | None) -> None: ...


class NoChunks:
    """A link without snapshots (tests of the log alone): it has no chunk and asks for none."""

    async def read(self, name: str) -> bytes | None:
        return None

    def received(self, node: str, name: str, data: bytes | None) -> None:
        pass


def now() -> Now:
    return Now(time.monotonic(), wall_ms())


class PeerLink:
    def __init__(self, eventlog: EventLog, ws: WebSocket, *, outbound: bool, address: str,
                 bridge_state: Callable[[], dict[str, Any] | None] = lambda: None,
                 chunks: ChunkService | None = None) -> None:
        self.log = eventlog
        self.chunks: ChunkService = chunks if chunks is not None else NoChunks()
        self.bridge_state = bridge_state
        self.ws = ws
        self.outbound = outbound
        self.address = address
        self.info: LinkInfo | None = None
        self.machine = LinkMachine(eventlog.identity.node_id, eventlog.desk, address=address, outbound=outbound)
        self._sync_state: SyncState = eventlog.new_sync_state()
        self._sync_epoch = eventlog.epoch.seal  # the document `_sync_state` is a conversation about
        self._round_due = False
        self._closing = False
        self._wants: asyncio.Queue[ServeRuns | ServeChunks] = asyncio.Queue()

    async def handshake(self, proven: str | None = None) -> LinkInfo:
        """Exchanges hellos. `proven` is the node id the peer's certificate proves: the hello must agree."""
        self.machine.proven = proven
        self._round_due = await self._perform(
            self.machine.hello(self.log.epoch.tag, dict(self.log.vector), now()))
        while self.info is None:  # bounded: the machine closes the link at its hello deadline
            deadline = self.machine.deadline()
            try:
                async with asyncio.timeout(None if deadline is None else max(0.0, deadline - time.monotonic())):
                    data = await self._receive()
            except TimeoutError:
                await self._perform(self.machine.timer(now()))
                continue
            self._round_due |= await self._perform(self.machine.receive(data, now()))
        return self.info

    async def run(self) -> None:
        """Runs until the peer goes away or misbehaves."""
        assert self.info is not None
        waker = self.log.waker()
        if self._round_due:
            waker.set()
        self.log.link_up()
        writer = asyncio.create_task(self._write(waker))
        server = asyncio.create_task(self._serve())
        try:
            while True:
                data = await self._receive()
                if await self._perform(self.machine.receive(data, now())):
                    waker.set()  # the writer answers
                if writer.done() or server.done():
                    break
        finally:
            self.log.link_down()
            self.log.drop_waker(waker)
            # not suppress(CancelledError): a stop must get through
            await reap(writer, server, within=CLOSE_TIMEOUT)
            await self.close()

    async def _write(self, waker: asyncio.Event) -> None:
        while (deadline := self.machine.deadline()) is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await waker.wait()
            if waker.is_set():
                waker.clear()
                due = await self._perform(self.machine.local_change())
            else:
                due = await self._perform(self.machine.timer(now()))
            if due:
                await self._write_round()

    async def _write_round(self) -> None:
        """Sync messages leave only once every local change is on disk (EventLog.durable); then the tip.
        Only between desks in the same epoch: each epoch's document is a new conversation."""
        await self.log.durable()
        epoch = self.log.epoch
        assert self.info is not None
        if self.info.peer_epoch == epoch.tag:
            if self._sync_epoch != epoch.seal:
                self._sync_state, self._sync_epoch = self.log.new_sync_state(), epoch.seal
            while True:
                await self.log.durable()  # again: a scan may have been put while the last message was sent
                if self.log.epoch.seal != epoch.seal:
                    break  # the document moved on while this round was sending
                message = self.log.generate_sync(self._sync_state)
                if message is None:
                    break
                await self._perform(self.machine.sync_message(message, epoch.seal))
        await self._perform(self.machine.tip(dict(self.log.vector), self.bridge_state(), now(), self.log.epoch.tag))

    async def ask_chunks(self, names: list[str]) -> bool:
        """Asks the peer for snapshot chunks; False if the link cannot (closed, or too many asked already)."""
        actions = self.machine.ask_chunks(names)
        if not actions:
            return False
        await self._perform(actions)
        return True

    async def _serve(self) -> None:
        """Answers the peer's wants in order: journal ranges a run (about RUN_BYTES) at a time, the last of
        each `done`; snapshot chunks one frame each."""
        while True:
            wanted = await self._wants.get()
            if isinstance(wanted, ServeChunks):
                for name in wanted.names:
                    await self._perform(self.machine.chunk_frame(name, await self.chunks.read(name)))
                self.machine.served()
                continue
            for node, first, wanted_last in wanted.ranges:
                last = min(wanted_last, first + WINDOW - 1)  # a peer is served a window at a time, as it asks
                record = self.log.record_raw(node)
                while True:
                    raws = await self.log.read_run(node, first, last) if first <= last else []
                    done = not raws or first + len(raws) > last
                    await self._perform(self.machine.run_frame(frames.Run(node, first, raws, record, done)))
                    if done:
                        break
                    first += len(raws)
            self.machine.served()

    async def _perform(self, actions: list[Action]) -> bool:
        """Does what the machine asks, but only reports a write round (True): the writer runs those."""
        round_due = False
        for action in actions:
            match action:
                case Send(data):
                    await self.ws.send_bytes(data)
                case ApplySync(message, epoch):
                    if epoch == self.log.epoch.seal:
                        if self._sync_epoch != epoch:
                            # The peer moved to our epoch and spoke first: the new conversation starts here.
                            # (Dropping its message would lose changes: Automerge never resends what it sent.)
                            self._sync_state, self._sync_epoch = self.log.new_sync_state(), epoch
                        round_due |= await self._perform(self._apply(message))
                    else:
                        round_due = True  # a document we left, or have not reached: the next tip says so
                case ApplyRun(run):
                    round_due |= await self._perform(self._apply_run(run))
                case CatchUp():
                    assert self.info is not None
                    ranges = self.log.catchup.plan(self, self.info.peer_vector, self.log.vector, self.log.revoked)
                    round_due |= await self._perform(self.machine.want(ranges))
                case ServeRuns() | ServeChunks():
                    self._wants.put_nowait(action)
                case ApplyChunk(name, data):
                    assert self.info is not None
                    self.chunks.received(self.info.node, name, data)
                case GenerateSync():
                    round_due = True
                case Linked(info):
                    self.info = info
                case Close(reason, detail, report):
                    if report:
                        self.log.refuse(reason, f"{self.address}: {detail}")
                    raise LinkClosed(f"{reason.value}: {detail}")
        return round_due

    def _apply(self, message: bytes) -> list[Action]:
        assert self.info is not None
        try:
            n = self.log.receive_sync(self._sync_state, message, self.info.desk)
        except RefusedSync as e:
            return self.machine.sync_refused(e.refused)
        return self.machine.sync_applied(n)

    def _apply_run(self, run: frames.Run) -> list[Action]:
        assert self.info is not None
        try:
            n = self.log.receive_run(run.node, run.first, run.events, run.record, self.info.desk)
        except RefusedSync as e:
            return self.machine.sync_refused(e.refused)
        if run.done:
            self.log.catchup.done(self, run.node)
        return self.machine.run_applied(run, n)

    async def _receive(self) -> bytes | str:
        msg = await self.ws.receive()
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            self.machine.closed()
            raise LinkClosed("peer closed the link")
        if msg.type == WSMsgType.ERROR:
            self.machine.closed()
            raise LinkClosed(f"link error: {self.ws.exception()}")
        return msg.data if msg.type in (WSMsgType.BINARY, WSMsgType.TEXT) else str(msg.type)

    async def close(self) -> None:
        """Says goodbye, but waits at most CLOSE_TIMEOUT for the peer's answer: a peer that is stopped or
        half-gone (full socket buffers) never answers. On the timeout aiohttp drops the connection itself."""
        if self._closing:
            return
        self._closing = True
        self.log.catchup.release(self)  # a link turned away after its hello may have asked already
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close()
        except TimeoutError:
            log.info("link %s: no answer to our close within %.0f s; dropped", self.address, CLOSE_TIMEOUT)
        except Exception as e:
            log.debug("link %s: close failed: %s", self.address, e)


def ws_client_timeout() -> aiohttp.ClientWSTimeout:
    return aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT)
