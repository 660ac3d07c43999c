"""The offline file formats on fixed files, written out byte for byte as each tool writes them."""

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from node.ilsbridge.formats import FORMATS, LineError, ParseResult, detect, export, export_report, parse
from node.ilsbridge.operation import Operation

EAST = timezone(timedelta(hours=2))
WEST = timezone(timedelta(hours=-5))


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def checkout(when, item, patron, **more) -> Operation:
    return Operation(kind="checkout", at=when, item=item, patron=patron, **more)


def checkin(when, item, **more) -> Operation:
    return Operation(kind="checkin", at=when, item=item, **more)


def operations(result: ParseResult) -> list[Operation]:
    return [operation for _line, operation in result.operations]


def reasons(result: ParseResult) -> dict[int, str]:
    return {error.line: error.reason for error in result.errors}


# --- .koc -------------------------------------------------------------------------------------------

KOCT = (
    b"Version=1.0\tGenerator=koct-firefox\tGeneratorVersion=0.1\r\n"
    b"2024-03-05 14:02:11\tissue\t23529000035676\t39999000001234\t\r\n"
    b"2024-03-05 14:02:19\tissue\t23529000035676\t39999000001242\t\r\n"
    b"2024-03-05 14:05:40\treturn\t39999000001234\t\r\n"
)

DESKTOP = (
    b"Version=1.0\tGenerator=kocDesktop\tGeneratorVersion=2.0.0\r\n"
    b"2026-07-22 10-15-30 000\tissue\t23529001000463\t31000000123456\r\n"
    b"2026-07-22 10-16-02 250\treturn\t31000000654321\r\n"
    b"2026-07-22 10-17-45 000\tpayment\t23529001000463\t5.00\r\n"
)

DESKTOP_QT4 = (
    b"Version=1.0\tGenerator=kocQt4\tGeneratorVersion=1.0\n"
    b"2010-05-03 09:12:44 517\tissue\t23529000035676\t39999000001234\n"
    b"2010-05-03 09:13:02 008\treturn\t39999000001234\n"
)


def test_koct_file_is_read_as_utc_whatever_the_desk_zone():
    result = parse("koc", KOCT, tz=WEST)
    assert result.errors == []
    assert result.operations == [
        (2, checkout(at(2024, 3, 5, 14, 2, 11), "39999000001234", "23529000035676")),
        (3, checkout(at(2024, 3, 5, 14, 2, 19), "39999000001242", "23529000035676")),
        (4, checkin(at(2024, 3, 5, 14, 5, 40), "39999000001234")),
    ]


def test_desktop_tool_file_is_read_in_local_time_with_milliseconds():
    result = parse("koc", DESKTOP, tz=EAST)
    assert result.errors == []
    assert result.operations == [
        (2, checkout(at(2026, 7, 22, 8, 15, 30), "31000000123456", "23529001000463")),
        (3, checkin(at(2026, 7, 22, 8, 16, 2, 250_000), "31000000654321")),
        (4, Operation(kind="payment", at=at(2026, 7, 22, 8, 17, 45), patron="23529001000463",
                      amount=Decimal("5.00"))),
    ]  # fmt: skip


def test_old_desktop_tool_with_colons_and_lf_is_local_time():
    result = parse("koc", DESKTOP_QT4, tz=WEST)
    assert result.errors == []
    assert operations(result) == [
        checkout(at(2010, 5, 3, 14, 12, 44, 517_000), "39999000001234", "23529000035676"),
        checkin(at(2010, 5, 3, 14, 13, 2, 8_000), "39999000001234"),
    ]


