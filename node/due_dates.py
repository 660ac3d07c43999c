"""When a loan made or renewed at the desk is due, unless staff type a date: the ILS's loan rules and calendar
from the snapshot (node/snapshot/loanrules.py) for the patron's category and the item's type; the desk's
`--loan-days` where the snapshot has no rule for them, or there is no snapshot."""

from __future__ import annotations

from datetime import datetime

from node.ports import SnapshotView
from node.snapshot.loanrules import due

DAY_MS = 86_400_000


class DueDates:
    def __init__(self, snapshot: SnapshotView | None, loan_days: int) -> None:
        self.snapshot = snapshot
        self.loan_days = loan_days

    def default(self, patron: str | None, item: str, now_ms: int) -> int:
        """The due date (ms) of a loan of `item` to `patron` starting now."""
        snapshot = self.snapshot
        rules = snapshot.rules if snapshot is not None else None
        if snapshot is not None and rules is not None:
            p = snapshot.patron(patron) if patron else None
            i = snapshot.item(item)
            start = datetime.fromtimestamp(now_ms / 1000).astimezone()
            when = due(rules, p.category if p else None, i.item_type if i else None, start)
            if when is not None:
                return int(when.timestamp() * 1000)
        return now_ms + self.loan_days * DAY_MS
