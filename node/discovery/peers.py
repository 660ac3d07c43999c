"""The peer table: which peers this node is linked to, dialling the configured ones, accepting others.

One link per peer pair: when both sides dial at once, the link dialled by the smaller node id stays.
Dialling backs off exponentially (with jitter) while a peer is unreachable, and starts over after a
link that worked goes away.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from node.discovery.link import CLOSE_TIMEOUT, ChunkService, LinkClosed, PeerLink, WebSocket, ws_client_timeout
from node.discovery.link_machine import LinkInfo, State
from node.discovery.transport import Transport
from node.eventlog import EventLog
from node.tasks import reap
from node.trust.certs import TrustError

log = logging.getLogger(__name__)

BACKOFF_START = 0.2
BACKOFF_MAX = 5.0
PEER_PATH = "/peer"
CLOSE_GRACE = 0.5  # seconds beyond CLOSE_TIMEOUT for dial loops, and for the client session, to wind down


class LinkSource(Protocol):
    """What the peer table needs of its node: its id (which of two links to a peer stays), what its log
    holds (how far each peer lags), and a new link over a peer's WebSocket. What a link does with the log
    is the link's own business (link.py)."""

    @property
    def node_id(self) -> str: ...

    @property
    def vector(self) -> Mapping[str, int]: ...

    def new_link(self, ws: WebSocket, *, outbound: bool, address: str) -> PeerLink: ...


class LogLinks:
    """Links over this desk's log, telling peers in their tips what `bridge_state` says of its bridge."""

    def __init__(self, eventlog: EventLog, chunks: ChunkService | None = None) -> None:
        self._log = eventlog
        self._chunks = chunks
        self.bridge_state: Callable[[], dict[str, Any] | None] = lambda: None

    @property
    def node_id(self) -> str:
        return self._log.identity.node_id

    @property
    def vector(self) -> Mapping[str, int]:
        return self._log.vector

    def new_link(self, ws: WebSocket, *, outbound: bool, address: str) -> PeerLink:
        return PeerLink(self._log, ws, outbound=outbound, address=address, bridge_state=self.bridge_state,
                        chunks=self._chunks)