def test_without_header_the_timestamp_shape_decides_the_zone_and_no_line_is_lost():
    data = (
        b"2024-03-05 14:02:11\tissue\tP1\tI1\t\r\n"  # KOCT shape: UTC
        b"2024-03-05 14-02-11 000\treturn\tI1\r\n"  # desktop shape: local
        b"2024-03-05 14:02:11 125\treturn\tI2\r\n"  # wiki shape with milliseconds: local
    )
    result = parse("koc", data, tz=EAST)
    assert result.errors == []
    assert result.operations == [
        (1, checkout(at(2024, 3, 5, 14, 2, 11), "I1", "P1")),
        (2, checkin(at(2024, 3, 5, 12, 2, 11), "I1")),
        (3, checkin(at(2024, 3, 5, 12, 2, 11, 125_000), "I2")),
    ]


def test_other_version_bom_blank_lines_and_trailing_whitespace_are_accepted():
    data = (
        b"\xef\xbb\xbfVersion=2.0\tGenerator=koct-firefox\tGeneratorVersion=9\r\n"
        b"\r\n"
        b"   \t \r\n"
        b"2024-03-05 14:02:11\tissue\t P1 \t I1 \t\t  \r\n"
        b"\n"
        b"2024-03-05 14:05:40\treturn\tI1   "
    )
    result = parse("koc", data, tz=UTC)
    assert result.errors == []
    assert result.operations == [
        (4, checkout(at(2024, 3, 5, 14, 2, 11), "I1", "P1")),
        (6, checkin(at(2024, 3, 5, 14, 5, 40), "I1")),
    ]


def test_joined_files_switch_zone_at_each_header():
    result = parse("koc", KOCT + DESKTOP, tz=EAST)
    assert result.errors == []
    lines = [line for line, _ in result.operations]
    assert lines == [2, 3, 4, 6, 7, 8]
    assert operations(result)[0].at == at(2024, 3, 5, 14, 2, 11)
    assert operations(result)[3].at == at(2026, 7, 22, 8, 15, 30)


def test_old_mac_line_endings_are_split_on_cr():
    data = b"Version=1.0\tGenerator=koct-firefox\tGeneratorVersion=0.1\r2024-03-05 14:05:40\treturn\tI1\t\r"
    assert parse("koc", data, tz=UTC).operations == [(2, checkin(at(2024, 3, 5, 14, 5, 40), "I1"))]


KOC_BAD = [
    (b"2024-13-01 10:00:00\tissue\tP1\tI1\t", "timestamp '2024-13-01 10:00:00' is not a valid date"),
    (b"2024-01-01 25:00:00\treturn\tI1\t", "timestamp '2024-01-01 25:00:00' is not a valid time"),
    (b"2024-01-01 10:00:00\tlend\tP1\tI1\t", "unknown action 'lend' (expected issue, return or payment)"),
    (b"2024-01-01 10:00:00\tissue\tP1\t", "missing item barcode"),
    (b"2024-01-01 10:00:00\treturn\tP1\tI1\t",
     "unexpected extra field 'I1': a return line has only the item barcode"),
    (b"2024-01-01 10:00:00\treturn\t   \t", "missing item barcode"),
    (b"2024-01-01 10:00:00\treturn\t" + b"A" * 65 + b"\t",
     "item barcode is 65 characters long; at most 64 are allowed"),
    (b"2024-01-01 10:00:00\treturn\tAB\x07C\t", "item barcode contains a control character (U+0007)"),
    (b"2024-01-01 10:00:00\tpayment\tP1\t12,5x\t", "amount '12,5x' is not a number"),
    (b"2024-01-01 10:00:00\tpayment\tP1\t12,50",
     "amount '12,50' is not a number (write decimals with a point)"),
    (b"2024-01-01 10:00:00\tpayment\tP1\t0.00", "amount '0.00' must be more than zero"),
    (b"2024-01-01 10:00:00\tpayment\tP1", "missing amount"),
    (b"caf\xe9\tissue",
     "line is not UTF-8 text (byte 0xe9 at column 4); save the file as UTF-8 and import it again"),
    (b"yesterday\tissue\tP1\tI1",
     "timestamp 'yesterday' is not in a known form "
     "(expected 'YYYY-MM-DD HH:MM:SS' or 'YYYY-MM-DD HH-MM-SS mmm')"),
    (b"2024-01-01 10:00:00", "missing action (expected issue, return or payment)"),
    (b"2024-01-01 10:00:00\tissue\t\tI1", "missing patron cardnumber"),
    (b"2024-01-01 10:00:00\treturn\tI\xe2\x80\x8bX",
     "item barcode contains a character that cannot be printed (U+200B)"),
    (b"2024-01-01 10:00:00\tIssue\tP1\tI1", "unknown action 'Issue' (expected issue, return or payment)"),
    (b"2024-02-30 10:00:00\treturn\tI1", "timestamp '2024-02-30 10:00:00' is not a valid date"),
    (b"\tissue\tP1\tI1", "missing timestamp"),
]  # fmt: skip


