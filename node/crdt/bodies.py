"""The body of each kind of event, declared once as msgspec types: the protocol's schema.

`read_body` decides whether a signed event's body is readable. A body that is not (a buggy desk, a newer
version's kind, a value out of bounds) does not make the event forged: its signature and hash chain still
hold, so the event is kept and replicated like any other and *quarantined* by the fold (state.py), shown
to the admins, never applied. Unknown fields are ignored, so a newer desk may add some. Pure.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from node.crdt.bounds import (
    EARLIEST_MS,
    LATEST_MS,
    Barcode,
    BoundsError,
    Count,
    EventId,
    Millis,
    Money,
    Name,
    NodeId,
    Staff,
    Text,
    check_due,
    check_money,
)

ConflictId = Annotated[str, msgspec.Meta(max_length=300, pattern=r"^[a-z_]{1,40}/[^\x00-\x1f\ud800-\udfff]{1,258}$")]


class Body(msgspec.Struct, kw_only=True):
    imported: Text | None = None  # the offline file the operation came from

    def check(self, at: int) -> None:
        """Bounds that relate fields to each other or to the event's own time (never the local clock, nor
        the Unicode tables of this desk's Python: the patterns decide what is printable)."""


class _Due(Body, kw_only=True):
    due: Millis | None = None

    def check(self, at: int) -> None:
        super().check(at)
        if self.due is not None:
            check_due(self.due, at)


class CheckoutBody(_Due, kw_only=True):
    patron: Barcode
    item: Barcode
    override: bool = False


class ItemBody(Body, kw_only=True):
    """A checkin or an in-house use."""

    item: Barcode


class RenewBody(_Due, kw_only=True):
    item: Barcode
    patron: Barcode | None = None


class PaymentBody(Body, kw_only=True):
    patron: Barcode
    amount: Money

    def check(self, at: int) -> None:
        super().check(at)
        check_money(self.amount)


class RegisterBody(Body, kw_only=True):
    patron: Barcode
    name: Name


class VoidBody(Body, kw_only=True):
    event: EventId
    reason: Text | None = None


Action = Literal["void", "keep", "accept_ils", "apply", "acknowledge"]


class ResolveBody(Body, kw_only=True):
    """An admin's answer to a conflict. `keep`/`void` name one of the conflict's events: the voids follow
    from the answer in the fold, so two admins' answers can be compared (and found to disagree)."""

    conflict: ConflictId
    action: Action
    event: EventId | None = None
    note: Text | None = None

    def check(self, at: int) -> None:
        super().check(at)
        if self.event is not None and self.action not in ("keep", "void"):
            raise BoundsError("only keep and void name an event of the conflict")


class MemberBody(Body, kw_only=True):
    """`revoke` and `away`: {node, upto}."""

    node: NodeId
    upto: Count
    reason: Text | None = None


class AppliedBody(Body, kw_only=True):
    event: EventId
    status: Literal["applied", "refused"]
    message: Text
    term: Count
    # the time the ILS was given, when it is not the event's own `at` (its desk's clock was off), and why
    ils_at: Millis | None = None
    ils_at_by: Literal["link", "log", "order"] | None = None


class SealBody(Body, kw_only=True):
    """The bridge closes the current epoch's document (epochs.py): `upto` is what it held when it sealed,
    the seal itself included; events covered by it travel in journal runs from then on, not in documents."""

    epoch: Annotated[int, msgspec.Meta(ge=1, le=2**53)]
    upto: Annotated[dict[NodeId, Count], msgspec.Meta(max_length=10_000)]


class SnapshotBody(Body, kw_only=True):
    """The bridge read the ILS: every desk fetches this snapshot's chunks from its peers (node/snapshot). Only
    the index chunk's name travels in the log; the counts and time are for staff before the chunks arrive."""

    index: Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$")]
    version: Annotated[int, msgspec.Meta(ge=1, le=2**53)]
    ils_time: Millis
    patrons: Count
    items: Count
    source: Text

    def check(self, at: int) -> None:
        super().check(at)
        if self.ils_time > at:  # both read from the bridge's clock: the ILS was read before it was named
            raise BoundsError("a snapshot cannot reflect the ILS after the event that names it")


BODY_TYPES: dict[str, type[Body]] = {
    "checkout": CheckoutBody,
    "checkin": ItemBody,
    "renew": RenewBody,
    "payment": PaymentBody,
    "in_house_use": ItemBody,
    "patron_register": RegisterBody,
    "void": VoidBody,
    "resolve": ResolveBody,
    "revoke": MemberBody,
    "away": MemberBody,
    "applied": AppliedBody,
    "seal": SealBody,
    "snapshot": SnapshotBody,
}


_STAFF_SEEN: dict[str, bool] = {}  # a desk has a few dozen staff names: each is checked once


def _staff_ok(staff: object) -> bool:
    if isinstance(staff, str) and (known := _STAFF_SEEN.get(staff)) is not None:
        return known
    try:
        msgspec.convert(staff, Staff)
        ok = True
    except msgspec.ValidationError:
        ok = False
    if isinstance(staff, str) and len(_STAFF_SEEN) < 10_000:
        _STAFF_SEEN[staff] = ok
    return ok


def body_problem(kind: object, body: object, at: object, staff: object) -> str | None:
    """Why an event's meaning cannot be read (None: it can). Depends on the event alone."""
    if not isinstance(kind, str) or kind not in BODY_TYPES:
        shown = kind[:40] if isinstance(kind, str) else type(kind).__name__
        return f"event kind {shown!r} is not known to this desk (written by a newer version?)"
    if not isinstance(at, int) or isinstance(at, bool) or not EARLIEST_MS <= at <= LATEST_MS:
        return "its time is not a date between 2000 and 2100"
    if not _staff_ok(staff):
        return "its staff name is not short printable text"
    if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
        return "its body is not a map with text keys"
    try:
        # in the signed (sorted) order, so that the writer and every reader name the same first problem
        typed = msgspec.convert({k: body[k] for k in sorted(body)}, BODY_TYPES[kind], strict=True)
        typed.check(at)
    except msgspec.ValidationError as e:
        return f"{kind}: {e}"[:300]
    except BoundsError as e:
        return f"{kind}: {e}"[:300]
    except UnicodeError:  # msgspec cannot word its error about text that arrived as invalid UTF-8
        return f"{kind}: its body holds text that is not UTF-8"
    return None


_DECODERS = {kind: msgspec.msgpack.Decoder(body_type, strict=True) for kind, body_type in BODY_TYPES.items()}


def plainly_readable(kind: str, body: bytes, at: int, staff: str) -> bool:
    """The common case decided in C, straight from the body's msgpack: True means body_problem would say
    None. False means only "not plainly": body_problem, on the decoded body, gives the exact reason (or
    finds it readable after all, e.g. text that is not UTF-8)."""
    decoder = _DECODERS.get(kind)
    if decoder is None or not EARLIEST_MS <= at <= LATEST_MS or not _staff_ok(staff):
        return False
    try:
        decoder.decode(body).check(at)
    except Exception:  # DecodeError, BoundsError, RecursionError: body_problem says what it is
        return False
    return True


def read_body(kind: str, body: object, at: int) -> Body:
    """The typed body of a readable event; raises BoundsError (with a message for staff) otherwise."""
    problem = body_problem(kind, body, at, "")
    if problem is not None:
        raise BoundsError(problem)
    return msgspec.convert(body, BODY_TYPES[kind], strict=True)
