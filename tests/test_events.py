"""Events: canonical encoding, signatures, shape checks, and the hybrid logical clock."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crdt.event import EventError, _decode_full, decode_event, verify_event
from node.crdt.hlc import Hlc, HybridClock
from tests.factories import DUE, SimDesk

barcodes = st.text(alphabet="0123456789ABCDEFX-", min_size=1, max_size=20)


def test_event_round_trip_and_signature() -> None:
    desk = SimDesk()
    event = desk.write("checkout", patron="23000001", item="39000001", due=DUE)
    decoded = decode_event(event.encode())
    assert decoded == event
    verify_event(decoded, desk.ident.public_key_raw)
    with pytest.raises(EventError, match="signature"):
        verify_event(decoded, SimDesk().ident.public_key_raw)


def test_altered_copy_does_not_verify() -> None:
    desk = SimDesk()
    event = desk.write("checkout", patron="23000001", item="39000001", due=DUE)
    obj = msgpack.unpackb(event.encode())
    obj["body"]["patron"] = "23000002"
    altered = decode_event(msgpack.packb(obj, use_bin_type=True))
    with pytest.raises(EventError, match="does not verify"):
        verify_event(altered, desk.ident.public_key_raw)


@pytest.mark.parametrize("mutate, reason", [
    (lambda o: o.update(id="x:1"), "id does not match"),
    (lambda o: o.update(seq=0), "seq"),
    (lambda o: o.update(sig=b"short"), "64-byte"),
    (lambda o: o.pop("seen"), "fields must be exactly"),
    (lambda o: o.update(hlc=[1]), "hlc"),
])
def test_malformed_events_are_refused_with_a_reason(mutate, reason) -> None:
    desk = SimDesk()
    obj = msgpack.unpackb(desk.write("checkout", patron="P1", item="I1", due=DUE).encode())
    mutate(obj)
    with pytest.raises(EventError, match=reason):
        decode_event(msgpack.packb(obj, use_bin_type=True))


@pytest.mark.parametrize("mutate, reason", [
    (lambda o: o.update(kind="lend"), "not known to this desk"),
    (lambda o: o["body"].update(item=""), "length >= 1"),
    (lambda o: o["body"].update(item="A\x07B"), "matching regex"),
    (lambda o: o["body"].update(item="9" * 65), "length <= 64"),
    (lambda o: o["body"].pop("patron"), "missing required field `patron`"),
    (lambda o: o["body"].update(due=10**19), "<= 4102444800000"),
    (lambda o: o.update(at=-5), "time is not a date"),
    (lambda o: o.update(staff=b"x"), "staff name"),
])
def test_unreadable_bodies_are_decoded_for_quarantine_with_a_reason(mutate, reason) -> None:
    """The envelope holds, so the event is kept (its desk's chain stays whole) but marked unreadable."""
    desk = SimDesk()
    obj = msgpack.unpackb(desk.write("checkout", patron="P1", item="I1", due=DUE).encode())
    mutate(obj)
    event = decode_event(msgpack.packb(obj, use_bin_type=True))
    assert event.problem is not None and reason in event.problem
    assert event.to_json()["problem"] == event.problem


@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_event_error(data: bytes) -> None:
    with pytest.raises(EventError):
        decode_event(data)


def test_text_that_is_not_utf8_where_a_number_belongs_is_unreadable_not_a_crash() -> None:
    """msgspec cannot word that error (it raised UnicodeEncodeError out of decode_event, found by the test
    below)."""
    obj = msgpack.unpackb(SimDesk().write("checkout", patron="P1", item="I1", due=DUE).encode())
    obj["body"]["due"] = "\udcff"
    event = decode_event(msgpack.packb(obj, use_bin_type=True, unicode_errors="surrogateescape"))
    assert event.problem == "checkout: its body holds text that is not UTF-8"


def _reading(decode, raw: bytes) -> tuple:
    try:
        event = decode(raw)
    except EventError as e:
        return ("refused", str(e))
    return ("read", event, event.problem, event.id)


# Values a field may be given instead of its own: wrong types, edge numbers, text that is not UTF-8.
odd_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(allow_nan=False),
    st.text(max_size=12), st.binary(max_size=70), st.just("\udcff"), st.lists(st.integers(-2, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-1, 3), max_size=2), st.just(2**53), st.just(2**53 + 1),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=12)),  # msgpack refuses other codes
)
fields = st.sampled_from(["id", "node", "seq", "hlc", "at", "kind", "body", "staff", "seen", "prev", "sig"])
body_fields = st.sampled_from(["patron", "item", "due", "override", "amount", "imported", "upto", "epoch", "x"])
kinds = st.sampled_from(["checkout", "checkin", "payment", "renew", "seal", "void", "lend"])


