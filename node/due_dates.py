"""When a loan made or renewed at the desk is due, unless staff type a date: the ILS's loan rules and calendar
from the snapshot (node/snapshot/loanrules.py) for the patron's category and the item's type; the desk's
`--loan-days` where the snapshot has no rule for them, or there is no snapshot."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from node.ports import SnapshotView
from node.snapshot.loanrules import due

DAY_MS = 86_400_000


class DueDates:
    def __init__(self, snapshot: SnapshotView | None, loan_days: int, branch: str | None = None,
                 fits: Callable[[int, int], bool] = lambda due, now: True) -> None:
        self.snapshot = snapshot
        self.loan_days = loan_days
        self.branch = branch  # the desk's library: its own rules first
        self.fits = fits  # whether a due date is inside the desk's bounds (else --loan-days)

    def default(self, patron: str | None, item: str, now_ms: int, *, renewal: bool = False) -> int:
        """The due date (ms) of a loan of `item` to `patron` made (or renewed) now."""
        snapshot = self.snapshot
        rules = snapshot.rules if snapshot is not None else None
        if snapshot is not None and rules is not None:
            p = snapshot.patron(patron) if patron else None
            i = snapshot.item(item)
            start = datetime.fromtimestamp(now_ms / 1000)  # desk time, naive: each day its own offset
            when = due(rules, p.category if p else None, i.item_type if i else None, start, library=self.branch,
                       renewal=renewal)
            if when is not None:
                due_ms = int(when.astimezone().timestamp() * 1000)
                if self.fits(due_ms, now_ms):
                    return due_ms
        return now_ms + self.loan_days * DAY_MS