def test_every_malformed_koc_line_is_reported_with_its_number_reason_and_text():
    header = b"Version=1.0\tGenerator=koct-firefox\tGeneratorVersion=0.1\r\n"
    body = b"".join(line + b"\r\n\r\n" for line, _ in KOC_BAD)  # a blank line after each: numbering counts it
    good = b"2024-01-01 10:00:00\treturn\tOK1\t\r\n"
    result = parse("koc", header + body + good, tz=UTC)
    expected = {2 + 2 * i: reason for i, (_line, reason) in enumerate(KOC_BAD)}
    assert reasons(result) == expected
    texts = {error.line: error.text for error in result.errors}
    assert texts[2] == "2024-13-01 10:00:00\tissue\tP1\tI1\t"
    assert texts[2 + 2 * 12] == "caf\ufffd\tissue"
    assert result.operations == [(2 + 2 * len(KOC_BAD), checkin(at(2024, 1, 1, 10), "OK1"))]


def test_a_long_bad_line_is_shown_cut_to_about_200_characters():
    line = b"2024-01-01 10:00:00\treturn\t" + b"X" * 500
    (error,) = parse("koc", line, tz=UTC).errors
    assert error == LineError(1, "item barcode is 500 characters long; at most 64 are allowed",
                              line.decode()[:200] + "…")  # fmt: skip


def test_koc_export_is_koct_form_in_utc_with_a_trailing_tab_and_crlf():
    ops = [
        checkout(datetime(2024, 3, 5, 15, 2, 11, 900_000, tzinfo=timezone(timedelta(hours=1))), "I1", "P1"),
        checkin(at(2024, 3, 5, 14, 5, 40), "I1"),
        Operation(kind="payment", at=at(2024, 3, 5, 14, 6, 0), patron="P1", amount=Decimal("2.50")),
    ]
    assert export("koc", ops, tz=WEST) == (
        b"Version=1.0\tGenerator=circmesh\tGeneratorVersion=0.1.0\r\n"
        b"2024-03-05 14:02:11\tissue\tP1\tI1\t\r\n"
        b"2024-03-05 14:05:40\treturn\tI1\t\r\n"
        b"2024-03-05 14:06:00\tpayment\tP1\t2.50\t\r\n"
    )
    assert export("koc", [], tz=UTC, generator="circmesh-desk", generator_version="2") == (
        b"Version=1.0\tGenerator=circmesh-desk\tGeneratorVersion=2\r\n"
    )


def test_koc_export_skips_what_koha_cannot_take_and_says_why():
    renew = Operation(kind="renew", at=at(2024, 3, 5), item="I1", patron="P1")
    use = Operation(kind="in_house_use", at=at(2024, 3, 5), item="I1")
    register = Operation(kind="patron_register", at=at(2024, 3, 5), patron="P9")
    bad_item = checkin(at(2024, 3, 5), "I\t1")
    no_patron = Operation(kind="checkout", at=at(2024, 3, 5), item="I1")
    big = Operation(kind="payment", at=at(2024, 3, 5), patron="P1", amount=Decimal("1E+20"))
    negative = Operation(kind="payment", at=at(2024, 3, 5), patron="P1", amount=Decimal("-1"))
    good = checkin(at(2024, 3, 5), "I1")
    data, skipped = export_report(
        "koc", [renew, use, register, bad_item, no_patron, big, negative, good], tz=UTC
    )
    assert data.endswith(b"2024-03-05 00:00:00\treturn\tI1\t\r\n")
    assert data.count(b"\r\n") == 2
    assert skipped == [
        (renew, "a .koc file has no renewals (Koha renews when an item is issued again to the same patron)"),
        (use, "a .koc file has no in-house uses"),
        (register, "a .koc file has no patron registrations"),
        (bad_item, "item barcode contains a control character (U+0009)"),
        (no_patron, "a checkout without a patron cannot be written"),
        (big, "amount 100000000000000000000 has too many digits for a .koc file"),
        (negative, "amount -1 must be more than zero"),
    ]