class PeerTable:
    def __init__(self, source: LinkSource, transport: Transport) -> None:
        self.source = source
        self.transport = transport
        self.links: dict[str, PeerLink] = {}
        self.known: dict[str, LinkInfo] = {}  # last info of every peer ever linked
        self.counters: Counter[str] = Counter()
        self._dialers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._changed = asyncio.Event()
        self._address_node: dict[str, str] = {}
        self._unwanted: set[str] = set()  # forgotten while a link dialled there was up: not redialled after it
        self._closed = False

    # ---- links
    def _claim(self, link: PeerLink) -> bool:
        assert link.info is not None
        node = link.info.node
        if link.outbound:
            self._address_node[link.address] = node
        existing = self.links.get(node)
        if existing is not None:
            preferred_outbound = self.source.node_id < node
            if existing.outbound == preferred_outbound or link.outbound != preferred_outbound:
                self.counters["duplicate_links"] += 1
                return False
            task = asyncio.get_running_loop().create_task(existing.close())
            task.add_done_callback(lambda _t: None)
        self.links[node] = link
        self.known[node] = link.info
        self._changed.set()
        return True

    def _release(self, link: PeerLink) -> None:
        if link.info and self.links.get(link.info.node) is link:
            del self.links[link.info.node]
            self._changed.set()

    async def serve_link(self, link: PeerLink, proven: str | None = None) -> None:
        try:
            await link.handshake(proven)
            if not self._claim(link):
                return
            log.info("linked to %s (%s) at %s", link.info.desk if link.info else "?", link.address,
                     "outbound" if link.outbound else "inbound")
            await link.run()
        except LinkClosed as e:
            self.counters["links_closed"] += 1
            log.info("link %s closed: %s", link.address, e)
        except (aiohttp.ClientError, ConnectionError, OSError) as e:
            self.counters["links_failed"] += 1
            log.info("link %s failed: %s", link.address, e)
        finally:
            self._release(link)
            await link.close()

    # ---- inbound
    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024, heartbeat=15.0)
        if not ws.can_prepare(request).ok:
            self.counters["not_websocket"] += 1
            return web.Response(status=400, text="circmesh peer port: WebSocket peers only\n")
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        try:
            proven = self.transport.peer_identity(ssl_object)
        except TrustError as e:
            self.counters["untrusted_peer"] += 1
            log.warning("refused a peer link: %s", e)
            return web.Response(status=403, text=f"circmesh peer port: {e}\n")
        await ws.prepare(request)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        address = f"{peername[0]}:{peername[1]}" if peername else "?"
        await self.serve_link(self.source.new_link(ws, outbound=False, address=address), proven)
        return ws

    # ---- outbound
    @property
    def dialling(self) -> frozenset[str]:
        """The addresses a dial loop still runs for, so that one left behind for a vanished peer shows."""
        return frozenset(a for a, task in self._dialers.items() if not task.done())

    def dial(self, address: str) -> None:
        if self._closed:
            return
        self._unwanted.discard(address)  # forgotten, then announced again before its link ended: keep it
        if address not in self._dialers:
            self._dialers[address] = asyncio.get_running_loop().create_task(self._dial_loop(address))

    def forget(self, address: str) -> None:
        """Stops dialling an address (a peer that mDNS says went away).

        A link this loop dialled there and still serves stays up (mDNS may be all the peer lost), but the loop
        ends with that link instead of dialling again; otherwise the loop is cancelled now.
        """
        task = self._dialers.get(address)
        if task is None:
            return
        if any(link.outbound and link.address == address for link in self.links.values()):
            self._unwanted.add(address)
        else:
            del self._dialers[address]
            self._address_node.pop(address, None)
            task.cancel()

    async def drop(self, node: str, reason: str) -> None:
        link = self.links.get(node)
        if link is not None:
            log.warning("dropping the link to %s: %s", node[:12], reason)
            self.counters["dropped"] += 1
            await link.close()

    async def _dial_loop(self, address: str) -> None:
        try:
            await self._dial_until_forgotten(address)
        finally:
            if self._dialers.get(address) is asyncio.current_task():
                del self._dialers[address]
                self._unwanted.discard(address)
                self._address_node.pop(address, None)

    async def _dial_until_forgotten(self, address: str) -> None:
        delay = BACKOFF_START
        url = f"{self.transport.scheme}://{address}{PEER_PATH}"
        while True:
            linked = False
            try:
                if self._session is None:
                    self._session = aiohttp.ClientSession()
                ws = await self._session.ws_connect(
                    url, ssl=self.transport.client_ssl() or False, max_msg_size=64 * 1024 * 1024,
                    heartbeat=15.0, timeout=ws_client_timeout(),
                )
                link = self.source.new_link(ws, outbound=True, address=address)
                try:
                    proven = self.transport.peer_identity(ws.get_extra_info("ssl_object"))
                except TrustError as e:
                    self.counters["untrusted_peer"] += 1
                    log.warning("refused the peer at %s: %s", address, e)
                    await link.close()
                    raise OSError(str(e)) from None
                self.counters["dials_ok"] += 1
                linked = True
                await self.serve_link(link, proven)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                self.counters["dials_failed"] += 1
                log.debug("dial %s failed: %s", address, e)
            if linked:
                delay = BACKOFF_START
                # A link to this peer may exist the other way round: wait for it to end before dialling.
                while self._address_node.get(address) in self.links:
                    await self._wait_changed()
            if address in self._unwanted:
                return  # forgotten while its link was up; that link has ended
            await asyncio.sleep(delay * (0.5 + random.random()))  # backoff between dials, not a test wait
            delay = min(delay * 2, BACKOFF_MAX)

    async def _wait_changed(self) -> None:
        self._changed.clear()
        await self._changed.wait()

    async def close(self) -> None:
        """Ends every dial loop and link at once, within CLOSE_TIMEOUT + 2 * CLOSE_GRACE whatever the peers do:
        each link waits at most CLOSE_TIMEOUT for its peer's answer, and closing the client session (which
        waits for TLS close_notify from peers that may never send it) gets CLOSE_GRACE."""
        self._closed = True
        dialers, self._dialers = list(self._dialers.values()), {}
        ended = await asyncio.gather(reap(*dialers, within=CLOSE_TIMEOUT + CLOSE_GRACE),
                                     *(link.close() for link in list(self.links.values())))
        if not ended[0]:
            log.warning("peer dial loops still running after %.1f s; left behind", CLOSE_TIMEOUT + CLOSE_GRACE)
        if self._session is not None:
            try:
                async with asyncio.timeout(CLOSE_GRACE):
                    await self._session.close()
            except TimeoutError:
                log.info("peer connections still closing after %.1f s; left to the OS", CLOSE_GRACE)

    def chunk_links(self) -> dict[str, PeerLink]:
        """The links up now, by the peer's node id: where the snapshot fetcher asks for chunks."""
        return {node: link for node, link in self.links.items() if link.machine.state is State.SYNCING}

    def linked(self) -> list[LinkInfo]:
        """What is known of every peer linked now."""
        return [link.info for link in self.links.values() if link.info is not None]

    def bridges_seen(self) -> list[dict[str, Any]]:
        """The bridge states that connected peers reported in their last tip."""
        return [link.info.bridge for link in self.links.values() if link.info and link.info.bridge]

    def status(self) -> list[dict[str, Any]]:
        out = []
        ours = self.source.vector
        for node, info in sorted(self.known.items(), key=lambda kv: kv[1].desk):
            connected = node in self.links
            lag = (sum(max(0, seq - info.peer_vector.get(n, 0)) for n, seq in ours.items())
                   if connected else None)
            out.append({
                "node": node, "desk": info.desk, "address": info.address, "connected": connected,
                "outbound": info.outbound, "lag": lag, "clock_offset_ms": info.clock_offset_ms,
                "events_received": info.received_events, "sync_bytes_in": info.sync_bytes_in,
                "sync_bytes_out": info.sync_bytes_out, "run_events_in": info.run_events_in,
                "run_events_out": info.run_events_out, "run_bytes_in": info.run_bytes_in,
                "run_bytes_out": info.run_bytes_out,
                "epoch": info.peer_epoch.number,
            })
        return out
