"""From a log event to the neutral Operation an adapter or a file format takes, and back. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from node.crdt.event import Event
from node.ilsbridge.operation import Operation


def ms_to_utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def utc_to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def operation_of(event: Event) -> Operation:
    """`at` is the desk's own wall clock when staff scanned: the date the ILS must record."""
    b = event.body
    due = ms_to_utc(b["due"]) if b.get("due") else None
    details: tuple[tuple[str, str], ...] = ()
    if event.kind == "patron_register":
        details = (("name", b["name"]),)
    return Operation(
        kind=event.kind,  # type: ignore[arg-type]
        at=ms_to_utc(event.at),
        item=b.get("item"),
        patron=b.get("patron"),
        amount=Decimal(b["amount"]) if b.get("amount") else None,
        due=due,
        ref=event.id,
        details=details,
    )


def body_of(op: Operation) -> dict[str, Any]:
    """The event body for an imported operation (the inverse of operation_of, for offline files)."""
    body: dict[str, Any] = {}
    if op.item is not None:
        body["item"] = op.item
    if op.patron is not None:
        body["patron"] = op.patron
    if op.kind in ("checkout", "renew") and op.due is not None:
        body["due"] = utc_to_ms(op.due)
    if op.kind == "payment" and op.amount is not None:
        # Money is never rounded on the way in: an amount with more decimals stays as written, and the
        # log's checks refuse it (a bad line of the file) rather than record a different sum.
        cents = op.amount.quantize(Decimal("0.01")) if op.amount.adjusted() < 20 else None
        body["amount"] = f"{op.amount:.2f}" if cents == op.amount else str(op.amount)
    if op.kind == "patron_register":
        details = dict(op.details)
        name = details.get("name") or " ".join(
            x for x in (details.get("first_given_name"), details.get("family_name")) if x)
        body["name"] = name or op.patron or "?"
    return body