def test_koc_export_refuses_a_generator_name_that_would_break_the_header():
    with pytest.raises(ValueError):
        export("koc", [], tz=UTC, generator="bad\tname")


# --- OffCirc.dat --------------------------------------------------------------------------------------

ALMA_PADDED = (  # University of Oregon / Portland State tool: every record padded to 93 characters, CRLF
    b"202403050902L39999000001234" + b" " * 66 + b"23529000035676\r\n"
    b"202403050905R39999000001234" + b" " * 66 + b"\r\n"
    b"202403050907LBOOK 0042" + b" " * 71 + b"23529000035676\r\n"
)
ALMA_PISA = (  # University of Pisa tool: loans padded to 80 + user id, returns unpadded, LF
    b"202403050902L39999000001234" + b" " * 66 + b"23529000035676\n"
    b"202403050905R39999000001234\n"
)  # fmt: skip
ALMA_TABS = b"202403050902L39999000001234\t23529000035676\r\n202403050905R39999000001234\r\n"
ALMA_SPACES = b"202403050902L39999000001234 23529000035676\n202403050905R39999000001234 \n"


def test_alma_padded_form_is_read_in_local_time_with_spaces_allowed_in_the_barcode_field():
    result = parse("offcirc", ALMA_PADDED, tz=WEST)
    assert result.errors == []
    assert result.operations == [
        (1, checkout(at(2024, 3, 5, 14, 2), "39999000001234", "23529000035676")),
        (2, checkin(at(2024, 3, 5, 14, 5), "39999000001234")),
        (3, checkout(at(2024, 3, 5, 14, 7), "BOOK 0042", "23529000035676")),
    ]


@pytest.mark.parametrize("data", [ALMA_PISA, ALMA_TABS, ALMA_SPACES], ids=["pisa", "tabs", "spaces"])
def test_alma_other_forms_give_the_same_operations(data):
    result = parse("offcirc", data, tz=WEST)
    assert result.errors == []
    assert result.operations == [
        (1, checkout(at(2024, 3, 5, 14, 2), "39999000001234", "23529000035676")),
        (2, checkin(at(2024, 3, 5, 14, 5), "39999000001234")),
    ]


def test_alma_ambiguous_local_time_is_read_as_its_first_occurrence():
    paris = ZoneInfo("Europe/Paris")  # 2024-10-27 02:30 happens twice there
    (operation,) = operations(parse("offcirc", b"202410270230RI1\n", tz=paris))
    assert operation.at == at(2024, 10, 27, 0, 30)


