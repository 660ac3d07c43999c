"""The ILS's loans as the desks see them now: the snapshot's open loans, less those the log has since ended.

A loan open at the ILS when the snapshot was taken is still open unless a desk has since checked the item
in or lent it again (an event after the snapshot's ILS time: one from before it is in the snapshot already).
Read by the warnings and the patron and item panels; pure over its two seams.
"""

from __future__ import annotations

from node.ports import CirculationView, SnapshotView
from node.snapshot.rows import IlsLoan


def _moved_since(log: CirculationView, item: str, since: int) -> bool:
    state = log.state
    if item in state.loans:
        return True
    checkin = state.returned.get(item)
    event = log.event(checkin) if checkin is not None else None
    return event is not None and event.at > since


def ils_loan(log: CirculationView, snapshot: SnapshotView | None, item: str) -> IlsLoan | None:
    if snapshot is None or snapshot.manifest is None:
        return None
    loan = snapshot.loan(item)
    if loan is None or _moved_since(log, item, snapshot.manifest.ils_time):
        return None
    return loan


def ils_loans_of(log: CirculationView, snapshot: SnapshotView | None, patron: str) -> list[IlsLoan]:
    if snapshot is None or snapshot.manifest is None:
        return []
    since = snapshot.manifest.ils_time
    return [loan for loan in snapshot.loans_of(patron) if not _moved_since(log, loan.item, since)]


def returned_since(log: CirculationView, snapshot: SnapshotView | None, patron: str) -> int:
    """The patron's ILS loans ended at a desk since the snapshot (the loan limit counts them off)."""
    if snapshot is None or snapshot.manifest is None:
        return 0
    since = snapshot.manifest.ils_time
    return sum(1 for loan in snapshot.loans_of(patron) if _moved_since(log, loan.item, since))
