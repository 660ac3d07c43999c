"""A desk node: the event log, its peer links, and the desk API, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from node.api.app import build_app, build_peer_app
from node.api.files import MAX_IMPORT
from node.api.live import LiveFeed
from node.cluster import ClusterPolicy, load_membership
from node.crdt.bounds import DeskLimits
from node.crdt.conflicts import Conflict
from node.crdt.event import DESK_KINDS, Event
from node.crdt.hlc import DEFAULT_MAX_DRIFT_MS
from node.crdt.state import Loan
from node.discovery.mdns import Discovery, Peer
from node.discovery.peers import PeerTable
from node.discovery.tls import TlsTransport, serve_tls
from node.eventlog import Arrival, EventLog, wall_ms
from node.ilsbridge.adapters.base import load_credentials, make_adapter
from node.ilsbridge.bridge import Bridge, BridgeConfig
from node.tasks import reap
from node.trust.admissions import AdmissionStore
from node.trust.identity import load_or_create_identity

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
    seal_every: int = 20_000  # see BridgeConfig
    mdns: bool = True  # find peers of this cluster by mDNS (static --peer addresses work either way)
    interfaces: list[str] | None = None  # mDNS interfaces (IP addresses); None: zeroconf's default, the LAN
    limits: DeskLimits = field(default_factory=DeskLimits)  # what staff and files may enter at this desk
    max_import: int = MAX_IMPORT  # largest offline file POST /api/v1/imports takes, in bytes
    max_clock_drift_ms: int = DEFAULT_MAX_DRIFT_MS  # peers push this desk's clock at most this far ahead


class DeskNode:
    def __init__(self, config: DeskConfig) -> None:
        """Raises NotEnrolled when the data directory belongs to no cluster: there is no plaintext mode."""
        self.config = config
        self.loan_days = config.loan_days
        self.limits = config.limits
        identity = load_or_create_identity(config.data_dir)
        self.membership = load_membership(config.data_dir, identity)
        self.log = EventLog(identity, config.data_dir, config.desk, policy=ClusterPolicy(self.membership),
                            cert=self.membership.node_cert_pem, max_drift_ms=config.max_clock_drift_ms)
        self.transport = TlsTransport(identity, self.membership, config.data_dir / "tls",
                                      revoked=lambda: set(self.log.revoked))
        self.peers = PeerTable(self.log, self.transport)
        self.admissions = AdmissionStore() if self.membership.ca is not None else None
        self.discovery: Discovery | None = None
        self._mdns_dialled: dict[str, str] = {}  # node id -> the address dialled because mDNS announced it
        self._peer_server: asyncio.Server | None = None
        self.live = LiveFeed(self)
        self.bridge: Bridge | None = None
        if config.ils:
            credentials = load_credentials(config.ils_credentials, os.environ)
            adapter = make_adapter(config.ils, credentials)
            self.bridge = Bridge(self.log, adapter, config.ils, BridgeConfig(concurrency=config.upload_concurrency,
                                                                                  seal_every=config.seal_every),
                                 clock_offset=self.clock_offset)
            self.peers.bridge_state = self._bridge_tip
        self._web_runner: web.AppRunner | None = None
        self._peer_runner: web.AppRunner | None = None
        self.port = config.port
        self.peer_port = config.peer_port

    @property
    def node_id(self) -> str:
        return self.log.identity.node_id

    def now_ms(self) -> int:
        return wall_ms()

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
            await self.discovery.start()
        if self.bridge is not None:
            await self.bridge.start()
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
        await asyncio.gather(*steps)
        if self._peer_runner is not None:  # after the links: their handlers run in it
            await step("the peer server", self._peer_runner.cleanup(), RUNNER_CLEANUP)
        await _bounded("the journal's last commit", self.log.store.commit([]),
                       max(FLUSH_RESERVE, deadline + FLUSH_RESERVE - loop.time()))
        self.log.close()

    # ---- membership
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
        if arrival.event.kind == "revoke" and arrival.event.problem is None:
            node = arrival.event.body["node"]
            task = asyncio.get_running_loop().create_task(self.peers.drop(node, "revoked"))
            task.add_done_callback(lambda _t: None)

    # ---- views shared by the API, the live feed and the UI
    def event_json(self, event: Event) -> dict[str, Any]:
        out = event.to_json()
        out["desk"] = self.log.desk_of(event.node)
        return out

    def loan_json(self, loan: Loan) -> dict[str, Any]:
        out = loan.to_json()
        out["desk"] = self.log.desk_of(loan.node) if loan.node else None
        return out

    def conflict_json(self, conflict: Conflict) -> dict[str, Any]:
        out = conflict.to_json()
        out["detail"] = [self.event_json(self.log.events[e]) for e in conflict.events if e in self.log.events]
        about = self.log.state.conflicts.get(conflict.about) if conflict.about else None
        if about is not None:  # the admins' answers disagree: show what they answered, and about what
            out["about_conflict"] = self.conflict_json(about)
        if conflict.node is not None:
            out["desk"] = self.log.desk_of(conflict.node)
            out["compared_with"] = sorted({d["desk"] for d in out["detail"] if d["node"] != conflict.node})
        return out

    def patron_json(self, barcode: str) -> dict[str, Any]:
        state = self.log.state
        registration = state.registrations.get(barcode)
        name = self.log.events[registration].body["name"] if registration else None
        paid = state.payments.get(barcode)
        return {
            "barcode": barcode,
            "name": name,
            "registered_offline": registration is not None,
            "loans": [self.loan_json(loan) for loan in state.loans_of(barcode)],
            "paid_offline": str(paid) if paid is not None else "0",
            "conflicts": [c.id for c in state.open_conflicts() if barcode in c.patrons],
        }

    def item_json(self, barcode: str) -> dict[str, Any]:
        state = self.log.state
        loan = state.loans.get(barcode)
        return {
            "barcode": barcode,
            "loan": self.loan_json(loan) if loan else None,
            "returned_by": state.returned.get(barcode),
            "in_house_uses": state.in_house_uses.get(barcode, 0),
            "conflicts": [c.id for c in state.open_conflicts() if c.item == barcode],
        }

    def outcome_rows(self) -> list[dict[str, Any]]:
        state = self.log.state
        rows = []
        for event in reversed(self.log.ordered()):
            if event.problem is not None or event.kind not in DESK_KINDS or event.id in state.voided:
                continue
            outcome = state.outcomes.get(event.id)
            answer = self.log.events.get(outcome.event) if outcome else None
            ils_at = answer.body.get("ils_at") if answer else None  # a desk clock that was off, corrected
            rows.append({
                "event": event.id, "kind": event.kind, "desk": self.log.desk_of(event.node), "at": event.at,
                "patron": event.body.get("patron"), "item": event.body.get("item"),
                "amount": event.body.get("amount"),
                "status": outcome.status if outcome else "pending",
                "message": outcome.message if outcome else "",
                "ils_at": ils_at,
                "at_corrected_ms": ils_at - event.at if ils_at is not None else None,
                "at_corrected_by": answer.body.get("ils_at_by") if ils_at is not None and answer else None,
            })
        return rows

    # ---- clocks
    def measured_offsets(self) -> dict[str, int]:
        """How far each linked desk's clock, and this desk's, reads from the cluster's median clock, as the
        peer links measure it. Empty with fewer than three desks: with two, nobody can tell which is off."""
        offsets = {self.node_id: 0}
        for node, link in self.peers.links.items():
            if link.info is not None:
                offsets[node] = link.info.clock_offset_ms
        if len(offsets) < 3:
            return {}
        values = sorted(offsets.values())
        mid = len(values) // 2
        median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) // 2
        return {node: offset - median for node, offset in offsets.items()}

    def clock_offset(self, node: str) -> tuple[int, str] | None:
        """How far `node`'s clock reads ahead of the cluster's (negative: behind) when it is off by more
        than the drift bound, and how that is known: measured over this desk's links where it can be, else
        as the log shows it (an open clock_ahead conflict). What the bridge corrects ILS times by."""
        measured = self.measured_offsets()
        if node in measured:
            offset = measured[node]
            return (offset, "link") if abs(offset) > self.config.max_clock_drift_ms else None
        flagged = self.log.state.clocks.flagged.get(node)
        return (flagged.offset_ms or 0, "log") if flagged is not None else None

    def clock_suspects(self) -> list[dict[str, Any]]:
        """Desks whose clocks are off by more than the drift bound: measured over the links (`link`), shown
        by the log (`log`), or both. With two desks the links cannot say which one is off: `undecided`."""
        bound = self.config.max_clock_drift_ms
        suspects: dict[str, dict[str, Any]] = {}

        def entry(node: str, offset: int) -> dict[str, Any]:
            return suspects.setdefault(node, {"node": node, "desk": self.log.desk_of(node), "offset_ms": offset,
                                              "sources": [], "this_desk": node == self.node_id,
                                              "undecided": False})

        for node, offset in self.measured_offsets().items():
            if abs(offset) > bound:
                entry(node, offset)["sources"].append("link")
        flagged = self.log.state.clocks.flagged
        for node, conflict in flagged.items():
            found = entry(node, conflict.offset_ms or 0)
            found["sources"].append("log")
            found["conflict"] = conflict.id
        links = [link.info for link in self.peers.links.values() if link.info is not None]
        if len(links) == 1 and abs(links[0].clock_offset_ms) > bound:
            other, offset = links[0].node, links[0].clock_offset_ms
            decided = [n for n in (other, self.node_id) if n in suspects]
            if decided:  # the log says which of the two it is; the link measures by how much
                node = decided[0]
                suspects[node]["sources"].append("link")
                suspects[node]["offset_ms"] = offset if node == other else -offset
            else:
                pair = entry(other, offset)
                pair["sources"].append("link")
                pair["undecided"] = True
        return sorted(suspects.values(), key=lambda s: (not s["this_desk"], s["desk"]))

    def checkout_warnings(self, patron: str, item: str) -> list[dict[str, str]]:
        loan = self.log.state.loans.get(item)
        if loan is None:
            return []
        if loan.patron == patron:
            return [{"code": "already_on_loan_to_patron", "blocking": "yes",
                     "message": f"item {item} is already on loan to this patron: renew it instead"}]
        where = f" (lent at {self.log.desk_of(loan.node)})" if loan.node else ""
        return [{"code": "item_on_loan", "blocking": "yes",
                 "message": f"item {item} is on loan to patron {loan.patron}{where}"}]

    def checkin_warnings(self, item: str) -> list[dict[str, str]]:
        if item in self.log.state.loans:
            return []
        if item in self.log.state.returned:
            return [{"code": "not_on_loan", "blocking": "no",
                     "message": f"item {item} was already checked in since the outage"}]
        return [{"code": "no_offline_loan", "blocking": "no",
                 "message": f"no loan of item {item} since the outage; the ILS will check it in"}]

    def renewal_warnings(self, item: str) -> list[dict[str, str]]:
        if item in self.log.state.loans:
            return []
        return [{"code": "no_offline_loan", "blocking": "no",
                 "message": f"no loan of item {item} since the outage; the ILS will renew it if it can"}]

    def status(self) -> dict[str, Any]:
        state = self.log.state
        pending = applied = refused = 0
        for event in self.log.events.values():
            if event.problem is not None or event.kind not in DESK_KINDS or event.id in state.voided:
                continue
            outcome = state.outcomes.get(event.id)
            if outcome is None:
                pending += 1
            elif outcome.status == "applied":
                applied += 1
            else:
                refused += 1
        bridge = self._bridge_status()
        uploading = bool(bridge.pop("uploading"))
        return {
            "node": {
                "id": self.node_id, "desk": self.config.desk, "events": len(self.log.events),
                "seq": self.log.seq, "hlc": self.log.clock.last.to_wire(), "wall": self.now_ms(),
                "storage": "failed" if self.log.failed else "ok", "failure": self.log.failed,
            },
            "peers": self.peers.status(),
            "epoch": {"number": self.log.epoch.number, "seal": self.log.epoch.seal or None,
                      "document_events": self.log.doc_events},
            **bridge,
            "cluster": {"id": self.membership.cluster_id, "name": self.membership.cluster_name,
                        "role": self.membership.role},
            "upload": {"pending": pending, "applied": applied, "failed": refused, "uploading": uploading},
            "conflicts": len([c for c in state.open_conflicts() if c.needs_admin]),
            "warnings": len([c for c in state.open_conflicts() if not c.needs_admin]),
            "quarantined": {
                "count": len(state.quarantined),
                "recent": [{"event": event_id, "desk": self.log.desk_of(event_id.partition(":")[0]), "reason": why}
                           for event_id, why in list(state.quarantined.items())[-10:]],
            },
            "refusals": ({kind.value: n for kind, n in self.log.refusals.items()}
                         | {f"link_{k}": v for k, v in self.peers.counters.items()}),
            "discovery": dict(self.discovery.counters) if self.discovery else None,
            "recent_refusals": self.log.refusal_log[-10:],
            "max_clock_drift_ms": self.config.max_clock_drift_ms,
            "clock_suspects": self.clock_suspects(),
        }


    def _bridge_tip(self) -> dict[str, Any] | None:
        if self.bridge is None:
            return None
        b = self.bridge
        return {"node": self.node_id, "desk": self.config.desk, "term": b.config.term, "reachable": b.reachable,
                "last_probe": b.last_probe, "uploading": b.uploading, "problem": b.problem}

    def _bridge_status(self) -> dict[str, Any]:
        """This desk's bridge, or the one its peers report (the highest term, then the freshest probe)."""
        tip = self._bridge_tip()
        if tip is None:
            seen = self.peers.bridges_seen()
            tip = max(seen, key=lambda t: (t["term"], t["last_probe"] or 0)) if seen else None
        if tip is None:
            return {"bridge": None, "ils": None, "uploading": False}
        return {
            "bridge": {"node": tip["node"], "desk": tip["desk"], "term": tip["term"],
                       "is_me": tip["node"] == self.node_id},
            "ils": {"reachable": tip["reachable"], "last_probe": tip["last_probe"], "problem": tip["problem"]},
            "uploading": tip["uploading"],
        }


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
