"""The SIP2 codec: round trips, the checksum, and nothing but Sip2Error on bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.ilsbridge import sip2
from node.ilsbridge.sip2 import ChecksumError, Message, Sip2Error

FIXED_ALPHABET = "0123456789YNU Z."  # what fixed fields hold in practice (no "A": no stray "AZ")
FIELD_IDS = st.from_regex(r"[A-Z]{2}", fullmatch=True).filter(lambda f: f not in ("AY", "AZ"))
VALUES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="|\r\n"), max_size=40
)


@st.composite
def messages(draw: st.DrawFn, with_seq: bool | None = None) -> Message:
    code = draw(st.sampled_from(sorted(sip2.LAYOUTS)))
    fixed = {
        name: draw(st.text(alphabet=FIXED_ALPHABET, min_size=width, max_size=width))
        for name, width in sip2.LAYOUTS[code]
    }
    fields = draw(st.lists(st.tuples(FIELD_IDS, VALUES), max_size=8))
    if with_seq is None:
        seq = draw(st.none() | st.integers(0, 9))
    else:
        seq = draw(st.integers(0, 9)) if with_seq else None
    return Message(code, fixed, fields, seq)


@settings(max_examples=300, deadline=None)
@given(messages())
def test_encode_decode_round_trip(msg: Message) -> None:
    data = sip2.encode(msg)
    assert data.endswith(b"\r")
    assert sip2.decode(data) == msg


@settings(max_examples=300, deadline=None)
@given(messages(with_seq=True), st.data())
def test_checksum_detects_any_single_byte_change(msg: Message, data: st.DataObject) -> None:
    frame = sip2.encode(msg)[:-1]  # the terminator is framing, not message
    index = data.draw(st.integers(0, len(frame) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != frame[index]))
    mutated = frame[:index] + bytes([new]) + frame[index + 1 :] + b"\r"
    with pytest.raises(Sip2Error):
        sip2.decode(mutated)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_sip2_error(raw: bytes) -> None:
    try:
        msg = sip2.decode(raw)
    except Sip2Error:
        return
    assert msg.code in sip2.LAYOUTS


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(sip2.LAYOUTS)), st.text(max_size=120))
def test_text_after_a_valid_code_raises_only_sip2_error(code: str, tail: str) -> None:
    try:
        sip2.decode((code + tail).encode("utf-8", "surrogatepass"))
    except Sip2Error:
        pass


def test_checksum_known_answers() -> None:
    # 3M's developer guide example for SC status, and the classic "please resend".
    assert sip2.checksum(b"990 402.00AY1AZ") == "FCB4"
    assert (
        sip2.encode(
            Message("99", {"status_code": "0", "max_print_width": " 40", "protocol_version": "2.00"}, seq=1)
        )
        == b"990 402.00AY1AZFCB4\r"
    )
    assert sip2.checksum(b"96AZ") == "FEF6"
    msg = sip2.decode(b"96AZFEF6\r")
    assert msg.code == "96" and msg.seq is None


def test_bad_checksum_is_a_checksum_error() -> None:
    with pytest.raises(ChecksumError):
        sip2.decode(b"990 402.00AY1AZFCB5\r")
    with pytest.raises(ChecksumError):
        sip2.decode(b"990 402.00AY1AZfcb4\r".replace(b"fcb4", b"0000"))


def test_lower_case_checksum_is_refused() -> None:
    with pytest.raises(Sip2Error):
        sip2.decode(b"990 402.00AY1AZfcb4\r")


def test_checkout_request_layout() -> None:
    at = datetime(2024, 3, 5, 14, 30, 7, tzinfo=UTC)
    msg = sip2.checkout("MAIN", "23000000001234", "39000000000042", at, no_block=True, seq=3)
    wire = sip2.encode(msg)
    body = wire.decode()
    assert body.startswith(
        "11YY20240305   Z143007" + " " * 18 + "AOMAIN|AA23000000001234|AB39000000000042|AC|"
    )
    assert body.endswith(f"AY3AZ{sip2.checksum(wire[:-5])}\r")
    decoded = sip2.decode(wire)
    assert decoded.flag("no_block")
    assert sip2.parse_date(decoded.fixed["transaction_date"]) == at
    assert sip2.parse_date(decoded.fixed["nb_due_date"]) is None


def test_non_ascii_values_survive() -> None:
    msg = Message(
        "64",
        {
            "patron_status": " " * 14,
            "language": "000",
            "transaction_date": sip2.format_date(None),
            "hold_items_count": "0000",
            "overdue_items_count": "0000",
            "charged_items_count": "0001",
            "fine_items_count": "0000",
            "recall_items_count": "0000",
            "unavailable_holds_count": "0000",
        },
        [("AO", "MAIN"), ("AA", "23000000000007"), ("AE", "Jiří Dvořák"), ("AF", "王 Müller")],
        seq=7,
    )
    decoded = sip2.decode(sip2.encode(msg))
    assert decoded.get("AE") == "Jiří Dvořák"
    assert decoded.get_all("AF") == ["王 Müller"]


def test_last_field_without_separator_is_accepted() -> None:
    msg = sip2.decode(b"941\r")
    assert msg.fixed == {"ok": "1"} and msg.fields == []
    msg = sip2.decode(b"18030201" + b"20240101    120000" + b"ABitem1|AJA title\r")
    assert msg.get("AJ") == "A title"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r",
        b"1",
        b"ZZ0000",
        b"11YY2024",  # truncated fixed fields
        b"941|x\r",  # "|x" is no field id
        b"941AY1\r",  # AY outside the trailer
        b"94\xff1\r",  # not UTF-8
        b"941\r941\r",  # two messages in one frame
    ],
)
def test_malformed_messages_raise_sip2_error(raw: bytes) -> None:
    with pytest.raises(Sip2Error):
        sip2.decode(raw)


@pytest.mark.parametrize(
    "msg",
    [
        Message("11", {"sc_renewal_policy": "Y"}),  # missing fixed fields
        Message("94", {"ok": "10"}),  # wrong width
        Message("94", {"ok": "1"}, [("AF", "a|b")]),  # separator in a value
        Message("94", {"ok": "1"}, [("A", "x")]),  # bad field id
        Message("94", {"ok": "1"}, [("AZ", "x")]),  # reserved id
        Message("94", {"ok": "1"}, seq=10),
        Message("42", {}),  # unknown code
    ],
)
def test_invalid_messages_are_not_encoded(msg: Message) -> None:
    with pytest.raises(Sip2Error):
        sip2.encode(msg)


def test_dates() -> None:
    at = datetime(2025, 12, 31, 23, 59, 0, tzinfo=UTC)
    text = sip2.format_date(at)
    assert text == "20251231   Z235900" and len(text) == 18
    assert sip2.parse_date(text) == at
    local = sip2.parse_date("20251231    235900")
    assert local is not None and local.tzinfo is None
    assert sip2.format_date(None) == " " * 18
    for bad in ("2025123    235900", "20251331    235900", "20251231 CET235900"):
        with pytest.raises(Sip2Error):
            sip2.parse_date(bad)


def test_amounts() -> None:
    assert sip2.parse_amount(" 12.50 ") == Decimal("12.50")
    for bad in ("", "twelve", "NaN", "Infinity"):
        with pytest.raises(Sip2Error):
            sip2.parse_amount(bad)
