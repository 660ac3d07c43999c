"""From a log event to the neutral Operation an adapter or a file format takes, and back. Pure."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from node.crdt.event import DESK_KINDS, Event
from node.ilsbridge.operation import Operation
from node.ilsbridge.schedule import keys_of


def ms_to_utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def utc_to_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(frozen=True)
class IlsTime:
    at: int  # ms since the epoch: what the ILS is told
    by: str | None  # None: the event's own `at`; "link"/"log": less its desk's clock offset; "order": see ils_times


def ils_times(ordered: Iterable[Event], offset_of: Callable[[str], tuple[int, str] | None],
              sent: Mapping[str, int] | None = None, floor: Mapping[str, int] | None = None
              ) -> dict[str, IlsTime]:
    """The time the ILS gets for each desk event of `ordered` (causal order, voided events left out).

    `at` is what the desk's clock said. For a desk whose clock is off, `offset_of(node)` gives how far it
    reads ahead (negative: behind) and how that is known ("link": measured over a peer link; "log": shown by
    the log, clocks.py), and the ILS gets `at` less that offset. Whatever the clocks said, no event goes to
    the ILS dated before an earlier event on the same item or patron — a checkin is never dated before the
    loan it ends ("order"). `sent`: times the ILS was already given (recorded in `applied` events), kept as
    they were. `floor`: the same for events before `ordered` (loans lent before the fold's base, by
    "item:<barcode>"). Imported offline operations keep their file's times."""
    sent = sent or {}
    floor = dict(floor or {})
    offsets: dict[str, tuple[int, str] | None] = {}  # one look per desk, not per event
    out: dict[str, IlsTime] = {}
    for event in ordered:
        if event.kind not in DESK_KINDS:
            continue
        at, by = event.at, None
        if event.node not in offsets:
            offsets[event.node] = offset_of(event.node)
        offset = offsets[event.node] if "imported" not in event.body else None
        if offset is not None and offset[0]:
            at, by = event.at - offset[0], offset[1]
        keys = keys_of(event)
        earliest = max((floor[k] for k in keys if k in floor), default=at)
        if at < earliest:
            at, by = earliest, "order"
        if event.id in sent:
            at = sent[event.id]
            by = None if at == event.at else by or "order"
        for k in keys:
            floor[k] = at
        out[event.id] = IlsTime(at, by)
    return out


def operation_of(event: Event, at: int | None = None) -> Operation:
    """`at` is the desk's own wall clock when staff scanned: the date the ILS must record — unless the
    desk's clock was off (`at` given: see ils_times)."""
    b = event.body
    due = ms_to_utc(b["due"]) if b.get("due") else None
    details: tuple[tuple[str, str], ...] = ()
    if event.kind == "patron_register":
        details = (("name", b["name"]),)
    return Operation(
        kind=event.kind,  # type: ignore[arg-type]
        at=ms_to_utc(event.at if at is None else at),
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
