"""One peer link: Automerge's sync protocol over a WebSocket, one SyncState per peer.

The writer sends sync messages until Automerge has nothing more to say, then sleeps until the document
changes (a local scan or another peer's events). The reader feeds the peer's messages to the log, which
verifies them. Anything a peer sends that does not parse or verify closes the link; the node goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from node.discovery import frames
from node.eventlog import EventLog, RefusedSync, wall_ms
from node.tasks import reap

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0  # seconds a close waits for the peer's answer: a stopped or half-gone peer never answers
TIP_EVERY = 2.0  # seconds: clock offset, lag and the bridge's state stay fresh on quiet links


class LinkClosed(Exception):
    pass


@dataclass
class LinkInfo:
    node: str
    desk: str
    address: str
    outbound: bool
    connected_at: float = field(default_factory=time.time)
    peer_vector: dict[str, int] = field(default_factory=dict)
    clock_offset_ms: int = 0
    received_events: int = 0
    sync_bytes_in: int = 0
    sync_bytes_out: int = 0
    bridge: dict[str, Any] | None = None


class PeerLink:
    def __init__(self, eventlog: EventLog, ws: Any, *, outbound: bool, address: str,
                 bridge_state: Callable[[], dict[str, Any] | None] = lambda: None) -> None:
        self.log = eventlog
        self.bridge_state = bridge_state
        self.ws = ws
        self.outbound = outbound
        self.address = address
        self.info: LinkInfo | None = None
        self._closing = False

    async def handshake(self, proven: str | None = None) -> LinkInfo:
        """Exchanges hellos. `proven` is the node id the peer's certificate proves: the hello must agree."""
        hello = frames.Hello(self.log.identity.node_id, self.log.desk, wall_ms())
        await self.ws.send_bytes(frames.encode(hello))
        try:
            async with asyncio.timeout(HELLO_TIMEOUT):
                frame = await self._next_frame()
        except TimeoutError:
            raise LinkClosed("no hello from peer") from None
        if not isinstance(frame, frames.Hello):
            raise LinkClosed("first frame was not a hello")
        if frame.node == self.log.identity.node_id:
            raise LinkClosed("connected to itself")
        if proven is not None and frame.node != proven:
            self.log.refuse("impostor", f"{self.address}: hello names {frame.node[:12]}, certificate {proven[:12]}")
            raise LinkClosed("hello names another node than the certificate")
        self.info = LinkInfo(frame.node, frame.desk, self.address, self.outbound,
                             clock_offset_ms=frame.wall - wall_ms())
        return self.info

    async def run(self) -> None:
        """Runs until the peer goes away or misbehaves."""
        assert self.info is not None
        sync_state = self.log.new_sync_state()
        waker = self.log.waker()
        waker.set()
        writer = asyncio.create_task(self._write(sync_state, waker))
        try:
            while True:
                frame = await self._next_frame()
                if isinstance(frame, frames.Sync):
                    self.info.sync_bytes_in += len(frame.message)
                    try:
                        n = self.log.receive_sync(sync_state, frame.message, self.info.desk)
                    except RefusedSync as e:
                        raise LinkClosed(f"refused: {e}") from None
                    self.info.received_events += n
                    waker.set()  # answer: Automerge's protocol is a conversation
                elif isinstance(frame, frames.Tip):
                    self.info.peer_vector = frame.vector
                    self.info.clock_offset_ms = frame.wall - wall_ms()
                    self.info.bridge = frame.bridge
                else:
                    raise LinkClosed("unexpected hello")
                if writer.done():
                    break
        finally:
            self.log.drop_waker(waker)
            await reap(writer, within=CLOSE_TIMEOUT)  # not suppress(CancelledError): a stop must get through
            await self.close()

    async def _write(self, sync_state: Any, waker: asyncio.Event) -> None:
        last_tip: dict[str, int] = {}
        last_bridge: dict[str, Any] | None = None
        last_sent = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TIP_EVERY):
                    await waker.wait()
            waker.clear()
            await self.log.durable()
            while (message := self.log.generate_sync(sync_state)) is not None:
                if self.info is not None:
                    self.info.sync_bytes_out += len(message)
                await self.ws.send_bytes(frames.encode(frames.Sync(message)))
            bridge = self.bridge_state()
            now = time.monotonic()
            if self.log.vector != last_tip or bridge != last_bridge or now - last_sent >= TIP_EVERY:
                last_tip, last_bridge, last_sent = dict(self.log.vector), bridge, now
                await self.ws.send_bytes(frames.encode(frames.Tip(last_tip, wall_ms(), bridge)))

    async def _next_frame(self) -> frames.Frame:
        msg = await self.ws.receive()
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
            raise LinkClosed("peer closed the link")
        if msg.type == WSMsgType.ERROR:
            raise LinkClosed(f"link error: {self.ws.exception()}")
        if msg.type != WSMsgType.BINARY:
            self.log.refuse("garbage", f"{self.address}: text frame on the peer link")
            raise LinkClosed("text frame on the peer link")
        try:
            return frames.decode(msg.data)
        except frames.FrameError as e:
            self.log.refuse("garbage", f"{self.address}: {e}")
            raise LinkClosed(str(e)) from None

    async def close(self) -> None:
        """Says goodbye, but waits at most CLOSE_TIMEOUT for the peer's answer: a peer that is stopped or
        half-gone (full socket buffers) never answers. On the timeout aiohttp drops the connection itself."""
        if self._closing:
            return
        self._closing = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close()
        except TimeoutError:
            log.info("link %s: no answer to our close within %.0f s; dropped", self.address, CLOSE_TIMEOUT)
        except Exception as e:
            log.debug("link %s: close failed: %s", self.address, e)


def ws_client_timeout() -> aiohttp.ClientWSTimeout:
    return aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT)
