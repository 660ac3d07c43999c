"""`/api/v1/status`: this node, its peers, the bridge and the ILS, the upload, conflicts, quarantined
events, refusals, and desks whose clocks are off — and the bridge's state as it travels in peer tips.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

from node.clock_suspects import ClockSuspects
from node.cluster import Membership
from node.crdt.epochs import Epoch
from node.crdt.hlc import HybridClock
from node.crdt.refusals import Refusal
from node.crdt.state import open_work
from node.eventlog import wall_ms
from node.ports import CirculationView, SnapshotView


def pending_uploads(log: CirculationView) -> int:
    """Desk events the ILS has not answered. Open work is in memory (the fold's base keeps it there)."""
    state = log.state
    return sum(1 for e in log.ordered() if open_work(e, state.voided, log.answered))


class StatusLog(CirculationView, Protocol):
    """What `/status` reads of the log beyond its views: this desk's sequence and clock, its storage
    health, and the refusals counted by kind (with the latest messages)."""

    @property
    def seq(self) -> int: ...

    @property
    def clock(self) -> HybridClock: ...

    @property
    def failed(self) -> str | None: ...

    @property
    def refusals(self) -> Mapping[Refusal, int]: ...

    @property
    def refusal_log(self) -> list[str]: ...

    @property
    def epoch(self) -> Epoch: ...

    @property
    def doc_events(self) -> int: ...

    @property
    def event_count(self) -> int: ...

    def holds(self, event_id: str) -> bool: ...


class PeerReport(Protocol):
    """What `/status` reads of the peer table (node/discovery/peers.py)."""

    @property
    def counters(self) -> Counter[str]: ...

    def status(self) -> list[dict[str, Any]]: ...

    def bridges_seen(self) -> list[dict[str, Any]]: ...


class UploadState(Protocol):
    """What a desk tells of its own bridge (node/ilsbridge/bridge.py)."""

    @property
    def term(self) -> int: ...

    @property
    def reachable(self) -> bool: ...

    @property
    def last_probe(self) -> int | None: ...

    @property
    def uploading(self) -> bool: ...

    @property
    def problem(self) -> str | None: ...


class RefreshState(Protocol):
    """The snapshot refresh on the bridge (node/snapshot/refresh.py), or its fetch at a desk (fetch.py)."""

    def to_json(self) -> dict[str, Any]: ...


class ImportState(Protocol):
    """A snapshot built from files (node/snapshot/importer.py): None before the first."""

    def to_json(self) -> dict[str, Any] | None: ...


class DiscoveryCounters(Protocol):
    @property
    def counters(self) -> Mapping[str, int]: ...


class DeskStatus:
    def __init__(self, node_id: str, desk: str, max_clock_drift_ms: int, log: StatusLog, peers: PeerReport,
                 membership: Membership, clocks: ClockSuspects, bridge: UploadState | None) -> None:
        self.node_id = node_id
        self.desk = desk
        self.max_clock_drift_ms = max_clock_drift_ms
        self.log = log
        self.peers = peers
        self.membership = membership
        self.clocks = clocks
        self.bridge = bridge
        self.discovery: DiscoveryCounters | None = None  # mDNS, once started
        self.snapshot: SnapshotView | None = None  # the patron and item snapshot
        self.refresh: RefreshState | None = None  # its refresh, on the bridge
        self.fetch: RefreshState | None = None  # its fetch from the peers (node/snapshot/fetch.py)
        self.file_import: ImportState | None = None  # a snapshot built from files (node/snapshot/importer.py)

    def report(self) -> dict[str, Any]:
        state = self.log.state
        pending = pending_uploads(self.log)
        applied = state.retired.get("applied", 0)
        refused = sum(n for status, n in state.retired.items() if status != "applied")
        for target, outcome in state.outcomes.items():
            if target in state.voided or not self.log.holds(target):
                continue
            if outcome.status == "applied":
                applied += 1
            else:
                refused += 1
        bridge = self._bridge_status()
        uploading = bool(bridge.pop("uploading"))
        return {
            "node": {
                "id": self.node_id, "desk": self.desk, "events": self.log.event_count,
                "seq": self.log.seq, "hlc": self.log.clock.last.to_wire(), "wall": wall_ms(),
                "storage": "failed" if self.log.failed else "ok", "failure": self.log.failed,
            },
            "peers": self.peers.status(),
            "epoch": {"number": self.log.epoch.number, "seal": self.log.epoch.seal or None,
                      "document_events": self.log.doc_events},
            "snapshot": self._snapshot_status(),
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
            "max_clock_drift_ms": self.max_clock_drift_ms,
            "clock_suspects": self.clocks.suspects(),
        }

    def _snapshot_status(self) -> dict[str, Any]:
        manifest = self.snapshot.manifest if self.snapshot is not None else None
        return {"version": manifest.version if manifest else None, "ils_time": manifest.ils_time if manifest else None,
                "patrons": manifest.patrons if manifest else 0, "items": manifest.items if manifest else 0,
                "loans": manifest.loans if manifest else 0,
                "refresh": self.refresh.to_json() if self.refresh is not None else None,
                "fetch": self.fetch.to_json() if self.fetch is not None else None,
                "file_import": self.file_import.to_json() if self.file_import is not None else None}

    def bridge_tip(self) -> dict[str, Any] | None:
        """This desk's bridge as its peer links report it in their tips; None when it is not the bridge."""
        b = self.bridge
        if b is None:
            return None
        return {"node": self.node_id, "desk": self.desk, "term": b.term, "reachable": b.reachable,
                "last_probe": b.last_probe, "uploading": b.uploading, "problem": b.problem}

    def _bridge_status(self) -> dict[str, Any]:
        """This desk's bridge, or the one its peers report (the highest term, then the freshest probe)."""
        tip = self.bridge_tip()
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
