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
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import msgpack
import msgspec

from node.crdt.bodies import body_problem, plainly_readable
from node.crdt.bounds import MONEY_MAX, BoundsError, check_money
from node.crdt.hlc import Hlc
from node.trust.identity import is_node_id

DESK_KINDS = ("checkout", "checkin", "renew", "payment", "in_house_use", "patron_register")
ADMIN_KINDS = ("void", "resolve", "revoke", "away")
BRIDGE_KINDS = ("applied", "seal")
KINDS = DESK_KINDS + ADMIN_KINDS + BRIDGE_KINDS
MAX_EVENT_BYTES = 8192
MAX_SEQ = 2**53
MAX_JSON_INT = 2**53
GENESIS = bytes(32)  # `prev` of a desk's first event


def applied_target(event: Event) -> str | None:
    """The event a readable `applied` answers (the journal's `target` column); None for any other event."""
    if event.kind != "applied" or event.problem is not None:
        return None
    target = event.body.get("event")
    return target if isinstance(target, str) else None


def kind_column(event: Event) -> str:
    """The event's kind as the journal's `kind` column: its text, or "" for an odd event whose kind is not
    text (quarantined, and kept whole in `raw`). An integer beyond SQLite's would fail the write otherwise."""
    return event.kind if isinstance(event.kind, str) else ""


def chain_hash(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


class EventError(ValueError):
    """An event that is malformed, wrongly signed, or does not match the id it is stored under."""


def parse_amount(value: object, maximum: Decimal = MONEY_MAX) -> Decimal:
    """Money travels as a decimal string ("12.50"): floats would not sum the same on every desk."""
    try:
        return check_money(value, maximum)  # type: ignore[arg-type]
    except BoundsError as e:
        raise EventError(str(e)) from None


def check_body(kind: str, body: object, at: int | None = None) -> None:
    """Refuses a body this desk must not write (EventError with a message for staff). Events received
    from peers are not refused for their body: they are quarantined (see bodies.py)."""
    problem = body_problem(kind, body, at if at is not None else time.time_ns() // 1_000_000, "")
    if problem is not None:
        raise EventError(problem)


def _key_order(key: Any) -> tuple[str, Any]:
    """Text keys sort as text (what every signer does); other keys, which only a buggy or newer desk
    writes, sort by type first so that re-packing them never raises."""
    return (type(key).__name__, key)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value, key=_key_order)}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def pack(value: Any) -> bytes:
    """Canonical msgpack. Text that arrived as invalid UTF-8 is packed back byte for byte."""
    packed: bytes = msgpack.packb(_canonical(value), use_bin_type=True, unicode_errors="surrogateescape")
    return packed


@dataclass(frozen=True, slots=True)
class Event:
    """Slotted, with its id formatted once and its repeated text (node, kind, staff) interned: a desk holds
    many of them (bench/bench_history.py measures how many bytes each)."""

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
    # Why the body cannot be read (None: it can). Not signed: every desk derives it from the event alone.
    problem: str | None = field(default=None, compare=False)
    _id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_id", f"{self.node}:{self.seq}")

    @property
    def id(self) -> str:
        return self._id

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
        """What the API shows: the event without its proofs (version vector, chain hash, signature).
        An unreadable event is shown too, with its values made safe to print."""
        out = self.unsigned()
        del out["seen"], out["prev"]
        if self.problem is not None:
            out["kind"] = json_safe(self.kind)
            out["body"] = json_safe(self.body)
            out["staff"] = json_safe(self.staff)
            out["at"] = json_safe(self.at)
            out["problem"] = self.problem
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
    check_body(kind, body, at)
    body = dict(body)  # the problem is judged on what is signed, as every reader will see it
    unsigned = Event(node=node, seq=seq, hlc=hlc, at=at, kind=kind, body=body, staff=staff, seen=seen,
                     prev=prev, problem=body_problem(kind, body, at, staff))
    return replace(unsigned, sig=sign(unsigned.signing_bytes()))


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """An envelope exactly as current desks write it, decoded in C in one step (decode_event's fast path)."""

    id: str
    node: str
    seq: int
    hlc: tuple[int, int]
    at: int
    kind: str
    body: msgspec.Raw
    staff: str
    seen: dict[str, int]
    prev: bytes
    sig: bytes


_ENVELOPE = msgspec.msgpack.Decoder(_Envelope)


