"""Desks whose clocks are off: measured over this desk's peer links against the cluster's median clock, and
shown by the log (an open `clock_ahead` conflict, node/crdt/clocks.py). `/status.clock_suspects` lists them;
the bridge corrects the times it gives the ILS by `offset`.
"""

from __future__ import annotations

from typing import Any

from node.ports import CirculationView, LinkedPeers


class ClockSuspects:
    def __init__(self, node_id: str, log: CirculationView, peers: LinkedPeers, max_drift_ms: int) -> None:
        self.node_id = node_id
        self.log = log
        self.peers = peers
        self.bound = max_drift_ms

    def measured(self) -> dict[str, int]:
        """How far each linked desk's clock, and this desk's, reads from the cluster's median clock, as the
        peer links measure it. Empty with fewer than three desks: with two, nobody can tell which is off."""
        offsets = {self.node_id: 0}
        for info in self.peers.linked():
            offsets[info.node] = info.clock_offset_ms
        if len(offsets) < 3:
            return {}
        values = sorted(offsets.values())
        mid = len(values) // 2
        median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) // 2
        return {node: offset - median for node, offset in offsets.items()}

    def offset(self, node: str) -> tuple[int, str] | None:
        """How far `node`'s clock reads ahead of the cluster's (negative: behind) when it is off by more
        than the drift bound, and how that is known: measured over this desk's links where it can be, else
        as the log shows it (an open clock_ahead conflict). What the bridge corrects ILS times by."""
        measured = self.measured()
        if node in measured:
            offset = measured[node]
            return (offset, "link") if abs(offset) > self.bound else None
        flagged = self.log.state.clocks.flagged.get(node)
        return (flagged.offset_ms or 0, "log") if flagged is not None else None

    def suspects(self) -> list[dict[str, Any]]:
        """Desks whose clocks are off by more than the drift bound: measured over the links (`link`), shown
        by the log (`log`), or both. With two desks the links cannot say which one is off: `undecided`."""
        bound = self.bound
        suspects: dict[str, dict[str, Any]] = {}

        def entry(node: str, offset: int) -> dict[str, Any]:
            return suspects.setdefault(node, {"node": node, "desk": self.log.desk_of(node), "offset_ms": offset,
                                              "sources": [], "this_desk": node == self.node_id,
                                              "undecided": False})

        for node, offset in self.measured().items():
            if abs(offset) > bound:
                entry(node, offset)["sources"].append("link")
        flagged = self.log.state.clocks.flagged
        for node, conflict in flagged.items():
            found = entry(node, conflict.offset_ms or 0)
            found["sources"].append("log")
            found["conflict"] = conflict.id
        links = self.peers.linked()
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