@settings(max_examples=400)
@given(kinds, st.lists(st.tuples(fields, odd_values), max_size=1),
       st.lists(st.tuples(body_fields, odd_values), max_size=2), st.booleans(), st.booleans())
def test_the_fast_reading_gives_the_full_readings_answer(kind, changes, body_changes, drop, extra) -> None:
    """decode_event decides the common case in C; whatever the bytes, it must answer as the full reading
    does: the same event, the same problem, or the same refusal."""
    desk = SimDesk()
    event = desk.write("checkout", patron="P1", item="I1", due=DUE)
    obj = msgpack.unpackb(event.encode())
    obj["kind"] = kind
    for name, value in body_changes:
        obj["body"][name] = value
    for name, value in changes:
        obj[name] = value
    if drop:
        obj.pop("staff")
    if extra:
        obj["more"] = 1
    raw = msgpack.packb(obj, use_bin_type=True, unicode_errors="surrogateescape")
    assert _reading(decode_event, raw) == _reading(_decode_full, raw)


def _with_body_entry(raw_value: bytes) -> bytes:
    """A signed-looking event whose body holds one more entry, `x`, written as these exact msgpack bytes."""
    obj = msgpack.unpackb(SimDesk().write("checkout", patron="P1", item="I1", due=DUE).encode())
    body = obj["body"]
    packed_body = bytes([0x80 | (len(body) + 1)]) + b"".join(
        msgpack.packb(k) + msgpack.packb(v) for k, v in body.items()) + msgpack.packb("x") + raw_value
    return bytes([0x80 | len(obj)]) + b"".join(
        msgpack.packb(k) + (packed_body if k == "body" else msgpack.packb(v, use_bin_type=True))
        for k, v in obj.items())


@pytest.mark.parametrize("raw_value", [
    b"\xc7\x05\xff" + b"\x00" * 5,  # a timestamp ext of a length msgpack refuses
    b"\x81\x91\x01\x01",  # a map whose key is a list
    b"\x81\x80\x01",  # a map whose key is a map
    b"\x91" * 900 + b"\x01",  # nested deeper than msgspec reads
    b"\x91" * 1100 + b"\x01",  # deeper than msgpack reads
], ids=["bad-timestamp", "list-key", "map-key", "deep-900", "deep-1100"])
def test_what_the_fast_reading_cannot_read_gets_the_full_readings_answer(raw_value: bytes) -> None:
    """Found by review: these raised ValueError, TypeError or RecursionError out of decode_event, which
    would have left a refused change in the document and killed every link that carried it."""
    raw = _with_body_entry(raw_value)
    assert _reading(decode_event, raw) == _reading(_decode_full, raw)


@pytest.mark.parametrize("amount", ["0", "-1", "1.234", "abc", "NaN", "Infinity", ""])
def test_payment_amount_must_be_positive_money(amount: str) -> None:
    with pytest.raises(EventError):
        SimDesk().write("payment", patron="P1", amount=amount)


def test_hlc_tick_is_strictly_increasing_even_when_the_wall_clock_goes_back() -> None:
    now = [1000]
    clock = HybridClock(lambda: now[0])
    seen = []
    for wall in [1000, 1000, 999, 500, 1001, 1001]:
        now[0] = wall
        seen.append(clock.tick())
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


@settings(max_examples=200)
@given(
    skews=st.lists(st.integers(-60_000, 60_000), min_size=2, max_size=5),
    steps=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 2_000), st.booleans()),
                   max_size=60),
)
def test_hlc_order_never_contradicts_happened_before(skews, steps) -> None:
    """Desks with skewed clocks exchange events; whenever a could have been seen by b's writer
    (tracked independently with vector clocks), hlc(a) < hlc(b) and Event.happened_before agrees."""
    desks = [SimDesk(now=1_700_000_000_000 + s) for s in skews]
    written = []
    for a, b, advance, send in steps:
        a, b = a % len(desks), b % len(desks)
        for d in desks:
            d.now += advance
        if send and a != b:
            for e in list(desks[a].known.values()):
                desks[b].receive(e)
        else:
            written.append(desks[a].write("in_house_use", item=f"I{len(written)}"))
    knew = {e.id: k for d in desks for e_id, k in d.knew_at.items() for e in written if e.id == e_id}
    for y in written:
        for x in written:
            if x is y:
                continue
            if x.id in knew[y.id]:
                assert x.hlc < y.hlc and x.order_key < y.order_key
                assert x.happened_before(y)
            else:
                assert not x.happened_before(y)


def test_hlc_observe_advances_past_a_clock_far_ahead() -> None:
    clock = HybridClock(lambda: 1000)
    assert clock.observe(Hlc(5000, 3)) == Hlc(5000, 4)
    assert clock.tick() == Hlc(5000, 5)