def decode_event(raw: bytes) -> Event:
    """Parses and checks the envelope of an event; never raises anything but EventError.

    The envelope (who wrote it, where it sits in the desk's chain, its signature) must be right or the
    event is refused. Its meaning (kind, time, staff, body) is only read: an unreadable one is returned
    with `problem` set, to be quarantined, because refusing a signed event would break its desk's chain.

    Every event received or replayed passes here, so the common case is decided in C (msgspec): an envelope
    that decodes into `_Envelope` and passes the same checks gives the same Event as the full reading
    (`_decode_full`); anything else, even a kind this desk does not know, is read in full, which alone
    words the errors (tests/test_events.py holds the two to the same answers)."""
    if not isinstance(raw, bytes) or len(raw) > MAX_EVENT_BYTES:
        raise EventError("event is not bytes or is too large")
    try:
        env = _ENVELOPE.decode(raw)
    except Exception:  # DecodeError, and RecursionError on deep nesting: the full reading words it
        return _decode_full(raw)
    node, seq, hlc, seen, prev = env.node, env.seq, env.hlc, env.seen, env.prev
    if (not 1 <= seq <= MAX_SEQ or env.id != f"{node}:{seq}" or not is_node_id(node) or hlc[0] < 0
            or hlc[1] < 0 or len(env.sig) != 64 or len(prev) != 32 or (seq == 1) != (prev == GENESIS)
            or len(seen) > 10_000
            or not all(0 <= v <= MAX_SEQ and is_node_id(k) for k, v in seen.items())):
        return _decode_full(raw)
    body_raw = env.body  # unchecked bytes: an ext, an unhashable key or deep nesting inside still raises
    try:
        body = msgpack.unpackb(body_raw, raw=False, strict_map_key=False, unicode_errors="surrogateescape")
    except Exception:
        return _decode_full(raw)
    kind, staff, at = sys.intern(env.kind), env.staff, env.at
    if len(staff) <= 200:
        staff = sys.intern(staff)
    problem = None if plainly_readable(kind, body_raw, at, staff) else body_problem(kind, body, at, staff)
    return Event(node=sys.intern(node), seq=seq, hlc=Hlc(*hlc), at=at, kind=kind, body=body, staff=staff,
                 seen=seen, prev=prev, sig=env.sig, problem=problem)


def _decode_full(raw: bytes) -> Event:
    """decode_event for anything but the common case, with a message for each way an envelope is wrong."""
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=False, unicode_errors="surrogateescape",
                              max_bin_len=MAX_EVENT_BYTES, max_str_len=MAX_EVENT_BYTES)
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
    if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= MAX_SEQ:
        raise EventError("seq must be a positive integer")
    if obj["id"] != f"{node}:{seq}":
        raise EventError("id does not match node and seq")
    try:
        hlc = Hlc.from_wire(obj["hlc"])
    except ValueError as e:
        raise EventError(str(e)) from None
    if not isinstance(seen, dict) or len(seen) > 10_000 or not all(
        is_node_id(k) and isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_SEQ
        for k, v in seen.items()
    ):
        raise EventError("seen must map node ids to sequence numbers")
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise EventError("sig must be a 64-byte signature")
    prev = obj["prev"]
    if not isinstance(prev, bytes) or len(prev) != 32 or (seq == 1) != (prev == GENESIS):
        raise EventError("prev must be the 32-byte hash of the desk's previous event")
    body = obj["body"]
    node = sys.intern(node)
    if isinstance(kind, str):
        kind = sys.intern(kind)
    if isinstance(staff, str) and len(staff) <= 200:
        staff = sys.intern(staff)
    return Event(node=node, seq=seq, hlc=hlc, at=at, kind=kind, body=body, staff=staff, seen=seen,
                 prev=prev, sig=sig, problem=body_problem(kind, body, at, staff))


def decode_kept(raw: bytes, meaning: str | None) -> Event:
    """An event from this desk's own journal, read back at start. Every row there was verified before it
    was written, and its meaning judged then (`meaning`: "" readable, else the problem): nothing is checked
    again. Rows written before meanings were kept (None) are decoded in full."""
    if meaning is None:
        return decode_event(raw)
    obj = msgpack.unpackb(raw, raw=False, strict_map_key=False, unicode_errors="surrogateescape")
    kind, staff = obj["kind"], obj["staff"]
    return Event(node=sys.intern(obj["node"]), seq=obj["seq"], hlc=Hlc(*obj["hlc"]), at=obj["at"],
                 kind=sys.intern(kind) if isinstance(kind, str) else kind, body=obj["body"],
                 staff=sys.intern(staff) if isinstance(staff, str) and len(staff) <= 200 else staff,
                 seen=obj["seen"], prev=obj["prev"], sig=obj["sig"], problem=meaning or None)


def json_safe(value: Any, depth: int = 0) -> Any:
    """Any decoded msgpack value as something JSON can print, bounded in depth and length."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")[:500]
    if isinstance(value, int):
        return value if -MAX_JSON_INT <= value <= MAX_JSON_INT else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, bytes):
        return "0x" + value[:64].hex()
    if depth >= 4:
        return "…"
    if isinstance(value, dict):
        return {str(json_safe(k, depth + 1))[:100]: json_safe(v, depth + 1) for k, v in list(value.items())[:50]}
    if isinstance(value, list | tuple):
        return [json_safe(v, depth + 1) for v in value[:50]]
    return repr(value)[:100]


def verify_event(event: Event, public_key_raw: bytes) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        signed = event.signing_bytes()
    except Exception as e:  # a value msgpack cannot write back (only a buggy or hostile writer makes one)
        raise EventError(f"{event.id} cannot be re-encoded to check its signature ({type(e).__name__})") from None
    try:
        Ed25519PublicKey.from_public_bytes(public_key_raw).verify(event.sig, signed)
    except (InvalidSignature, ValueError):
        raise EventError(f"signature of {event.id} does not verify") from None
