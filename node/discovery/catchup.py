"""The bulk catch-up plan: which journal runs to ask which peer for, so each event arrives about once. Pure.

Events a sealed epoch covers (epochs.py) no longer travel in any document: a desk that lacks them asks a
peer for them in runs (per desk, a contiguous range: its hash chain and one signature vouch for it). A
desk behind in epochs (back after a week, or joining with an empty journal) asks for everything the peer
holds, and so does a desk ahead of it (the one behind may hold what nobody else does, or a rival seal
that wins); two desks in the same epoch only for what the epoch's `upto` covers, the rest comes in the
document. Each desk's range is asked of one peer at a time, a window at a time, so that several links do
not all send the same events (as several Automerge links do); a window is re-asked elsewhere if the link
asked goes away.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from node.crdt.epochs import Epoch, EpochTag

WINDOW = 20_000  # events of one desk asked of one peer at once


Range = tuple[str, int, int]  # node, first seq, last seq


class CatchUp:
    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._claims: dict[str, tuple[Hashable, int]] = {}  # node -> (link asked, last seq asked)
        self.seen: dict[str, int] = {}  # node -> the most any peer said it holds (hello, tip)

    def plan(self, peer: Hashable, peer_vector: Mapping[str, int], peer_epoch: EpochTag,
             vector: Mapping[str, int], epoch: Epoch) -> list[Range]:
        """What to ask `peer` (a link: two links to one desk ask apart) for now, and claim for it."""
        same = peer_epoch == epoch.tag  # else no document is shared: what it holds comes in runs (even from a
        # desk behind us: what only it holds it would carry into the new document once it moves, but a rival
        # seal it holds may be the one that wins, and no seal moves it there but by a run)
        out: list[Range] = []
        for node, theirs in peer_vector.items():
            if theirs > self.seen.get(node, 0):
                self.seen[node] = theirs
        for node, theirs in sorted(peer_vector.items()):
            limit = min(theirs, epoch.upto.get(node, 0)) if same else theirs
            have = vector.get(node, 0)
            if limit <= have or node in self._claims:
                continue
            last = min(limit, have + self.window)
            self._claims[node] = (peer, last)
            out.append((node, have + 1, last))
        return out

    def done(self, peer: Hashable, node: str) -> None:
        """`peer` sent all it will of what it was asked for `node`."""
        if self._claims.get(node, ("",))[0] == peer:
            del self._claims[node]

    def behind(self, vector: Mapping[str, int]) -> bool:
        """Whether a peer said it holds events this desk (holding `vector`) does not hold yet."""
        return any(seq > vector.get(node, 0) for node, seq in self.seen.items())

    def release(self, peer: Hashable) -> None:
        """The link to `peer` went away: what it was asked may be asked of another."""
        for node in [n for n, (p, _) in self._claims.items() if p == peer]:
            del self._claims[node]