OFFCIRC_BAD = [
    (b"202413011000LI1\tP1", "timestamp '202413011000' is not a valid date"),
    (b"202401012500LI1\tP1", "timestamp '202401012500' is not a valid time"),
    (b"202401011000XI1\tP1", "unknown action letter 'X' (expected L for a loan or R for a return)"),
    (b"202401011000li1\tp1", "unknown action letter 'l' (expected L for a loan or R for a return)"),
    (b"202401011000L", "missing item barcode"),
    (b"202401011000L\tP1", "missing item barcode"),
    (b"202401011000LI1", "missing patron id (a loan needs one)"),
    (b"202401011000RI1\tP1", "a return line takes no patron id, found 'P1'"),
    (b"202401011000LI1 P1 X",
     "unexpected extra field 'X': a line has only the item barcode and, for a loan, the patron id"),
    (b"2024-01-01 10:00 LI1",
     "line does not start with a date and time: found '2024-01-01' "
     "(expected YYYYMMDDHHMM, then L or R, then the item barcode)"),
    (b"202401011000", "missing action letter (expected YYYYMMDDHHMM, then L or R, then the item barcode)"),
    (b"202401011000LA\x01B\tP1", "item barcode contains a control character (U+0001)"),
    (b"202401011000R" + b"9" * 65, "item barcode is 65 characters long; at most 64 are allowed"),
    (b"202401011000LI1\tP\x7f", "patron id contains a control character (U+007F)"),
    (b"\xff\xfe2024",
     "line is not UTF-8 text (byte 0xff at column 1); save the file as UTF-8 and import it again"),
]  # fmt: skip


def test_every_malformed_offcirc_line_is_reported_with_its_number_and_reason():
    data = b"".join(line + b"\r\n" for line, _ in OFFCIRC_BAD) + b"\r\n202401011000RGOOD\r\n"
    result = parse("offcirc", data, tz=UTC)
    assert reasons(result) == {i + 1: reason for i, (_line, reason) in enumerate(OFFCIRC_BAD)}
    assert result.operations == [(len(OFFCIRC_BAD) + 2, checkin(at(2024, 1, 1, 10), "GOOD"))]


def test_offcirc_export_pads_every_record_to_93_characters_in_local_time():
    ops = [
        checkout(at(2024, 3, 5, 14, 2, 59), "39999000001234", "23529000035676"),
        checkin(at(2024, 3, 5, 14, 5, 1), "39999000001234"),
    ]
    data = export("offcirc", ops, tz=WEST)
    assert data == (
        b"202403050902L39999000001234" + b" " * 66 + b"23529000035676\r\n"
        b"202403050905R39999000001234" + b" " * 66 + b"\r\n"
    )
    assert all(len(line) == 93 for line in data.decode().replace("\r\n", "\n").split("\n")[1:-1])


def test_offcirc_export_skips_what_alma_cannot_take():
    ops = [
        Operation(kind="renew", at=at(2024, 3, 5), item="I1", patron="P1"),
        Operation(kind="payment", at=at(2024, 3, 5), patron="P1", amount=Decimal("1")),
        Operation(kind="in_house_use", at=at(2024, 3, 5), item="I1"),
        Operation(kind="patron_register", at=at(2024, 3, 5), patron="P9"),
        Operation(kind="checkout", at=at(2024, 3, 5), item="I1"),
    ]
    data, skipped = export_report("offcirc", ops, tz=UTC)
    assert data == b""
    assert [reason for _op, reason in skipped] == [
        "OffCirc.dat has no renewals",
        "OffCirc.dat has no payments",
        "OffCirc.dat has no in-house uses",
        "OffCirc.dat has no patron registrations",
        "a loan without a patron cannot be written",
    ]


# --- Evergreen pending.xacts ----------------------------------------------------------------------------

EVERGREEN = (
    b'{"timestamp":1709647331,"type":"checkout","delta":0,"noncat_type":"","patron_barcode":"23529000035676",'
    b'"barcode":"39999000001234","due_date":"2024-03-19T04:59:59.000Z","checkout_time":"2024-03-05T14:02:11.512Z"}\n'
    b'{"timestamp":1709647400,"type":"renew","delta":0,"barcode":"39999000001242",'
    b'"due_date":"2024-03-26T04:59:59.000Z","checkout_time":"2024-03-05T14:03:20.101Z"}\n'
    b'{"timestamp":1709647500,"type":"in_house_use","delta":0,"barcode":"39999000001259","count":3}\n'
    b'{"timestamp":1709647540,"type":"checkin","delta":0,"backdate":"2024-03-04T22:00:00.000Z",'
    b'"barcode":"39999000001234"}\n'
    b'{"user":{"isnew":true,"active":"t","card":{"id":-2,"isnew":true,"active":"t","_primary":"on",'
    b'"barcode":"23529000099999"},"cards":[{"id":-2,"barcode":"23529000099999"}],"home_ou":4,'
    b'"stat_cat_entries":[],"groups":[],"addresses":[{"id":-1,"isnew":true,"valid":"t",'
    b'"address_type":"MAILING","_is_mailing":true,"_is_billing":true,"within_city_limits":"f",'
    b'"country":"USA","street1":"1 Main St","city":"Springfield","post_code":"12345"}],'
    b'"first_given_name":"Ada","family_name":"Lovelace","passwd":"4821","profile":2,'
    b'"expire_date":"2027-03-05T14:06:00.000Z","juvenile":false,"ident_type":1,"usrname":"23529000099999",'
    b'"id":-1},"timestamp":1709647600,"type":"register","delta":0}\n'
)


