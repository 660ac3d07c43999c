"""Signed, immutable events: the unit of the replicated log (DESIGN.md §3).

The signature covers the canonical msgpack of every field but `sig`, so any node can check any event it
receives from any peer, however many hops it travelled. `prev` (an extension) is the SHA-256 of the
desk's previous event as stored: a desk's events form a hash chain, so a receiver that gets a contiguous
run of them can check the chain and one signature, the last, instead of thousands (see verify.py).
`seen` (also an extension of DESIGN's field list) is the writer's version vector, `{node: highest seq it
had}`, which makes happened-before exact in the pure state fold: it is how a concurrent double loan is
told apart from a desk overriding a warning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import msgpack

from node.crdt.barcode import BarcodeError, clean_barcode
from node.crdt.hlc import Hlc
from node.trust.identity import is_node_id

DESK_KINDS = ("checkout", "checkin", "renew", "payment", "in_house_use", "patron_register")
ADMIN_KINDS = ("void", "resolve", "revoke", "away")
BRIDGE_KINDS = ("applied",)
KINDS = DESK_KINDS + ADMIN_KINDS + BRIDGE_KINDS
MAX_EVENT_BYTES = 8192
MAX_TEXT = 500
GENESIS = bytes(32)  # `prev` of a desk's first event


def chain_hash(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


class EventError(ValueError):
    """An event that is malformed, wrongly signed, or does not match the id it is stored under."""


def _text(body: Mapping[str, Any], key: str, *, required: bool = True, limit: int = MAX_TEXT) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise EventError(f"{key} is missing")
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise EventError(f"{key} must be text of at most {limit} characters")
    if any(ord(c) < 32 for c in value):
        raise EventError(f"{key} contains control characters")
    return value


def _barcode(body: Mapping[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise EventError(f"{key} is missing")
        return None
    try:
        cleaned = clean_barcode(value, key)
    except BarcodeError as e:
        raise EventError(str(e)) from None
    if cleaned != value:
        raise EventError(f"{key} is not in canonical form")
    return cleaned


def _ms(body: Mapping[str, Any], key: str) -> None:
    value = body.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise EventError(f"{key} must be a time in milliseconds")


def parse_amount(value: object) -> Decimal:
    """Money travels as a decimal string ("12.50"): floats would not sum the same on every desk."""
    if not isinstance(value, str) or len(value) > 20:
        raise EventError("amount must be a decimal number written as text, like \"2.50\"")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise EventError(f"amount {value!r} is not a number") from None
    if not amount.is_finite() or amount <= 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise EventError(f"amount {value!r} must be positive with at most two decimals")
    return amount


def _check_checkout(b: Mapping[str, Any]) -> None:
    _barcode(b, "patron")
    _barcode(b, "item")
    _ms(b, "due")


def _check_checkin(b: Mapping[str, Any]) -> None:
    _barcode(b, "item")


def _check_renew(b: Mapping[str, Any]) -> None:
    _barcode(b, "item")
    _barcode(b, "patron", required=False)
    _ms(b, "due")


def _check_payment(b: Mapping[str, Any]) -> None:
    _barcode(b, "patron")
    parse_amount(b.get("amount"))


def _check_register(b: Mapping[str, Any]) -> None:
    _barcode(b, "patron")
    _text(b, "name")


def _check_void(b: Mapping[str, Any]) -> None:
    _text(b, "event", limit=80)
    _text(b, "reason", required=False)


def _check_resolve(b: Mapping[str, Any]) -> None:
    _text(b, "conflict", limit=300)
    _text(b, "action", limit=40)
    _text(b, "note", required=False)


def _check_revoke(b: Mapping[str, Any]) -> None:
    if not is_node_id(b.get("node")):
        raise EventError("node must be the revoked desk's node id")
    upto = b.get("upto")
    if not isinstance(upto, int) or isinstance(upto, bool) or upto < 0:
        raise EventError("upto must be the revoked desk's last accepted sequence number")
    _text(b, "reason", required=False)


def _check_applied(b: Mapping[str, Any]) -> None:
    _text(b, "event", limit=80)
    if b.get("status") not in ("applied", "refused"):
        raise EventError("status must be 'applied' or 'refused'")
    _text(b, "message")
    term = b.get("term")
    if not isinstance(term, int) or isinstance(term, bool) or term < 0:
        raise EventError("term must be a non-negative integer")
    _ms(b, "ils_at")  # the time the ILS was given, when it is not the event's own `at` (a desk clock off)
    if b.get("ils_at_by") not in (None, "link", "log", "order"):
        raise EventError("ils_at_by must be 'link', 'log' or 'order'")


_BODY_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "checkout": _check_checkout,
    "checkin": _check_checkin,
    "renew": _check_renew,
    "payment": _check_payment,
    "in_house_use": _check_checkin,
    "patron_register": _check_register,
    "void": _check_void,
    "resolve": _check_resolve,
    "revoke": _check_revoke,
    "away": _check_revoke,  # {node, upto}: away until that desk writes past `upto`
    "applied": _check_applied,
}


def check_body(kind: str, body: object) -> None:
    if kind not in _BODY_CHECKS:
        raise EventError(f"unknown event kind {kind!r}")
    if not isinstance(body, dict) or not all(isinstance(k, str) for k in body):
        raise EventError("body must be a map with text keys")
    for value in body.values():
        if not (value is None or isinstance(value, str | int | bool)):
            raise EventError("body values must be text, integers, booleans or null")
    _BODY_CHECKS[kind](body)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def pack(value: Any) -> bytes:
    return msgpack.packb(_canonical(value), use_bin_type=True)


@dataclass(frozen=True)
class Event:
    node: str
    seq: int
    hlc: Hlc
    at: int
    kind: str
    body: dict[str, Any]
    staff: str
    seen: dict[str, int] = field(default_factory=dict)
    prev: bytes = GENESIS
    sig: bytes = b""

    @property
    def id(self) -> str:
        return f"{self.node}:{self.seq}"

    @property
    def order_key(self) -> tuple[int, int, str, int]:
        """The writer's own (hlc, node, seq). The log sorts by order stamps (order.py), which equal the hlc while
        clocks stay within the drift bound and put every event after its predecessors when they do not."""
        return (self.hlc.wall, self.hlc.counter, self.node, self.seq)

    def unsigned(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node": self.node,
            "seq": self.seq,
            "hlc": self.hlc.to_wire(),
            "at": self.at,
            "kind": self.kind,
            "body": self.body,
            "staff": self.staff,
            "seen": self.seen,
            "prev": self.prev,
        }

    def signing_bytes(self) -> bytes:
        return pack(self.unsigned())

    def encode(self) -> bytes:
        return pack({**self.unsigned(), "sig": self.sig})

    def happened_before(self, other: Event) -> bool:
        """True when the writer of `other` had this event when it wrote `other`."""
        if self.node == other.node:
            return self.seq < other.seq
        return other.seen.get(self.node, 0) >= self.seq

    def to_json(self) -> dict[str, Any]:
        """What the API shows: the event without its proofs (version vector, chain hash, signature)."""
        out = self.unsigned()
        del out["seen"], out["prev"]
        return out


def make_event(
    *,
    node: str,
    seq: int,
    hlc: Hlc,
    at: int,
    kind: str,
    body: dict[str, Any],
    staff: str,
    seen: dict[str, int],
    sign: Callable[[bytes], bytes],
    prev: bytes = GENESIS,
) -> Event:
    check_body(kind, body)
    unsigned = Event(node=node, seq=seq, hlc=hlc, at=at, kind=kind, body=dict(body), staff=staff, seen=seen,
                     prev=prev)
    return Event(**{**unsigned.__dict__, "sig": sign(unsigned.signing_bytes())})


def decode_event(raw: bytes) -> Event:
    """Parses and checks the shape of an event; never raises anything but EventError."""
    if not isinstance(raw, bytes) or len(raw) > MAX_EVENT_BYTES:
        raise EventError("event is not bytes or is too large")
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=1024, max_str_len=4096)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise EventError(f"event is not valid msgpack ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise EventError("event is not a map")
    expected = {"id", "node", "seq", "hlc", "at", "kind", "body", "staff", "seen", "prev", "sig"}
    if set(obj) != expected:
        raise EventError(f"event fields must be exactly {sorted(expected)}")
    node, seq, at, kind, staff, seen, sig = (
        obj["node"], obj["seq"], obj["at"], obj["kind"], obj["staff"], obj["seen"], obj["sig"]
    )
    if not is_node_id(node):
        raise EventError("node is not a node id")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise EventError("seq must be a positive integer")
    if obj["id"] != f"{node}:{seq}":
        raise EventError("id does not match node and seq")
    try:
        hlc = Hlc.from_wire(obj["hlc"])
    except ValueError as e:
        raise EventError(str(e)) from None
    if not isinstance(at, int) or isinstance(at, bool) or at < 0:
        raise EventError("at must be a time in milliseconds")
    if not isinstance(kind, str):
        raise EventError("kind must be text")
    if not isinstance(staff, str) or len(staff) > 100:
        raise EventError("staff must be short text")
    if not isinstance(seen, dict) or len(seen) > 10_000 or not all(
        is_node_id(k) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in seen.items()
    ):
        raise EventError("seen must map node ids to sequence numbers")
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise EventError("sig must be a 64-byte signature")
    prev = obj["prev"]
    if not isinstance(prev, bytes) or len(prev) != 32 or (seq == 1) != (prev == GENESIS):
        raise EventError("prev must be the 32-byte hash of the desk's previous event")
    check_body(kind, obj["body"])
    return Event(node=node, seq=seq, hlc=hlc, at=at, kind=kind, body=obj["body"], staff=staff, seen=seen,
                 prev=prev, sig=sig)


def verify_event(event: Event, public_key_raw: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(event.sig, event.signing_bytes())
    except (InvalidSignature, ValueError):
        raise EventError(f"signature of {event.id} does not verify") from None
