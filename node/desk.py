"""A desk node: the event log, its peer links, the bridge and the desk API, wired, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from node.api.app import build_app, build_peer_app
from node.api.files import MAX_IMPORT
from node.api.live import LiveFeed
from node.clock_suspects import ClockSuspects
from node.cluster import ClusterPolicy, load_membership
from node.crdt.bounds import DeskLimits
from node.crdt.core import Arrival
from node.crdt.hlc import DEFAULT_MAX_DRIFT_MS
from node.discovery.mdns import Discovery, Peer
from node.discovery.peers import LogLinks, PeerTable
from node.discovery.tls import TlsTransport, serve_tls
from node.due_dates import DueDates
from node.eventlog import EventLog
from node.ilsbridge.adapters.base import load_credentials, make_adapter
from node.ilsbridge.bridge import Bridge, BridgeConfig
from node.live_lookup import LiveLookup
from node.revocation import Revocations
from node.scan_warnings import ScanWarnings
from node.sealer import SEAL_EVERY, Sealer
from node.snapshot.atrest import ChunkFiles, load_or_create_key
from node.snapshot.fetch import Fetcher
from node.snapshot.importer import SnapshotImport
from node.snapshot.refresh import INTERVAL_S as REFRESH_INTERVAL_S
from node.snapshot.refresh import Refresher
from node.snapshot.retention import DAY_MS, RETENTION_DAYS
from node.snapshot.store import SnapshotStore
from node.status import DeskStatus, pending_uploads
from node.tasks import reap
from node.trust.admissions import AdmissionStore
from node.trust.identity import load_or_create_identity
from node.views import CirculationViews

log = logging.getLogger(__name__)

# A desk stops within STOP_TIMEOUT seconds whatever its peers, browsers or the ILS do (issue 8). The steps
# before the journal's flush share STOP_TIMEOUT - FLUSH_RESERVE, and each has its own cap too.
STOP_TIMEOUT = 5.0
FLUSH_RESERVE = 1.0
PEERS_CLOSE = 3.0  # PeerTable.close is bounded by about CLOSE_TIMEOUT + 2 * CLOSE_GRACE = 3 s itself
HTTP_SHUTDOWN = 0.5  # seconds in-flight requests get to finish (aiohttp then cancels them, as long again)
RUNNER_CLEANUP = 2 * HTTP_SHUTDOWN + 0.5


@dataclass
class DeskConfig:
    data_dir: Path
    desk: str
    host: str = "127.0.0.1"
    port: int = 8080
    peer_host: str = "127.0.0.1"
    peer_port: int = 0
    peers: list[str] = field(default_factory=list)
    loan_days: int = 21
    ils: str | None = None  # this desk is the bridge to the ILS at this URL
    ils_credentials: str | None = None  # a file; else CIRCMESH_ILS_USER / CIRCMESH_ILS_PASSWORD
    upload_concurrency: int = 16
    seal_every: int = SEAL_EVERY  # events in the document before the bridge seals it (node/sealer.py)
    mdns: bool = True  # find peers of this cluster by mDNS (static --peer addresses work either way)
    interfaces: list[str] | None = None  # mDNS interfaces (IP addresses); None: zeroconf's default, the LAN
    limits: DeskLimits = field(default_factory=DeskLimits)  # what staff and files may enter at this desk
    max_import: int = MAX_IMPORT  # largest offline file POST /api/v1/imports takes, in bytes
    max_clock_drift_ms: int = DEFAULT_MAX_DRIFT_MS  # peers push this desk's clock at most this far ahead
    fines_limit_cents: int = 500  # a patron owing more is warned about at checkout (needs the override)
    branch: str | None = None  # the library this desk is at: returns of other libraries' items go in transit
    snapshot_retention_ms: int = int(RETENTION_DAYS * DAY_MS)  # an older snapshot is purged once all is uploaded
    snapshot_every_s: float = REFRESH_INTERVAL_S  # the bridge refreshes the patron and item snapshot this often


class DeskNode:
    """Wires a desk's parts together, and starts and stops them: the log, revocations, the TLS transport and
    peer table, the views, scan warnings, clock suspects and status the API shows, the live feed, the
    bridge, mDNS, and both ports. What each part does is in its own module."""

    def __init__(self, config: DeskConfig) -> None:
        """Raises NotEnrolled when the data directory belongs to no cluster: there is no plaintext mode."""
        self.config = config
        identity = load_or_create_identity(config.data_dir)
        self.membership = load_membership(config.data_dir, identity)
        self.log = EventLog(identity, config.data_dir, config.desk, policy=ClusterPolicy(self.membership),
                            cert=self.membership.node_cert_pem, max_drift_ms=config.max_clock_drift_ms)
        self.revocations = Revocations(self.log)
        self.transport = TlsTransport(identity, self.membership, config.data_dir / "tls",
                                      revoked=self.revocations.nodes)
        key = load_or_create_key(config.data_dir)
        self.snapshot = SnapshotStore(config.data_dir / "snapshot.sqlite", key)
        self.chunk_files = ChunkFiles(config.data_dir / "snapshot-chunks", key)
        building = asyncio.Lock()  # one new snapshot file at a time: the bridge's refresh or a fetch
        self.fetcher = Fetcher(self.log, self.snapshot, self.chunk_files, building, self.log.refuse,
                               key_dir=config.data_dir, retention_ms=config.snapshot_retention_ms,
                               pending=lambda: pending_uploads(self.log))
        links = LogLinks(self.log, chunks=self.fetcher)
        self.peers = PeerTable(links, self.transport)
        self.fetcher.peers = self.peers
        self.admissions = AdmissionStore() if self.membership.ca is not None else None
        self.discovery: Discovery | None = None
        self._mdns_dialled: dict[str, str] = {}  # node id -> the address dialled because mDNS announced it
        self._peer_server: asyncio.Server | None = None
        self.views = CirculationViews(self.log, self.snapshot)
        self.warnings = ScanWarnings(self.log, self.snapshot, config.fines_limit_cents, branch=config.branch)
        self.due_dates = DueDates(self.snapshot, config.loan_days, config.branch, config.limits.due_fits)
        self.clocks = ClockSuspects(self.node_id, self.log, self.peers, config.max_clock_drift_ms)
        self.live = LiveFeed(self.views.event_json)
        self.bridge: Bridge | None = None
        if config.ils:
            credentials = load_credentials(config.ils_credentials, os.environ)
            adapter = make_adapter(config.ils, credentials)
            self.bridge = Bridge(self.log, adapter, config.ils, BridgeConfig(concurrency=config.upload_concurrency),
                                 clock_offset=self.clocks.offset)
        bridge = self.bridge
        self.live_lookup = LiveLookup(adapter if bridge is not None else None,
                                      lambda: bridge is not None and bridge.reachable, self.snapshot)
        self.sealer = Sealer(self.log, self.node_id, config.seal_every, bridge=self.bridge is not None)
        self.importer = SnapshotImport(self.snapshot, self.chunk_files, self.log, building,
                                       config.data_dir / "snapshot-import")
        self.refresher = (Refresher(adapter, self.snapshot, self.chunk_files, self.log, building,
                                    name=config.ils or "ILS", interval=config.snapshot_every_s)
                          if self.bridge is not None else None)
        self.status = DeskStatus(self.node_id, config.desk, config.max_clock_drift_ms, self.log, self.peers,
                                 self.membership, self.clocks, self.bridge)
        self.status.snapshot, self.status.refresh, self.status.fetch = self.snapshot, self.refresher, self.fetcher
        self.status.file_import = self.importer
        if self.bridge is not None:
            links.bridge_state = self.status.bridge_tip
        self._web_runner: web.AppRunner | None = None
        self._peer_runner: web.AppRunner | None = None
        self.port = config.port
        self.peer_port = config.peer_port

    @property
    def node_id(self) -> str:
        return self.log.identity.node_id

    async def start(self) -> None:
        self.log.open()
        await self.log.start()
        self.log.subscribe(self.live.publish)
        self.log.subscribe(self._on_arrival)
        peer_runner = web.AppRunner(build_peer_app(self), access_log=None, shutdown_timeout=HTTP_SHUTDOWN)
        await peer_runner.setup()
        self._peer_server = await serve_tls(peer_runner, self.config.peer_host, self.config.peer_port,
                                            self.transport.server_ssl(), self.peers.counters)
        self.peer_port = int(self._peer_server.sockets[0].getsockname()[1])
        runner = web.AppRunner(build_app(self), access_log=None, shutdown_timeout=HTTP_SHUTDOWN)
        await runner.setup()
        await web.TCPSite(runner, self.config.host, self.config.port).start()
        self.port = _bound_port(runner)
        self._web_runner, self._peer_runner = runner, peer_runner
        for address in self.config.peers:
            self.peers.dial(address)
        if self.config.mdns:
            self.discovery = Discovery(
                node_id=self.node_id, cluster_id=self.membership.cluster_id, port=self.peer_port,
                on_found=self._peer_found, on_lost=self._peer_lost, interfaces=self.config.interfaces,
                desk=self.config.desk[:30],
            )
            self.status.discovery = self.discovery
            await self.discovery.start()
        if self.bridge is not None:
            await self.bridge.start()
        self.sealer.start()
        self.fetcher.start()
        if self.refresher is not None:
            self.refresher.start()
        log.info("desk %s (%s) on http://%s:%d, peers on %d", self.config.desk, self.node_id[:12],
                 self.config.host, self.port, self.peer_port)

    async def stop(self) -> None:
        """Stops within STOP_TIMEOUT seconds whatever the peers do (the journal's last commit aside).

        Both ports stop listening first. Every later step is bounded, and one that fails or overruns is
        logged and left behind rather than keeping the next ones from running: the web and peer runners are
        torn down regardless, and the journal is flushed and closed last. An acknowledged scan was fsynced
        before its ack; the flush is for the peers' events and compactions still queued in the group commit.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STOP_TIMEOUT - FLUSH_RESERVE

        async def step(what: str, work: Awaitable[None], cap: float) -> None:
            await _bounded(what, work, min(cap, max(0.1, deadline - loop.time())))

        if self._peer_server is not None:
            self._peer_server.close()
        runners = [r for r in (self._web_runner, self._peer_runner) if r is not None]
        for runner in runners:
            for site in list(runner.sites):
                await site.stop()  # closes the listening socket at once; open connections are the cleanup's
        self.live.close()  # browsers' live feeds would otherwise hold the web runner's cleanup
        steps = [step("the peer links", self.peers.close(), PEERS_CLOSE)]
        if self._web_runner is not None:
            steps.append(step("the web server", self._web_runner.cleanup(), RUNNER_CLEANUP))
        if self.discovery is not None:
            steps.append(step("mDNS", self.discovery.stop(), 1.0))
        if self.bridge is not None:
            steps.append(step("the ILS bridge", self.bridge.stop(), 1.0))
        steps.append(step("the sealer", self.sealer.stop(), 1.0))
        steps.append(step("the snapshot fetch", self.fetcher.stop(), 1.0))
        steps.append(step("the snapshot import", self.importer.stop(), 1.0))
        if self.refresher is not None:
            steps.append(step("the snapshot refresh", self.refresher.stop(), 1.0))
        await asyncio.gather(*steps)
        if self._peer_runner is not None:  # after the links: their handlers run in it
            await step("the peer server", self._peer_runner.cleanup(), RUNNER_CLEANUP)
        await _bounded("the journal's last commit", self.log.store.commit([]),
                       max(FLUSH_RESERVE, deadline + FLUSH_RESERVE - loop.time()))
        self.log.close()
        self.snapshot.close()

    # ---- what mDNS finds and what the log revokes, to the peer table
    def _peer_found(self, peer: Peer) -> None:
        """mDNS only proposes: the TLS handshake decides whether this is a member of the cluster.

        A desk reported again at another address has moved: its old address is no longer dialled.
        """
        address = _address(peer.host, peer.port)
        previous = self._mdns_dialled.get(peer.node_id)
        self._mdns_dialled[peer.node_id] = address
        if previous is not None and previous != address:
            self._undial(previous)
        self.peers.dial(address)

    def _peer_lost(self, node_id: str) -> None:
        """Our own record of the address, not Discovery's: the browser has dropped the peer before telling us."""
        address = self._mdns_dialled.pop(node_id, None)
        if address is not None:
            self._undial(address)

    def _undial(self, address: str) -> None:
        """Stops dialling an address mDNS gave us, unless --peer or another announced desk still names it."""
        if address not in self.config.peers and address not in self._mdns_dialled.values():
            self.peers.forget(address)

    def _on_arrival(self, arrival: Arrival) -> None:
        """A revocation reached the log: drop the revoked desk's link (the transport refuses it from now on)."""
        event = arrival.event
        if event.kind == "revoke" and event.problem is None and event.body["node"] in self.revocations:
            task = asyncio.get_running_loop().create_task(self.peers.drop(event.body["node"], "revoked"))
            task.add_done_callback(lambda _t: None)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bound_port(runner: web.AppRunner) -> int:
    for site in runner.sites:
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            return int(server.sockets[0].getsockname()[1])
    raise RuntimeError("site is not listening")


async def _bounded(what: str, work: Awaitable[None], seconds: float) -> None:
    """Runs one step of a stop for at most `seconds`. A step that overruns is cancelled and, if it does not
    end within a moment, left behind; a step that fails is logged. Either way the next steps run."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        log.warning("stopping: %s took over %.1f s; going on without it", what, seconds)
        await reap(task, within=0.2)
    elif not task.cancelled() and (error := task.exception()) is not None:
        log.warning("stopping: %s failed: %s", what, error)


async def run_until_stopped(node: DeskNode, stop: asyncio.Event,
                            on_ready: Callable[[], None] = lambda: None) -> None:
    """Runs the node until `stop` is set (a signal), then stops it; `on_ready` runs once it serves."""
    await node.start()
    try:
        on_ready()
        await stop.wait()
    finally:
        await node.stop()