def test_evergreen_lines_of_each_type_give_the_expected_operations():
    result = parse("evergreen", EVERGREEN, tz=WEST)
    assert result.errors == []
    assert result.operations == [
        (1, checkout(at(2024, 3, 5, 14, 2, 11), "39999000001234", "23529000035676",
                     due=at(2024, 3, 19, 4, 59, 59))),
        (2, Operation(kind="renew", at=at(2024, 3, 5, 14, 3, 20), item="39999000001242",
                      due=at(2024, 3, 26, 4, 59, 59))),
        (3, Operation(kind="in_house_use", at=at(2024, 3, 5, 14, 5), item="39999000001259",
                      details=(("count", "3"),))),
        (4, checkin(at(2024, 3, 5, 14, 5, 40), "39999000001234",
                    details=(("backdate", "2024-03-04T22:00:00.000Z"),))),
        (5, Operation(kind="patron_register", at=at(2024, 3, 5, 14, 6, 40), patron="23529000099999", details=(
            ("active", "t"),
            ("address.address_type", "MAILING"),
            ("address.city", "Springfield"),
            ("address.country", "USA"),
            ("address.post_code", "12345"),
            ("address.street1", "1 Main St"),
            ("address.valid", "t"),
            ("address.within_city_limits", "f"),
            ("expire_date", "2027-03-05T14:06:00.000Z"),
            ("family_name", "Lovelace"),
            ("first_given_name", "Ada"),
            ("home_ou", "4"),
            ("ident_type", "1"),
            ("juvenile", "f"),
            ("profile", "2"),
            ("usrname", "23529000099999"),
        ))),
    ]  # fmt: skip


def test_evergreen_due_dates_without_offset_are_local_and_a_bare_date_is_the_end_of_that_day():
    data = (
        b'{"timestamp":1709647331,"type":"renew","barcode":"I1","due_date":"2024-03-19T12:00:00"}\n'
        b'{"timestamp":1709647331,"type":"renew","barcode":"I2","due_date":"2024-03-19"}\n'
        b'{"timestamp":1709647331,"type":"renew","barcode":"I3","due_date":"2024-03-19T23:59:59-0500"}\n'
        b'{"timestamp":"1709647331","type":"checkin","barcode":"I4","backdate":""}\n'
    )
    result = parse("evergreen", data, tz=EAST)
    assert result.errors == []
    dues = [operation.due for operation in operations(result)]
    assert dues == [at(2024, 3, 19, 10), at(2024, 3, 19, 21, 59, 59), at(2024, 3, 20, 4, 59, 59), None]
    assert operations(result)[3].at == at(2024, 3, 5, 14, 2, 11)


def test_evergreen_checkout_time_apart_from_the_timestamp_is_kept():
    data = (
        b'{"timestamp":1709647331,"type":"checkout","delta":0,"patron_barcode":"P1","barcode":"I1",'
        b'"due_date":"2024-03-19T04:59:59.000Z","checkout_time":"2024-03-05T09:00:00.000Z"}\n'
    )
    (operation,) = operations(parse("evergreen", data, tz=UTC))
    assert operation.details == (("checkout_time", "2024-03-05T09:00:00.000Z"),)
    assert export("evergreen", [operation], tz=UTC) == data


