"""What staff are told at the desk as they scan, from what the log knows: the item is already on loan (a
checkout that needs the deliberate override), it was not lent since the outage (a checkin or renewal the
ILS will settle), the patron was already registered offline; and, once the desk holds a snapshot of the
ILS (node/snapshot/), what the ILS would have said: the card is unknown or expired, the patron is blocked,
owes more than the library allows or has reached the loan limit (counting the loans made at every desk
since the snapshot), the item is unknown, not for loan, or held for someone else; at checkin, a hold waiting
for a patron (the holds shelf), or that it goes to another library (`--branch`: a hold to be picked up
there, or the item's home). Loans open at the ILS when the snapshot was taken count as loans until a
desk ends them (snapshot/overlay.py).

The bridge applies loans through Koha's offline service, which checks none of this, so these checks are
the only ones a loan made during an outage gets. A warning is `{code, message}`, and `blocking: "yes"` when
the scan needs the deliberate override, which the event records (node/api/circulation.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from node.live_lookup import Live
from node.ports import CirculationView, SnapshotView
from node.snapshot.overlay import ils_loan, returned_since, returned_unseen
from node.snapshot.rows import IlsLoan

ScanWarning = dict[str, str]


def warning(code: str, message: str, **extra: str) -> ScanWarning:
    return {"code": code, "message": message, **extra}


def blocking(code: str, message: str, **extra: str) -> ScanWarning:
    """A warning the scan needs the override for; `extra`: the facts the desk screen words it with."""
    return {"code": code, "message": message, "blocking": "yes", **extra}


class ScanWarnings:
    def __init__(self, log: CirculationView, snapshot: SnapshotView | None = None, fines_limit_cents: int = 500,
                 today: Callable[[], str] | None = None, branch: str | None = None) -> None:
        self.log = log
        self.snapshot = snapshot
        self.fines_limit_cents = fines_limit_cents
        self.branch = branch  # the library this desk is at (Koha's library_id): items of another go back
        self._today = today or (lambda: datetime.now(UTC).astimezone().date().isoformat())

    def checkout(self, patron: str, item: str, live: Live | None = None) -> list[ScanWarning]:
        """`live`: what the ILS said just now of what the snapshot does not hold (live_lookup.py)."""
        live = live or Live()
        return self._on_loan(patron, item, live) + self._patron(patron, live) + self._item(patron, item, live)

    def _held(self) -> SnapshotView | None:
        return self.snapshot if self.snapshot is not None and self.snapshot.manifest is not None else None

    def _patron(self, barcode: str, live: Live) -> list[ScanWarning]:
        held = self._held()
        p = held.patron(barcode) if held is not None else None
        since = held.manifest.ils_time if held is not None and held.manifest is not None else 0
        if p is None and live.patron is not None:
            p, since = live.patron, _now_ms()  # the ILS's word now: nothing at the desks since
        if p is None:
            if barcode in self.log.state.registrations or (held is None and live.patron_known is None):
                return []
            day = self._today() if live.patron_known is False else _day(since)
            return [warning("unknown_patron", f"patron {barcode} is not known to the ILS (as of {day}): "
                            "check the card", blocking="no", patron=barcode, date=day)]
        out = []
        if p.block:
            out.append(blocking("patron_blocked", f"{p.name} is blocked: {p.block}", name=p.name, reason=p.block))
        if p.expiry and p.expiry < self._today():
            out.append(blocking("card_expired", f"{p.name}'s card expired on {p.expiry}", name=p.name,
                                date=p.expiry))
        if p.owes_cents > self.fines_limit_cents:  # less what was paid at the desks since the snapshot
            owes = p.owes_cents - self._paid_since(barcode, since)
            if owes > self.fines_limit_cents:
                amount, limit = f"{owes / 100:.2f}", f"{self.fines_limit_cents / 100:.2f}"
                out.append(blocking("fines_over_limit", f"{p.name} owes {amount}, more than the library's limit "
                                    f"of {limit}", name=p.name, amount=amount, limit=limit))
        if p.limit is not None:
            lent_since = sum(1 for loan in self.log.state.loans_of(barcode) if (loan.at or 0) > since)
            counted = held is not None and held.manifest is not None and held.manifest.loans and held.patron(barcode)
            ended = returned_since(self.log, held, barcode) if counted else 0
            if p.loans + lent_since - ended >= p.limit:
                loans = str(p.loans + lent_since - ended)
                out.append(blocking("loan_limit_reached", f"{p.name} has {loans} loans, the limit is {p.limit} "
                                    "(loans at the ILS and at every desk since the snapshot)", name=p.name,
                                    loans=loans, limit=str(p.limit)))
        return out

    def _paid_since(self, patron: str, since: int) -> int:
        """Cents paid at any desk after `since` (asked only of a patron over the limit: a pass over memory).
        A payment stays in memory until the fold's base moves past it, 10,000 events on; the next refresh
        has it in the ILS's balance by then, unless the ILS stayed away all that time."""
        voided = self.log.state.voided
        paid = Decimal(0)
        for event in self.log.ordered():
            if (event.kind == "payment" and event.problem is None and event.at > since
                    and event.body.get("patron") == patron and event.id not in voided):
                with contextlib.suppress(ArithmeticError, TypeError, ValueError):
                    paid += Decimal(event.body["amount"])
        return int(paid * 100)

    def _item(self, patron: str, barcode: str, live: Live) -> list[ScanWarning]:
        held = self._held()
        if held is not None and held.manifest is not None and held.manifest.items == 0:
            held = None  # a snapshot of patrons only (from a file without items): it says nothing of items
        i = held.item(barcode) if held is not None else None
        if i is None:
            i = live.item
        if i is None:
            if held is None and live.item_known is None:
                return []
            return [warning("item_unknown", f"item {barcode} is not known to the ILS: check the barcode",
                            blocking="no", item=barcode)]
        out = []
        if i.not_for_loan or i.lost or i.withdrawn:
            why = "not for loan" if i.not_for_loan else "lost" if i.lost else "withdrawn"
            out.append(blocking("item_not_for_loan", f"“{i.title}” ({barcode}) is {why}", title=i.title,
                                reason=why.replace(" ", "_")))
        first = i.holds[0] if i.holds else None
        if first is not None and first.patron != patron:
            out.append(blocking("item_on_hold", f"“{i.title}” is on hold for patron {first.patron}", title=i.title,
                                patron=first.patron))
        return out

    def _on_loan(self, patron: str, item: str, live: Live) -> list[ScanWarning]:
        loan = self.log.state.loans.get(item)
        if loan is None:
            return self._on_ils_loan(patron, item, live)
        if loan.patron == patron:
            return [{"code": "already_on_loan_to_patron", "blocking": "yes",
                     "message": f"item {item} is already on loan to this patron: renew it instead"}]
        where = f" (lent at {self.log.desk_of(loan.node)})" if loan.node else ""
        return [{"code": "item_on_loan", "blocking": "yes",
                 "message": f"item {item} is on loan to patron {loan.patron}{where}"}]

    def _on_ils_loan(self, patron: str, item: str, live: Live) -> list[ScanWarning]:
        """Lent online before the outage (the snapshot's loans, or the ILS's word now), and not returned at a
        desk since."""
        loan = ils_loan(self.log, self.snapshot, item)
        if loan is None and live.holder is not None and not returned_unseen(self.log, item):
            loan = IlsLoan(item, live.holder, None)
        if loan is None:
            return []
        due = f", due {loan.due}" if loan.due else ""
        if loan.patron == patron:
            return [blocking("already_on_loan_to_patron", f"item {item} is already on loan to this patron at the "
                             f"ILS{due}: renew it instead")]
        return [blocking("item_on_ils_loan", f"item {item} is on loan to patron {loan.patron} at the ILS{due}",
                         patron=loan.patron, date=loan.due or "")]

    def checkin(self, item: str) -> list[ScanWarning]:
        return self._returned(item) + self._hold(item)

    def _hold(self, barcode: str) -> list[ScanWarning]:
        """Where the returned item goes: the holds shelf here, another library for a hold there, or home."""
        i = self.snapshot.item(barcode) if self.snapshot is not None else None
        if i is None:
            return []
        if i.holds:
            h = i.holds[0]
            if h.pickup and self.branch and h.pickup != self.branch:
                return [warning("hold_in_transit", f"hold for patron {h.patron}: send “{i.title}” to {h.pickup}",
                                blocking="no", patron=h.patron, title=i.title, branch=h.pickup)]
            where = f" (pick-up at {h.pickup})" if h.pickup else ""
            return [warning("hold_found", f"hold waiting for patron {h.patron}{where}: put it on the holds shelf",
                            blocking="no", patron=h.patron, title=i.title)]
        if i.library and self.branch and i.library != self.branch:
            return [warning("in_transit", f"in transit to {i.library}: send “{i.title}” home", blocking="no",
                            title=i.title, branch=i.library)]
        return []

    def _returned(self, item: str) -> list[ScanWarning]:
        state = self.log.state
        if item in state.loans or ils_loan(self.log, self.snapshot, item) is not None:
            return []
        if item in state.returned:
            return [{"code": "not_on_loan", "blocking": "no",
                     "message": f"item {item} was already checked in since the outage"}]
        if self.snapshot is not None and self.snapshot.manifest is not None and self.snapshot.manifest.loans:
            return [warning("not_lent", f"item {item} was not on loan at the ILS nor lent since the outage",
                            blocking="no", date=_day(self.snapshot.manifest.ils_time))]
        return [{"code": "no_offline_loan", "blocking": "no",
                 "message": f"no loan of item {item} since the outage; the ILS will check it in"}]

    def renewal(self, item: str) -> list[ScanWarning]:
        if item in self.log.state.loans or ils_loan(self.log, self.snapshot, item) is not None:
            return []
        return [{"code": "no_offline_loan", "blocking": "no",
                 "message": f"no loan of item {item} since the outage; the ILS will renew it if it can"}]

    def registration(self, patron: str) -> list[ScanWarning]:
        if patron in self.log.state.registrations:
            return [warning("already_registered", f"patron {patron} was already registered offline")]
        return []


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _day(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).astimezone().date().isoformat()
    except (ValueError, OverflowError, OSError):  # a time no calendar shows: said as it is
        return str(ms)
