"""What the desk shows of the log, as JSON: events, loans, conflicts, a patron's and an item's record, the
registered patrons, and the upload report. Shared by the API, the live feed and the web UI. Reads the log
only through `CirculationView`; writes nothing.
"""

from __future__ import annotations

from typing import Any

from node.crdt.conflicts import Conflict
from node.crdt.event import DESK_KINDS, Event
from node.crdt.state import Loan
from node.ports import CirculationView, SnapshotView
from node.snapshot.overlay import ils_loan, ils_loans_of
from node.snapshot.rows import Item, Patron


class CirculationViews:
    def __init__(self, log: CirculationView, snapshot: SnapshotView | None = None) -> None:
        self.log = log
        self.snapshot = snapshot

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
        out["detail"] = [self.event_json(e) for i in conflict.events if (e := self.log.event(i)) is not None]
        about = self.log.state.conflicts.get(conflict.about) if conflict.about else None
        if about is not None:  # the admins' answers disagree: show what they answered, and about what
            out["about_conflict"] = self.conflict_json(about)
        if conflict.node is not None:
            out["desk"] = self.log.desk_of(conflict.node)
            out["compared_with"] = sorted({d["desk"] for d in out["detail"] if d["node"] != conflict.node})
        return out

    def open_conflicts_json(self) -> list[dict[str, Any]]:
        return [self.conflict_json(c) for c in self.log.state.open_conflicts()]

    def loans_json(self, patron: str | None, item: str | None) -> list[dict[str, Any]]:
        """The open loans, of one patron and/or of one item if given."""
        return [self.loan_json(loan) for loan in self.log.state.loans.values()
                if (patron is None or loan.patron == patron) and (item is None or loan.item == item)]

    def patron_json(self, barcode: str) -> dict[str, Any]:
        state = self.log.state
        registration = state.registrations.get(barcode)
        event = self.log.event(registration) if registration else None
        name = event.body["name"] if event is not None else None
        paid = state.payments.get(barcode)
        known = self.snapshot.patron(barcode) if self.snapshot is not None else None
        return {
            "barcode": barcode,
            "name": name or (known.name if known else None),
            "ils": patron_facts(known) if known else None,
            "registered_offline": registration is not None,
            "loans": [self.loan_json(loan) for loan in state.loans_of(barcode)],
            "ils_loans": [{"item": loan.item, "due": loan.due}
                          for loan in ils_loans_of(self.log, self.snapshot, barcode)],
            "paid_offline": str(paid) if paid is not None else "0",
            "conflicts": [c.id for c in state.open_conflicts() if barcode in c.patrons],
        }

    def patron_search(self, q: str, limit: int = 50) -> list[dict[str, Any]]:
        """Patrons whose name matches: those registered offline first, then the snapshot's (accents and
        case ignored, each word a prefix)."""
        hits = self.registered_patrons(q.casefold())
        if self.snapshot is not None:
            hits += [{"barcode": p.barcode, "name": p.name, "source": "ILS snapshot", "ils": patron_facts(p)}
                     for p in self.snapshot.search(q, limit)]
        return hits[:limit]

    def registered_patrons(self, q: str) -> list[dict[str, Any]]:
        """Patrons registered offline whose name contains `q` (casefolded by the caller)."""
        hits = []
        for barcode, event_id in self.log.state.registrations.items():
            event = self.log.event(event_id)
            name = event.body["name"] if event is not None else ""
            if q in name.casefold():
                hits.append({"barcode": barcode, "name": name, "source": "registered offline"})
        return hits

    def borrower(self, item: str) -> str | None:
        """Who has the item: a loan made at a desk, else one open at the ILS (the snapshot's)."""
        loan = self.log.state.loans.get(item)
        if loan is not None:
            return loan.patron
        at_ils = ils_loan(self.log, self.snapshot, item)
        return at_ils.patron if at_ils else None

    def item_json(self, barcode: str) -> dict[str, Any]:
        state = self.log.state
        loan = state.loans.get(barcode)
        known = self.snapshot.item(barcode) if self.snapshot is not None else None
        at_ils = ils_loan(self.log, self.snapshot, barcode)
        return {
            "barcode": barcode,
            "ils": item_facts(known) if known else None,
            "loan": self.loan_json(loan) if loan else None,
            "ils_loan": {"patron": at_ils.patron, "due": at_ils.due} if at_ils else None,
            "returned_by": state.returned.get(barcode),
            "in_house_uses": state.in_house_uses.get(barcode, 0),
            "conflicts": [c.id for c in state.open_conflicts() if c.item == barcode],
        }

    def outcome_rows(self) -> list[dict[str, Any]]:
        """The upload report: the ILS's answer to every desk event in memory (the open work, and everything
        since the fold's base last moved), newest first."""
        state = self.log.state
        rows = []
        for event in reversed(self.log.ordered()):
            if event.problem is not None or event.kind not in DESK_KINDS or event.id in state.voided:
                continue
            outcome = self.log.outcome(event.id)
            answer = self.log.event(outcome.event) if outcome else None
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


def patron_facts(p: Patron) -> dict[str, Any]:
    """What the snapshot says of a patron, as the desk shows it."""
    return {"name": p.name, "category": p.category, "library": p.library, "expiry": p.expiry, "block": p.block,
            "owes": f"{p.owes_cents / 100:.2f}", "loans_at_ils": p.loans, "loan_limit": p.limit}


def item_facts(i: Item) -> dict[str, Any]:
    return {"title": i.title, "author": i.author, "callnumber": i.callnumber, "item_type": i.item_type,
            "library": i.library, "not_for_loan": i.not_for_loan, "lost": i.lost, "withdrawn": i.withdrawn,
            "holds": [{"patron": h.patron, "waiting": h.waiting, "pickup": h.pickup} for h in i.holds]}