EVERGREEN_BAD = [
    (b'{"timestamp":1709647331,"type":"checkout"',
     "line is not valid JSON (Expecting ',' delimiter at column 42)"),
    (b"[1,2,3]", "JSON of the wrong shape: expected an object, found an array"),
    (b'"just text"', "JSON of the wrong shape: expected an object, found text"),
    (b'{"timestamp":1709647331}', "missing field 'type'"),
    (b'{"timestamp":1709647331,"type":7}', "field 'type' must be text, found a number"),
    (b'{"timestamp":1709647331,"type":"lend"}',
     "unknown transaction type 'lend' (expected checkout, renew, checkin, in_house_use or register)"),
    (b'{"type":"checkin","barcode":"I1"}', "missing field 'timestamp'"),
    (b'{"timestamp":"soon","type":"checkin","barcode":"I1"}', "timestamp 'soon' is not a number"),
    (b'{"timestamp":true,"type":"checkin","barcode":"I1"}', "timestamp must be a number, found true/false"),
    (b'{"timestamp":NaN,"type":"checkin","barcode":"I1"}', "line is not valid JSON"),
    (b'{"timestamp":1e300,"type":"checkin","barcode":"I1"}', "timestamp '1e+300' is out of range"),
    (b'{"timestamp":1709647331,"type":"checkin","barcode":"I1","delta":"x"}', "delta 'x' is not a number"),
    (b'{"timestamp":"' + b"9" * 5000 + b'","type":"checkin","barcode":"I1"}',
     "timestamp '" + "9" * 40 + "…' is not a number"),
    (b'{"timestamp":1709647331,"type":"checkin"}', "missing item barcode"),
    (b'{"timestamp":1709647331,"type":"checkin","barcode":["I1"]}',
     "field 'barcode' must be text, found an array"),
    (b'{"timestamp":1709647331,"type":"checkin","barcode":"I\\u0000"}',
     "item barcode contains a control character (U+0000)"),
    (b'{"timestamp":1709647331,"type":"checkout","barcode":"I1"}', "missing patron barcode"),
    (b'{"timestamp":1709647331,"type":"checkout","barcode":"I1","patron_barcode":"P1",'
     b'"due_date":"next week"}',
     "due date 'next week' is not a valid date and time"),
    (b'{"timestamp":1709647331,"type":"in_house_use","barcode":"I1","count":-2}',
     "count -2 is out of range (1 to 10000)"),
    (b'{"timestamp":1709647331,"type":"in_house_use","barcode":"I1","count":"two"}',
     "count 'two' is not a whole number"),
    (b'{"timestamp":1709647331,"type":"checkout","patron_barcode":"P1","noncat":1,"noncat_type":"3",'
     b'"noncat_count":"2"}',
     "non-catalogued checkout (noncat_type '3', count '2') has no item barcode; circmesh cannot record it"),
    (b'{"timestamp":1709647331,"type":"register","user":{"family_name":"X"}}',
     "registration has no card barcode (user.card.barcode)"),
    (b'{"timestamp":1709647331,"type":"register"}', "registration has no patron ('user' must be an object)"),
    (b"[" * 100_000 + b"]" * 100_000, "line is not valid JSON"),
]  # fmt: skip


def test_every_malformed_evergreen_line_is_reported_with_its_number_and_reason():
    data = (
        b"\n".join(line for line, _ in EVERGREEN_BAD)
        + b'\n\n{"timestamp":0,"type":"checkin","barcode":"OK"}\n'
    )
    result = parse("evergreen", data, tz=UTC)
    assert reasons(result) == {i + 1: reason for i, (_line, reason) in enumerate(EVERGREEN_BAD)}
    assert result.operations == [(len(EVERGREEN_BAD) + 2, checkin(at(1970, 1, 1), "OK"))]


