"""The ILS's loans as the desks see them now: the snapshot's open loans, less those the log has since ended.

A loan open at the ILS when the snapshot was taken is still open unless a desk has since lent the item
again (after the snapshot's ILS time) or checked it in: after that time, or before it but not yet applied
at the ILS then (the bridge uploads while it refreshes, so a return scanned earlier may reach the ILS after
the snapshot read it). A loan the log itself holds is shown and warned about as the log's. Read by the
warnings and the patron and item panels; pure over its two seams.
"""

from __future__ import annotations

from node.ports import CirculationView, SnapshotView
from node.snapshot.rows import IlsLoan


def _ended_since(log: CirculationView, item: str, since: int) -> bool:
    state = log.state
    loan = state.loans.get(item)
    if loan is not None and (loan.at or 0) > since:
        return True
    checkin = state.returned.get(item)
    event = log.event(checkin) if checkin is not None else None
    if event is None or (loan is not None and (loan.at or 0) > event.at):
        return False
    if event.at > since:
        return True
    outcome = log.outcome(event.id)
    if outcome is None:
        return True  # not at the ILS yet: the snapshot still shows the loan it ends
    answer = log.event(outcome.event)
    return answer is not None and answer.at > since


def ils_loan(log: CirculationView, snapshot: SnapshotView | None, item: str) -> IlsLoan | None:
    """The ILS's loan of the item that is still open and not the log's own."""
    if snapshot is None or snapshot.manifest is None or item in log.state.loans:
        return None
    loan = snapshot.loan(item)
    if loan is None or _ended_since(log, item, snapshot.manifest.ils_time):
        return None
    return loan


def ils_loans_of(log: CirculationView, snapshot: SnapshotView | None, patron: str) -> list[IlsLoan]:
    if snapshot is None or snapshot.manifest is None:
        return []
    since, loans = snapshot.manifest.ils_time, log.state.loans
    return [loan for loan in snapshot.loans_of(patron)
            if loan.item not in loans and not _ended_since(log, loan.item, since)]


def returned_since(log: CirculationView, snapshot: SnapshotView | None, patron: str) -> int:
    """The patron's ILS loans a desk has ended since the snapshot (the loan limit counts them off)."""
    if snapshot is None or snapshot.manifest is None:
        return 0
    since = snapshot.manifest.ils_time
    return sum(1 for loan in snapshot.loans_of(patron) if _ended_since(log, loan.item, since))


def returned_unseen(log: CirculationView, item: str) -> bool:
    """A desk checked the item in and the ILS has not applied it yet: what the ILS says of it now is stale."""
    checkin = log.state.returned.get(item)
    return checkin is not None and item not in log.state.loans and log.outcome(checkin) is None
