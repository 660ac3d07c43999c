"""Properties of the offline file formats: any bytes are read without raising, and what circmesh writes it
reads back as the same operations, at the precision of each format."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.ilsbridge.formats import FORMATS, ParseResult, detect, evergreen, export_report, parse
from node.ilsbridge.formats.common import UNEXPECTED
from node.ilsbridge.operation import Operation

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Printable characters: letters, digits, punctuation, symbols; an ASCII space may sit inside an id.
_PRINTABLE = st.characters(categories=("L", "N", "P", "S"), codec="utf-8")
ids = st.text(alphabet=_PRINTABLE | st.just(" "), min_size=1, max_size=64).filter(
    lambda text: text.strip(" ") == text
)
whens = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 12, 31), timezones=st.just(UTC))
zones = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def assert_well_formed(result: ParseResult, data: bytes) -> None:
    assert isinstance(result, ParseResult)
    line_count = max(1, data.count(b"\n") + 1, data.count(b"\r") + 1)
    for error in result.errors:
        assert not error.reason.startswith(UNEXPECTED), error
        assert 1 <= error.line <= line_count
        assert len(error.text) <= 201
    lines = [line for line, _ in result.operations]
    assert lines == sorted(lines)
    for _line, operation in result.operations:
        assert operation.at.utcoffset() == timedelta(0)


# --- any input is read without raising ---------------------------------------------------------------

FRAGMENTS = [
    "Version=1.0", "Generator=koct-firefox", "Generator=kocDesktop", "2024-03-05 14:02:11",
    "2024-13-45 99:99:99", "2026-07-22 10-15-30 000", "issue", "return", "payment", "5.00", "12,5", "-1",
    "\t", " ", "P1", "I1", "=", "202403050902L", "202403050905R", "20241301", "{", "}", '"type":"checkout"',
    '"timestamp":1709647331', ",", '"barcode":"I1"', '"patron_barcode":"P1"', '"due_date":"2024-03-19"',
    '"count":3', '"user":{"card":{}}', '"type":"register"', "[", "]", "null", "NaN", "\x00", "\x07", "\u200b",
    "é", "\r",
]  # fmt: skip
lines_of_fragments = st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=12).map("".join), max_size=8).map(
    lambda lines: "\n".join(lines).encode("utf-8")
)


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), data=st.binary(max_size=600), tz=zones)
def test_any_bytes_give_a_parse_result(fmt, data, tz):
    assert_well_formed(parse(fmt, data, tz=tz), data)


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), data=lines_of_fragments, tz=zones)
def test_lines_made_of_format_fragments_give_a_parse_result(fmt, data, tz):
    assert_well_formed(parse(fmt, data, tz=tz), data)


@SETTINGS
@given(data=st.binary(max_size=600) | lines_of_fragments)
def test_detect_never_raises(data):
    assert detect(data) in (*FORMATS, None)


# --- round trips ----------------------------------------------------------------------------------------


def seconds(when: datetime) -> datetime:
    return when.replace(microsecond=0)


koc_operations = st.lists(
    st.one_of(
        st.builds(lambda w, i, p: Operation(kind="checkout", at=w, item=i, patron=p), whens, ids, ids),
        st.builds(lambda w, i: Operation(kind="checkin", at=w, item=i), whens, ids),
        st.builds(
            lambda w, p, a: Operation(kind="payment", at=w, patron=p, amount=a),
            whens,
            ids,
            st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999999"), places=2),
        ),
    ),
    max_size=15,
)


@SETTINGS
@given(ops=koc_operations, tz=zones)
def test_koc_export_then_parse_gives_the_same_operations_to_the_second(ops, tz):
    data, skipped = export_report("koc", ops, tz=tz)
    assert skipped == []
    result = parse("koc", data, tz=tz)
    assert result.errors == []
    assert result.operations == [
        (number, Operation(kind=op.kind, at=seconds(op.at), item=op.item, patron=op.patron, amount=op.amount))
        for number, op in enumerate(ops, start=2)
    ]
    assert detect(data) == "koc"


offcirc_operations = st.lists(
    st.one_of(
        st.builds(lambda w, i, p: Operation(kind="checkout", at=w, item=i, patron=p), whens, ids, ids),
        st.builds(lambda w, i: Operation(kind="checkin", at=w, item=i), whens, ids),
    ),
    max_size=15,
)


@SETTINGS
@given(ops=offcirc_operations, tz=zones)
def test_offcirc_export_then_parse_gives_the_same_operations_to_the_minute(ops, tz):
    data, skipped = export_report("offcirc", ops, tz=tz)
    assert skipped == []
    result = parse("offcirc", data, tz=tz)
    assert result.errors == []
    assert result.operations == [
        (
            number,
            Operation(
                kind=op.kind, at=op.at.replace(second=0, microsecond=0), item=op.item, patron=op.patron
            ),
        )
        for number, op in enumerate(ops, start=1)
    ]
    if ops:
        assert detect(data) == "offcirc"


dues = st.none() | whens.map(lambda when: when.replace(microsecond=when.microsecond // 1000 * 1000))
detail_names = st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True).filter(
    lambda name: name not in evergreen._RESERVED_DETAILS
)
address_names = st.from_regex(r"[a-z][a-z_]{0,15}", fullmatch=True).filter(
    lambda name: name not in evergreen._SKIPPED_ADDRESS_FIELDS
)
detail_values = st.text(alphabet=_PRINTABLE | st.just(" "), max_size=30)
registration_details = st.tuples(
    st.dictionaries(detail_names, detail_values, max_size=6),
    st.dictionaries(address_names, detail_values, max_size=4),
).map(lambda pair: tuple(sorted([*pair[0].items(), *((f"address.{k}", v) for k, v in pair[1].items())])))

evergreen_operations = st.lists(
    st.one_of(
        st.builds(
            lambda w, i, p, d: Operation(kind="checkout", at=w, item=i, patron=p, due=d),
            whens,
            ids,
            ids,
            dues,
        ),
        st.builds(
            lambda w, i, p, d: Operation(kind="renew", at=w, item=i, patron=p, due=d),
            whens,
            ids,
            st.none() | ids,
            dues,
        ),
        st.builds(lambda w, i: Operation(kind="checkin", at=w, item=i), whens, ids),
        st.builds(
            lambda w, i, n: Operation(
                kind="in_house_use", at=w, item=i, details=(("count", str(n)),) if n > 1 else ()
            ),
            whens,
            ids,
            st.integers(min_value=1, max_value=10_000),
        ),
        st.builds(
            lambda w, p, d: Operation(kind="patron_register", at=w, patron=p, details=d),
            whens,
            ids,
            registration_details,
        ),
    ),
    max_size=12,
)


@SETTINGS
@given(ops=evergreen_operations, tz=zones)
def test_evergreen_export_then_parse_gives_the_same_operations_to_the_second(ops, tz):
    data, skipped = export_report("evergreen", ops, tz=tz)
    assert skipped == []
    result = parse("evergreen", data, tz=tz)
    assert result.errors == []
    expected = [
        (number, Operation(kind=op.kind, at=seconds(op.at), item=op.item, patron=op.patron, due=op.due,
                           details=op.details))
        for number, op in enumerate(ops, start=1)
    ]  # fmt: skip
    assert result.operations == expected
    if ops:
        assert detect(data) == "evergreen"


@SETTINGS
@given(ops=koc_operations | offcirc_operations | evergreen_operations, tz=zones)
def test_export_keeps_every_operation_or_says_why_not(ops, tz):
    for fmt in FORMATS:
        data, skipped = export_report(fmt, ops, tz=tz)
        assert isinstance(data, bytes)
        written = len(parse(fmt, data, tz=tz).operations)
        assert written + len(skipped) == len(ops)
        assert all(reason for _op, reason in skipped)
