"""The desk's rows for a patron and an item, read from Koha's REST shapes through declared schemas.

The ILS is outside the cluster's trust: a row that does not fit the schema is left out and counted, never
raised on. The rows keep what staff need at the desk while the ILS is away, in the words they use: the
card's expiry, why the patron is blocked, what they owe, their loan limit; the item's title, whether it may
be lent, and its holds in serving order.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import msgspec

MAX_TEXT = 200


class _KohaRestriction(msgspec.Struct):
    type: str | None = None
    expiration_date: str | None = None
    comment: str | None = None


class _KohaPatron(msgspec.Struct):
    """Koha's /api/v1/patrons row: the fields a desk reads (others are ignored)."""

    cardnumber: str
    surname: str | None = None
    firstname: str | None = None
    category_id: str | None = None
    library_id: str | None = None
    expiry_date: str | None = None
    restricted: bool = False
    patron_card_lost: bool = False
    incorrect_address: bool = False
    account_balance: float = 0.0
    checkouts_count: int = 0
    restriction: _KohaRestriction | None = None
    checkouts_limit: int | None = None


class _KohaHold(msgspec.Struct):
    cardnumber: str | None = None
    priority: int | None = None
    status: str | None = None
    pickup_library_id: str | None = None


class _KohaItem(msgspec.Struct):
    """Koha's /api/v1/items row: the fields a desk reads."""

    external_id: str
    title: str | None = None
    author: str | None = None
    callnumber: str | None = None
    item_type_id: str | None = None
    home_library_id: str | None = None
    not_for_loan_status: int = 0
    lost_status: int = 0
    withdrawn: int = 0
    holds: list[_KohaHold] = []


class _KohaCheckout(msgspec.Struct):
    """Koha's /api/v1/checkouts row: the item's barcode and the borrower's card (embedded in Koha)."""

    external_id: str
    cardnumber: str
    due_date: str | None = None


class Hold(msgspec.Struct, frozen=True, array_like=True):
    patron: str
    waiting: bool  # on the holds shelf already (Koha status "W")
    pickup: str | None


class Patron(msgspec.Struct, frozen=True, array_like=True):
    barcode: str
    name: str
    category: str | None
    library: str | None
    expiry: str | None  # YYYY-MM-DD
    block: str | None  # why the patron may not borrow, in staff's words
    owes_cents: int
    loans: int  # loans at the ILS when the snapshot was taken
    limit: int | None


class Item(msgspec.Struct, frozen=True, array_like=True):
    barcode: str
    title: str
    author: str | None
    callnumber: str | None
    item_type: str | None
    library: str | None
    not_for_loan: bool
    lost: bool
    withdrawn: bool
    holds: tuple[Hold, ...]


class IlsLoan(msgspec.Struct, frozen=True, array_like=True):
    """A loan open at the ILS when the snapshot was taken (made online, before the outage)."""

    item: str
    patron: str
    due: str | None  # YYYY-MM-DD

    @property
    def barcode(self) -> str:
        """The item's: where chunks are cut (chunks.py) and the row's key."""
        return self.item


MAX_COUNT = 1_000_000  # loans and limits beyond this are not a patron's
MAX_HOLDS = 50  # an item's first holds (the desk needs the first: the rest keep its row small)


def _text(value: str | None) -> str | None:
    """Text as the desk keeps it: composed (NFC), spaces collapsed, bounded, and encodable (a lone
    surrogate, which JSON allows, would fail in SQLite and msgpack: replaced)."""
    if value is None:
        return None
    value = unicodedata.normalize("NFC", value.encode("utf-8", "replace").decode("utf-8"))
    value = " ".join(value.split())[:MAX_TEXT]
    return value or None


def _count(value: int | None) -> int | None:
    return value if value is not None and 0 <= value <= MAX_COUNT else None


def _date(value: str | None) -> str | None:
    return value[:10] if value and len(value) >= 10 and value[4] == "-" and value[7] == "-" else None


def _block(p: _KohaPatron) -> str | None:
    if p.restriction is not None:
        until = _date(p.restriction.expiration_date)
        why = _text(p.restriction.comment)
        return "debarred" + (f" until {until}" if until else "") + (f": {why}" if why else "")
    if p.patron_card_lost:
        return "card reported lost"
    if p.incorrect_address:
        return "address unknown (mail returned)"
    if p.restricted:
        return "restricted at the ILS"
    return None


def patron_from_koha(row: Any) -> Patron | None:
    """A desk row from a Koha patron row, or None if it does not fit."""
    try:
        p = msgspec.convert(row, _KohaPatron)
    except (msgspec.ValidationError, TypeError, ValueError):
        return None
    barcode = _text(p.cardnumber) or ""
    if not barcode or len(barcode) > 64:
        return None
    surname, firstname = _text(p.surname), _text(p.firstname)
    name = ", ".join(part for part in (surname, firstname) if part) or barcode
    owes = round(p.account_balance * 100) if abs(p.account_balance) < 1e9 else 0
    return Patron(barcode, name, _text(p.category_id), _text(p.library_id), _date(_text(p.expiry_date)), _block(p),
                  owes, _count(p.checkouts_count) or 0, _count(p.checkouts_limit))


def item_from_koha(row: Any) -> Item | None:
    try:
        i = msgspec.convert(row, _KohaItem)
    except (msgspec.ValidationError, TypeError, ValueError):
        return None
    barcode = _text(i.external_id) or ""
    if not barcode or len(barcode) > 64:
        return None
    holds = tuple(Hold(patron, h.status == "W", _text(h.pickup_library_id))
                  for h in sorted(i.holds, key=lambda h: (h.status != "W", min(max(h.priority or 0, 0), MAX_COUNT)))
                  if (patron := _text(h.cardnumber)))[:MAX_HOLDS]
    return Item(barcode, _text(i.title) or "(no title)", _text(i.author), _text(i.callnumber), _text(i.item_type_id),
                _text(i.home_library_id), i.not_for_loan_status != 0, i.lost_status != 0, i.withdrawn != 0, holds)


def loan_from_koha(row: Any) -> IlsLoan | None:
    try:
        c = msgspec.convert(row, _KohaCheckout)
    except (msgspec.ValidationError, TypeError, ValueError):
        return None
    item, patron = _text(c.external_id) or "", _text(c.cardnumber) or ""
    if not item or not patron or len(item) > 64 or len(patron) > 64:
        return None
    return IlsLoan(item, patron, _date(_text(c.due_date)))


ENCODER = msgspec.msgpack.Encoder()
PATRON = msgspec.msgpack.Decoder(Patron)
ITEM = msgspec.msgpack.Decoder(Item)
ILS_LOAN = msgspec.msgpack.Decoder(IlsLoan)
