"""The bulk catch-up plan: which journal runs to ask which peer for, so each event arrives about once. Pure.

The document carries what desks write while they are linked, as they write it. Everything else a desk
lacks it asks a peer for in runs (per desk, a contiguous range: its hash chain and one signature vouch for
it), whatever the epochs: events a sealed epoch covers (epochs.py), the scans a desk wrote while it was
alone (a partition, a desk back after a week, they are in no document), the history for a desk that
joins with an empty journal. So a peer is asked for everything its version vector holds beyond ours;
between linked desks the document has usually brought it before the peer's vector says so.
Each desk's range is asked of one peer at a time, a window at a time, so that several links do not all
send the same events (as several Automerge links do); a window is re-asked elsewhere if the link asked
goes away.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

WINDOW = 20_000  # events of one desk asked of one peer at once


Range = tuple[str, int, int]  # node, first seq, last seq


class CatchUp:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._claims: dict[str, tuple[Hashable, int]] = {}  # node -> (link asked, last seq asked)
        self.seen: dict[str, int] = {}  # node -> the most any peer said it holds (hello, tip)

    def plan(self, peer: Hashable, peer_vector: Mapping[str, int], vector: Mapping[str, int],
             revoked: Mapping[str, int] | None = None) -> list[Range]:
        """What to ask `peer` (a link: two links to one desk ask apart) for now, and claim for it. Never past
        what a revoked desk may have written (`revoked`: node -> its last event accepted): a run holding one
        event more would be refused whole, and asked again, forever."""
        revoked = revoked or {}
        out: list[Range] = []
        for node, theirs in peer_vector.items():
            if theirs > self.seen.get(node, 0):
                self.seen[node] = theirs
        for node, theirs in sorted(peer_vector.items()):
            theirs = min(theirs, revoked.get(node, theirs))
            have = vector.get(node, 0)
            if theirs <= have or node in self._claims:
                continue
            last = min(theirs, have + self.window)
            self._claims[node] = (peer, last)
            out.append((node, have + 1, last))
        return out

    def done(self, peer: Hashable, node: str) -> None:
        """`peer` sent all it will of what it was asked for `node`."""
        if self._claims.get(node, ("",))[0] == peer:
            del self._claims[node]

    def behind(self, vector: Mapping[str, int], revoked: Mapping[str, int] | None = None) -> bool:
        """Whether a peer said it holds events this desk (holding `vector`) does not hold yet, and may take."""
        revoked = revoked or {}
        return any(min(seq, revoked.get(node, seq)) > vector.get(node, 0) for node, seq in self.seen.items())

    def release(self, peer: Hashable) -> None:
        """The link to `peer` went away: what it was asked may be asked of another."""
        for node in [n for n, (p, _) in self._claims.items() if p == peer]:
            del self._claims[node]
