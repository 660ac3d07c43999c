"""The simulated ILS's circulation: patrons, items, loans, holds, fines, and the ledger.

Both protocol front ends (Koha's offline service and SIP2) call these methods, so a loan made over one is
seen by the other. Every processed operation ends with `record()`, which writes the ledger row and commits:
the ledger and the library can never disagree.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from node.ilsbridge.sim import schema
from node.ilsbridge.sim.rules import (
    Calendar,
    LoanRule,
    as_utc,
    due_date,
    format_timestamp,
    parse_timestamp,
    rfc3339,
)
from node.ilsbridge.sim.seed import SeedSpec, seed

DB_NAME = "ils.sqlite3"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssueResult:
    due: datetime
    renewed: bool
    returned_from: str | None  # cardnumber of the patron the item was silently returned from


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _ts(text: str | None) -> datetime | None:
    return None if text is None else parse_timestamp(text)


class Library:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        settings = dict(db.execute("SELECT key, value FROM settings").fetchall())
        self.library_id: str = settings["library_id"]
        self.library_name: str = settings["library_name"]
        self.today_seeded = date.fromisoformat(settings["today"])
        closed = frozenset(int(d) for d in settings["closed_weekdays"].split(",") if d)
        holidays = frozenset(date.fromisoformat(r[0]) for r in db.execute("SELECT day FROM holidays"))
        self.calendar = Calendar(closed, holidays)
        self.rules = {
            (r["category_id"], r["item_type_id"]): LoanRule(r["loan_days"], r["renewals_allowed"])
            for r in db.execute("SELECT * FROM loan_rules")
        }
        self.categories = {r["category_id"]: dict(r) for r in db.execute("SELECT * FROM categories")}
        self.media_types = {
            r["item_type_id"]: r["media_type"] for r in db.execute("SELECT * FROM item_types")
        }

    @classmethod
    def open(cls, data_dir: Path, spec: SeedSpec) -> Library:
        """Open the library in `data_dir`, seeding it first unless it was already seeded with `spec`."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / DB_NAME
        if path.exists():
            db: sqlite3.Connection | None = None
            try:
                db = schema.connect(str(path))
                row = db.execute("SELECT value FROM settings WHERE key = 'seed_key'").fetchone()
            except sqlite3.DatabaseError:
                row = None
            if db is not None and row is not None and row[0] == spec.key:
                return cls(db)
            if db is not None:
                db.close()
            log.warning("%s holds another library (or none): seeding a new one", path)
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        db = schema.connect(str(path))
        seed(db, spec)
        return cls(db)

    def close(self) -> None:
        self.db.close()

    # --- lookups ------------------------------------------------------------------------------------------

    def patron(self, cardnumber: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM patrons WHERE cardnumber = ?", (cardnumber,)).fetchone()

    def patron_by_id(self, patron_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM patrons WHERE patron_id = ?", (patron_id,)).fetchone()

    def item(self, barcode: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM items WHERE barcode = ?", (barcode,)).fetchone()

    def open_loan(self, item_id: int) -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT c.*, p.cardnumber FROM checkouts c JOIN patrons p USING (patron_id) WHERE c.item_id = ?",
            (item_id,),
        ).fetchone()

    def loans_of(self, patron_id: int) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT c.*, i.barcode FROM checkouts c JOIN items i USING (item_id) WHERE c.patron_id = ?"
            " ORDER BY c.checkout_id",
            (patron_id,),
        ).fetchall()

    def holds_on(self, item_id: int) -> list[sqlite3.Row]:
        """Holds on the item, the one being served first: waiting on the shelf, then by priority."""
        return self.db.execute(
            "SELECT h.*, p.cardnumber FROM holds h JOIN patrons p USING (patron_id) WHERE h.item_id = ?"
            " ORDER BY h.status IS NULL, h.priority, h.hold_id",
            (item_id,),
        ).fetchall()

    def holds_of(self, patron_id: int) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT h.*, i.barcode FROM holds h JOIN items i USING (item_id) WHERE h.patron_id = ?",
            (patron_id,),
        ).fetchall()

    def rule(self, patron: sqlite3.Row, item: sqlite3.Row) -> LoanRule:
        return self.rules.get((patron["category_id"], item["item_type_id"]), LoanRule(14, 1))

    def due_for(self, patron: sqlite3.Row, item: sqlite3.Row, start: datetime) -> datetime:
        return due_date(start, self.rule(patron, item), self.calendar)

    # --- what a desk would be warned about (checked by SIP2 unless no-block; never by the offline service) -

    def patron_blocks(self, patron: sqlite3.Row, at: datetime) -> list[str]:
        day = as_utc(at).date().isoformat()
        blocks = []
        if patron["debarred_until"] and patron["debarred_until"] >= day:
            blocks.append("Patron is restricted.")
        if patron["lost_card"]:
            blocks.append("Patron's card is reported lost.")
        if patron["gone_no_address"]:
            blocks.append("Patron's address is unconfirmed.")
        if patron["expiry_date"] < day:
            blocks.append("Patron's card has expired.")
        category = self.categories.get(patron["category_id"], {})
        if patron["fines_cents"] > category.get("fine_limit_cents", 1000):
            blocks.append("Patron has outstanding fines.")
        if len(self.loans_of(patron["patron_id"])) >= category.get("loan_limit", 20):
            blocks.append("Patron has reached the loan limit.")
        return blocks

    def item_blocks(self, item: sqlite3.Row, patron: sqlite3.Row) -> list[str]:
        blocks = []
        if item["not_for_loan"]:
            blocks.append("Item is not for loan.")
        loan = self.open_loan(item["item_id"])
        if loan is not None and loan["patron_id"] != patron["patron_id"]:
            blocks.append("Item is checked out to another patron.")
        holds = self.holds_on(item["item_id"])
        if holds and holds[0]["patron_id"] != patron["patron_id"]:
            blocks.append("Item is on hold for another patron.")
        return blocks

    # --- circulation (no commit: `record` commits) ----------------------------------------------------------

    def issue(
        self, patron: sqlite3.Row, item: sqlite3.Row, at: datetime, due: datetime | None = None
    ) -> IssueResult:
        """Koha's semantics: an item on loan to someone else is returned first; issuing to the patron who
        already has it renews it."""
        loan = self.open_loan(item["item_id"])
        if loan is not None and loan["patron_id"] == patron["patron_id"]:
            new_due = due or self.due_for(patron, item, at)
            self.db.execute(
                "UPDATE checkouts SET due_date = ?, renewals_count = renewals_count + 1,"
                " last_renewed_date = ? WHERE checkout_id = ?",
                (format_timestamp(new_due), format_timestamp(at), loan["checkout_id"]),
            )
            return IssueResult(new_due, renewed=True, returned_from=None)
        returned_from = None
        if loan is not None:
            self._close(loan, at)
            returned_from = loan["cardnumber"]
        new_due = due or self.due_for(patron, item, at)
        self.db.execute(
            "INSERT INTO checkouts (patron_id, item_id, library_id, checkout_date, due_date)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                patron["patron_id"],
                item["item_id"],
                self.library_id,
                format_timestamp(at),
                format_timestamp(new_due),
            ),
        )
        # The patron's own hold on this item is filled by the loan.
        self.db.execute(
            "DELETE FROM holds WHERE item_id = ? AND patron_id = ?", (item["item_id"], patron["patron_id"])
        )
        return IssueResult(new_due, renewed=False, returned_from=returned_from)

    def return_item(self, item: sqlite3.Row, at: datetime) -> sqlite3.Row | None:
        """Close the item's loan; the closed loan (with the borrower's cardnumber), or None if not on loan."""
        loan = self.open_loan(item["item_id"])
        if loan is not None:
            self._close(loan, at)
        return loan

    def _close(self, loan: sqlite3.Row, at: datetime) -> None:
        self.db.execute(
            "INSERT INTO old_checkouts SELECT checkout_id, patron_id, item_id, library_id, checkout_date,"
            " due_date, renewals_count, last_renewed_date, ? FROM checkouts WHERE checkout_id = ?",
            (format_timestamp(at), loan["checkout_id"]),
        )
        self.db.execute("DELETE FROM checkouts WHERE checkout_id = ?", (loan["checkout_id"],))

    def renew(
        self,
        loan: sqlite3.Row,
        patron: sqlite3.Row,
        item: sqlite3.Row,
        at: datetime,
        due: datetime | None = None,
    ) -> datetime:
        """Extend a loan: the new period counts from the old due date, or from the renewal if later."""
        old_due = parse_timestamp(loan["due_date"])
        new_due = due or self.due_for(patron, item, max(old_due, as_utc(at)))
        self.db.execute(
            "UPDATE checkouts SET due_date = ?, renewals_count = renewals_count + 1, last_renewed_date = ?"
            " WHERE checkout_id = ?",
            (format_timestamp(new_due), format_timestamp(at), loan["checkout_id"]),
        )
        return new_due

    def pay(self, patron: sqlite3.Row, cents: int, at: datetime, protocol: str) -> int:
        """Record a payment; the patron's remaining balance in cents (negative: credit)."""
        self.db.execute(
            "UPDATE patrons SET fines_cents = fines_cents - ? WHERE patron_id = ?",
            (cents, patron["patron_id"]),
        )
        self.db.execute(
            "INSERT INTO payments (patron_id, amount_cents, paid_at, protocol) VALUES (?, ?, ?, ?)",
            (patron["patron_id"], cents, format_timestamp(at), protocol),
        )
        row = self.db.execute(
            "SELECT fines_cents FROM patrons WHERE patron_id = ?", (patron["patron_id"],)
        ).fetchone()
        return int(row[0])

    def create_patron(self, cardnumber: str, surname: str, firstname: str, category_id: str, library_id: str,
                      at: datetime) -> int:
        """A new patron, enrolled today for the category's usual year, and recorded in the ledger."""
        enrolled = as_utc(at).date()
        cur = self.db.execute(
            "INSERT INTO patrons (cardnumber, surname, firstname, category_id, library_id, date_enrolled,"
            " expiry_date) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cardnumber, surname, firstname, category_id, library_id, enrolled.isoformat(),
             enrolled.replace(year=enrolled.year + 1).isoformat() if (enrolled.month, enrolled.day) != (2, 29)
             else date(enrolled.year + 1, 3, 1).isoformat()),
        )
        patron_id = int(cur.lastrowid or 0)
        self.record("rest", "register", format_timestamp(at), cardnumber, None, None, "Created.")
        return patron_id

    def restrict(self, cardnumber: str, until: str | None, comment: str | None) -> bool:
        """Staff at the ILS add a restriction (until a date, or for good: None); False if there is no such
        patron."""
        cur = self.db.execute(
            "UPDATE patrons SET debarred_until = ?, debarred_comment = ? WHERE cardnumber = ?",
            (until or "9999-12-31", comment, cardnumber),
        )
        self.db.commit()
        return cur.rowcount == 1

    def add_pending(
        self,
        userid: str,
        branchcode: str,
        timestamp: str,
        action: str,
        barcode: str,
        cardnumber: str,
        amount: str,
    ) -> None:
        self.db.execute(
            "INSERT INTO pending_offline_operations (userid, branchcode, timestamp, action, barcode,"
            " cardnumber, amount) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (userid, branchcode, timestamp, action, barcode, cardnumber, amount),
        )

    def pending(self) -> list[dict[str, Any]]:
        return [
            dict(r) for r in self.db.execute("SELECT * FROM pending_offline_operations ORDER BY operationid")
        ]

    def record(
        self,
        protocol: str,
        action: str,
        timestamp: str | None,
        cardnumber: str | None,
        barcode: str | None,
        amount: str | None,
        outcome: str,
    ) -> int:
        """Append to the ledger and commit everything the operation changed."""
        cur = self.db.execute(
            "INSERT INTO ledger (protocol, action, timestamp, cardnumber, barcode, amount, outcome,"
            " recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                protocol,
                action,
                timestamp,
                cardnumber or None,
                barcode or None,
                amount,
                outcome,
                format_timestamp(now()),
            ),
        )
        self.db.commit()
        return int(cur.lastrowid or 0)

    def rollback(self) -> None:
        """Discard what a failed operation changed so far (it was never recorded, so it never happened)."""
        self.db.rollback()

    # --- views for /sim/* ----------------------------------------------------------------------------------

    def ledger(self, after: int = 0) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT seq, protocol, action, timestamp, cardnumber, barcode, amount, outcome FROM ledger"
            " WHERE seq > ? ORDER BY seq",
            (after,),
        )
        return [dict(r) for r in rows]

    def loans(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT i.barcode, p.cardnumber, c.due_date FROM checkouts c JOIN items i USING (item_id)"
            " JOIN patrons p USING (patron_id) ORDER BY c.checkout_id"
        )
        return [{"barcode": r[0], "cardnumber": r[1], "due": rfc3339(_ts(r[2]))} for r in rows]

    # --- REST pages -----------------------------------------------------------------------------------------

    def page(
        self, kind: str, filters: dict[str, str], page: int, per_page: int, after: int | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total matching rows, the rows of `page`) of patrons, items or checkouts, in Koha's names.
        `after`: only rows whose id is greater (Koha's `q={"patron_id": {">": n}}`, keyset paging)."""
        id_col, allowed = _KINDS[kind][1:]
        where: list[str] = [] if after is None else [f"{id_col} > ?"]
        args: list[str | int] = [] if after is None else [after]
        for name, value in filters.items():
            column = allowed.get(name)
            if column is not None:
                where.append(f"{column} = ?")
                args.append(value)
        clause = (" WHERE " + " AND ".join(where)) if where else ""
        base = _FROM[kind]
        counted = _COUNT_FROM.get(kind, base) if all(w.startswith("i.") for w in where) else base
        total = self.db.execute(f"SELECT COUNT(*) {counted}{clause}", args).fetchone()[0]
        limit = "" if per_page < 0 else " LIMIT ? OFFSET ?"
        limit_args: list[str | int] = [] if per_page < 0 else [per_page, (page - 1) * per_page]
        rows = self.db.execute(
            f"SELECT {_SELECT[kind]} {base}{clause} ORDER BY {id_col}{limit}", args + limit_args
        ).fetchall()
        render = getattr(self, f"_render_{kind}")
        return int(total), render(rows)

    def _render_patrons(self, rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
        day = now().date().isoformat()
        out = []
        for r in rows:
            debarred = r["debarred_until"] if r["debarred_until"] and r["debarred_until"] >= day else None
            category = self.categories.get(r["category_id"], {})
            out.append(
                {
                    "patron_id": r["patron_id"],
                    "cardnumber": r["cardnumber"],
                    "surname": r["surname"],
                    "firstname": r["firstname"],
                    "category_id": r["category_id"],
                    "library_id": r["library_id"],
                    "date_of_birth": r["date_of_birth"],
                    "date_enrolled": r["date_enrolled"],
                    "expiry_date": r["expiry_date"],
                    "email": r["email"],
                    "phone": r["phone"],
                    "restricted": bool(debarred or r["lost_card"] or r["gone_no_address"]),
                    "patron_card_lost": bool(r["lost_card"]),
                    "incorrect_address": bool(r["gone_no_address"]),
                    "account_balance": r["fines_cents"] / 100,
                    "checkouts_count": r["checkouts_count"],
                    # extensions (see rest.py)
                    "restriction": None
                    if debarred is None
                    else {
                        "type": "MANUAL",
                        "expiration_date": None if debarred == "9999-12-31" else debarred,
                        "comment": r["debarred_comment"],
                    },
                    "checkouts_limit": category.get("loan_limit"),
                }
            )
        return out

    def _render_items(self, rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
        holds: dict[int, list[dict[str, Any]]] = {}
        if rows:
            lo, hi = rows[0]["item_id"], rows[-1]["item_id"]
            for h in self.db.execute(
                "SELECT h.*, p.cardnumber FROM holds h JOIN patrons p USING (patron_id)"
                " WHERE h.item_id BETWEEN ? AND ?"
                " ORDER BY h.item_id, h.status IS NULL, h.priority, h.hold_id",
                (lo, hi),
            ):
                holds.setdefault(h["item_id"], []).append(
                    {
                        "hold_id": h["hold_id"],
                        "patron_id": h["patron_id"],
                        "cardnumber": h["cardnumber"],
                        "priority": h["priority"],
                        "status": h["status"],
                        "hold_date": h["hold_date"],
                        "pickup_library_id": h["pickup_library_id"],
                    }
                )
        out = []
        for r in rows:
            checked_out = r["checkout_date"]
            out.append(
                {
                    "item_id": r["item_id"],
                    "biblio_id": r["biblio_id"],
                    "external_id": r["barcode"],
                    "callnumber": r["callnumber"],
                    "item_type_id": r["item_type_id"],
                    "home_library_id": r["home_library_id"],
                    "holding_library_id": r["home_library_id"],
                    "location": r["location"],
                    "not_for_loan_status": r["not_for_loan"],
                    "lost_status": 0,
                    "withdrawn": 0,
                    "damaged_status": 0,
                    "checked_out_date": checked_out[:10] if checked_out else None,
                    # extensions (see rest.py)
                    "title": r["title"],
                    "author": r["author"],
                    "holds": holds.get(r["item_id"], []),
                }
            )
        return out

    def _render_checkouts(self, rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
        return [
            {
                "checkout_id": r["checkout_id"],
                "patron_id": r["patron_id"],
                "item_id": r["item_id"],
                "external_id": r["barcode"],
                "library_id": r["library_id"],
                "checkout_date": rfc3339(_ts(r["checkout_date"])),
                "due_date": rfc3339(_ts(r["due_date"])),
                "renewals_count": r["renewals_count"],
                "last_renewed_date": rfc3339(_ts(r["last_renewed_date"])),
                "checkin_date": None,
                "auto_renew": False,
                "onsite_checkout": False,
                # extension (see rest.py)
                "cardnumber": r["cardnumber"],
            }
            for r in rows
        ]

    def circulation_rules(self) -> list[dict[str, Any]]:
        out = []
        for (cat, itype), rule in sorted(self.rules.items()):
            out.append(
                {
                    "context": {"library_id": "*", "patron_category_id": cat, "item_type_id": itype},
                    "issuelength": rule.loan_days,
                    "lengthunit": "days",
                    "renewalsallowed": rule.renewals_allowed,
                    "maxissueqty": self.categories[cat]["loan_limit"],
                }
            )
        return out

    def calendar_json(self) -> dict[str, Any]:
        return {
            "library_id": self.library_id,
            "closed_weekdays": sorted(self.calendar.closed_weekdays),
            "holidays": sorted(d.isoformat() for d in self.calendar.holidays),
        }

    def iter_items(self) -> Iterator[sqlite3.Row]:
        return iter(self.db.execute("SELECT * FROM items ORDER BY item_id"))


_KINDS: dict[str, tuple[str, str, dict[str, str]]] = {
    "patrons": (
        "patrons",
        "p.patron_id",
        {"cardnumber": "p.cardnumber", "category_id": "p.category_id", "patron_id": "p.patron_id"},
    ),
    "items": (
        "items",
        "i.item_id",
        {"external_id": "i.barcode", "item_id": "i.item_id", "item_type_id": "i.item_type_id"},
    ),
    "checkouts": (
        "checkouts",
        "c.checkout_id",
        {
            "item_id": "c.item_id",
            "patron_id": "c.patron_id",
            "external_id": "i.barcode",
            "checkout_id": "c.checkout_id",
        },
    ),
}
_FROM = {
    "patrons": "FROM patrons p",
    "items": "FROM items i LEFT JOIN checkouts c ON c.item_id = i.item_id",
    "checkouts": (
        "FROM checkouts c JOIN items i ON i.item_id = c.item_id JOIN patrons p ON p.patron_id = c.patron_id"
    ),
}
# An item has one checkout at most: counting items needs no join (a range count of the primary key).
_COUNT_FROM = {"items": "FROM items i"}
_SELECT = {
    "patrons": "p.*, (SELECT COUNT(*) FROM checkouts c WHERE c.patron_id = p.patron_id) AS checkouts_count",
    "items": "i.*, c.checkout_date",
    "checkouts": "c.*, i.barcode, p.cardnumber",
}