def test_evergreen_export_writes_the_browser_clients_form():
    ops = [
        checkout(at(2024, 3, 5, 14, 2, 11, 512_000), "I1", "P1", due=at(2024, 3, 19, 4, 59, 59)),
        checkout(at(2024, 3, 5, 14, 2, 12), "I2", "P1"),
        Operation(kind="renew", at=at(2024, 3, 5, 14, 3, 20), item="I1", due=at(2024, 3, 26, 4, 59, 59)),
        Operation(kind="in_house_use", at=at(2024, 3, 5, 14, 5), item="I3", details=(("count", "3"),)),
        checkin(at(2024, 3, 5, 14, 5, 40), "I1"),
        Operation(kind="patron_register", at=at(2024, 3, 5, 14, 6, 40), patron="P9",
                  details=(("address.city", "Springfield"), ("family_name", "Lovelace"),
                           ("first_given_name", "Ada"))),
        Operation(kind="payment", at=at(2024, 3, 5), patron="P1", amount=Decimal("1")),
    ]  # fmt: skip
    data, skipped = export_report("evergreen", ops, tz=WEST)
    assert data == (
        b'{"timestamp":1709647331,"type":"checkout","delta":0,"patron_barcode":"P1","barcode":"I1",'
        b'"due_date":"2024-03-19T04:59:59.000Z","checkout_time":"2024-03-05T14:02:11.512Z"}\n'
        b'{"timestamp":1709647332,"type":"checkout","delta":0,"patron_barcode":"P1","barcode":"I2"}\n'
        b'{"timestamp":1709647400,"type":"renew","delta":0,"barcode":"I1",'
        b'"due_date":"2024-03-26T04:59:59.000Z","checkout_time":"2024-03-05T14:03:20.000Z"}\n'
        b'{"timestamp":1709647500,"type":"in_house_use","delta":0,"barcode":"I3","count":3}\n'
        b'{"timestamp":1709647540,"type":"checkin","delta":0,"barcode":"I1","backdate":"2024-03-05T14:05:40.000Z"}\n'
        b'{"user":{"card":{"barcode":"P9"},"family_name":"Lovelace","first_given_name":"Ada",'
        b'"mailing_address":{"city":"Springfield"}},"timestamp":1709647600,"type":"register","delta":0}\n'
    )
    assert skipped == [(ops[-1], "Evergreen's offline file has no payments")]


def test_evergreen_export_skips_a_registration_that_would_clash_with_evergreens_structure():
    clash = Operation(kind="patron_register", at=at(2024, 3, 5), patron="P9", details=(("card", "x"),))
    bad_count = Operation(kind="in_house_use", at=at(2024, 3, 5), item="I1", details=(("count", "0"),))
    data, skipped = export_report("evergreen", [clash, bad_count], tz=UTC)
    assert data == b""
    assert skipped == [
        (clash, "registration field 'card' clashes with Evergreen's own structure"),
        (bad_count, "count 0 is out of range (1 to 10000)"),
    ]


# --- detect and the dispatcher ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (KOCT, "koc"),
        (DESKTOP, "koc"),
        (DESKTOP_QT4, "koc"),
        (b"\xef\xbb\xbf\r\n2024-03-05 14:02:11\tissue\tP1\tI1\t\r\n", "koc"),
        (ALMA_PADDED, "offcirc"),
        (ALMA_PISA, "offcirc"),
        (ALMA_TABS, "offcirc"),
        (ALMA_SPACES, "offcirc"),
        (EVERGREEN, "evergreen"),
        (b"", None),
        (b"\n\n  \n", None),
        (b"hello\nworld\n", None),
        (b"\x00\xff\xfe" * 50, None),
    ],
)
def test_detect_names_the_format_of_each_sample(data, fmt):
    assert detect(data) == fmt


def test_unknown_format_name_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown format 'csv'"):
        parse("csv", b"", tz=UTC)
    with pytest.raises(ValueError, match="unknown format"):
        export("", [], tz=UTC)


def test_formats_are_the_three_named():
    assert FORMATS == ("koc", "offcirc", "evergreen")
