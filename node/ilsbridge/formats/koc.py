"""Koha's offline circulation file (`.koc`): read the files of every known writer, write KOCT's form.

Confirmed in the sources (project, file):

- Koha, `offline_circ/enqueue_koc.pl` and `offline_circ/process_koc.pl` (the upload): the first line is
  always taken as the header, whatever it holds, split on TAB into `key=value` pairs; a `Version` other
  than `1.0` only adds a warning, the file is still processed. Every other line is chomped, all its CRs
  are removed and it is split on TAB: timestamp, command, then the arguments of the command (`issue`:
  cardnumber, barcode; `return`: barcode; `payment`: cardnumber, amount). Extra columns are ignored;
  an unknown command is skipped with a warning. The timestamp is split on whitespace into date, time
  and a third part that is dropped; the queue stores "date time" as given, without a time zone.
  `offline_circ/service.pl` trims spaces around barcode and cardnumber.
- Koha wiki, "Koha offline circulation file format" (version 1.0): tab-separated, first line
  `Version=…<TAB>Generator=…<TAB>GeneratorVersion=…`, dates as "YYYY-MM-DD HH:MM:SS ms".
- KOCT, the Firefox add-on (BibLibre, firefox-addon-koct, `koct.js`): header
  `Version=1.0<TAB>Generator=koct-firefox<TAB>GeneratorVersion=0.1` then CRLF; every field of a record is
  followed by a TAB (so each line ends with a TAB) and then CRLF; the timestamp is
  `new Date().toISOString()` cut to the second with the `T` replaced by a space: UTC
  `YYYY-MM-DD HH:MM:SS`. It writes only `issue` and `return`.
- The Koha Offline Circulation desktop tool (bywatersolutions, koha-offline-circulation, `kocfile.cpp`,
  `mainwindow.cpp`, `kohaupload.cpp`): header `Version=1.0<TAB>Generator=kocDesktop<TAB>GeneratorVersion=…`
  (older releases: `Generator=kocQt4`); fields joined by TAB with no trailing TAB; lines ended by Qt's
  `endl` on a file opened in text mode (CRLF on Windows, LF elsewhere); the timestamp is
  `QDateTime::currentDateTime()`, the desk's local time, formatted `yyyy-MM-dd hh-mm-ss zzz` (Qt: `hh` is
  the 24-hour hour, `zzz` the milliseconds in three digits), e.g. `2026-07-22 10-15-30 000`; older
  releases used `yyyy-MM-dd hh:mm:ss zzz`. `kohaupload.cpp` says so itself (".koc timestamps are local
  time") and converts them to UTC before sending. Payments are written with two decimals (`5.00`).

Import (more forgiving than Koha where Koha would lose data, stricter where Koha would do harm):

- LF or CRLF, a UTF-8 BOM, blank lines, spaces and trailing TABs are all accepted.
- The header is recognised by its `key=value` form, not by its position: a file without a header loses
  no operation (Koha would silently drop its first line), any `Version` is accepted (as Koha does), and
  a header further down (files joined together) applies to the lines after it.
- The time zone of a timestamp follows the writer named in the header: `koct…` and `circmesh…` write UTC,
  `kocDesktop`/`kocQt…` local time (read in `tz`). Without a known writer the shape decides: a millisecond
  part or dashes in the time mean the desktop tool (local time), plain `YYYY-MM-DD HH:MM:SS` means KOCT
  (UTC). Milliseconds are kept.
- A non-empty extra column is an error, not ignored: `return<TAB>cardnumber<TAB>barcode` would make Koha
  return the item whose barcode is the patron's card number.
- Payment amounts are numbers with a point for decimals, more than zero.

Export writes KOCT's form (UTC, a TAB after every field, CRLF) with circmesh's name in the header, and
payments in the same shape. Renewals, in-house uses and registrations have no `.koc` command: they are
skipped and reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation

from node.ilsbridge.formats.common import (
    LineProblem,
    ParseResult,
    clean_id,
    local_to_utc,
    plain_decimal,
    quoted,
    run_lines,
    utc,
)
from node.ilsbridge.operation import Operation

FILE_VERSION = "1.0"
EOL = "\r\n"
ITEM = "item barcode"
PATRON = "patron cardnumber"

# Date, time (":" or "-" between its parts) and an optional millisecond part, as the writers produce them.
_TIMESTAMP = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d{1,2})-(?P<d>\d{1,2}) +"
    r"(?P<h>\d{1,2})(?P<sep>[:-])(?P<mi>\d{1,2})(?P=sep)(?P<s>\d{1,2})"
    r"(?: +(?P<ms>\d{1,3}))?",
    re.ASCII,
)
_HEADER_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_]*=.*")
_AMOUNT = re.compile(r"\d{1,12}(?:\.\d{1,6})?", re.ASCII)
_COMMA_AMOUNT = re.compile(r"\d{1,12},\d{1,6}", re.ASCII)
_UTC_WRITERS = ("koct", "circmesh")
_LOCAL_WRITERS = ("kocdesktop", "kocqt")
_ARGUMENTS = {"issue": (PATRON, ITEM), "return": (ITEM,), "payment": (PATRON, "amount")}


def parse(data: bytes, *, tz) -> ParseResult:
    state = {"generator": ""}

    def read_line(_number: int, text: str) -> Operation | None:
        fields = [field.strip(" ") for field in text.split("\t")]
        while fields and fields[-1] == "":
            fields.pop()
        if not fields:
            return None
        if _is_header(fields):
            state["generator"] = _header_value(fields, "Generator")
            return None
        return _read_operation(fields, state["generator"], tz)

    return run_lines(data, read_line)


def _is_header(fields: list[str]) -> bool:
    return _HEADER_FIELD.fullmatch(fields[0]) is not None and all("=" in field for field in fields if field)


def _header_value(fields: list[str], key: str) -> str:
    for field in fields:
        name, _, value = field.partition("=")
        if name.strip() == key:
            return value.strip()
    return ""


def _read_operation(fields: list[str], generator: str, tz) -> Operation:
    at = _read_timestamp(fields[0], generator, tz)
    if len(fields) < 2 or not fields[1]:
        raise LineProblem("missing action (expected issue, return or payment)")
    action = fields[1]
    if action not in _ARGUMENTS:
        raise LineProblem(f"unknown action {quoted(action)} (expected issue, return or payment)")
    names = _ARGUMENTS[action]
    arguments = fields[2:]
    for extra in arguments[len(names) :]:
        if extra:
            raise LineProblem(
                f"unexpected extra field {quoted(extra)}: "
                f"a {action} line has only the {' and the '.join(names)}"
            )
    values = [arguments[i] if i < len(arguments) else None for i in range(len(names))]
    if action == "issue":
        patron = clean_id(values[0], PATRON)
        item = clean_id(values[1], ITEM)
        return Operation(kind="checkout", at=at, item=item, patron=patron)
    if action == "return":
        return Operation(kind="checkin", at=at, item=clean_id(values[0], ITEM))
    patron = clean_id(values[0], PATRON)
    return Operation(kind="payment", at=at, patron=patron, amount=_read_amount(values[1]))


def _read_timestamp(text: str, generator: str, tz) -> datetime:
    if not text:
        raise LineProblem("missing timestamp")
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise LineProblem(
            f"timestamp {quoted(text)} is not in a known form "
            "(expected 'YYYY-MM-DD HH:MM:SS' or 'YYYY-MM-DD HH-MM-SS mmm')"
        )
    try:
        day = date(int(match["y"]), int(match["mo"]), int(match["d"]))
    except ValueError:
        raise LineProblem(f"timestamp {quoted(text)} is not a valid date") from None
    hour, minute, second = int(match["h"]), int(match["mi"]), int(match["s"])
    if hour > 23 or minute > 59 or second > 59:
        raise LineProblem(f"timestamp {quoted(text)} is not a valid time")
    millis = int(match["ms"]) if match["ms"] else 0
    naive = datetime(day.year, day.month, day.day, hour, minute, second, millis * 1000)
    if _is_local(generator, match):
        return local_to_utc(naive, tz, text)
    return naive.replace(tzinfo=UTC)


def _is_local(generator: str, match: re.Match) -> bool:
    writer = generator.lower()
    if writer.startswith(_UTC_WRITERS):
        return False
    if writer.startswith(_LOCAL_WRITERS):
        return True
    return match["ms"] is not None or match["sep"] == "-"


def _read_amount(text: str | None) -> Decimal:
    if not text:
        raise LineProblem("missing amount")
    if _COMMA_AMOUNT.fullmatch(text):
        raise LineProblem(f"amount {quoted(text)} is not a number (write decimals with a point)")
    if not _AMOUNT.fullmatch(text):
        raise LineProblem(f"amount {quoted(text)} is not a number")
    amount = Decimal(text)
    if amount <= 0:
        raise LineProblem(f"amount {quoted(text)} must be more than zero")
    return amount


def export_report(
    operations: Iterable[Operation], *, tz, generator: str, generator_version: str
) -> tuple[bytes, list[tuple[Operation, str]]]:
    for name, value in (("generator", generator), ("generator_version", generator_version)):
        if not value or any(ch in value for ch in "\t\r\n=") or not value.isprintable():
            raise ValueError(f"{name} {value!r} cannot be written in a .koc header")
    lines = [f"Version={FILE_VERSION}\tGenerator={generator}\tGeneratorVersion={generator_version}{EOL}"]
    skipped: list[tuple[Operation, str]] = []
    for operation in operations:
        try:
            fields = _fields(operation)
        except LineProblem as problem:
            skipped.append((operation, str(problem)))
            continue
        lines.append("".join(field + "\t" for field in fields) + EOL)
    return "".join(lines).encode("utf-8"), skipped


def _fields(operation: Operation) -> list[str]:
    kind = operation.kind
    if kind == "checkout":
        if operation.patron is None:
            raise LineProblem("a checkout without a patron cannot be written")
        patron, item = clean_id(operation.patron, PATRON), clean_id(operation.item, ITEM)
        return [_timestamp(operation.at), "issue", patron, item]
    if kind == "checkin":
        return [_timestamp(operation.at), "return", clean_id(operation.item, ITEM)]
    if kind == "payment":
        patron, amount = clean_id(operation.patron, PATRON), _amount(operation.amount)
        return [_timestamp(operation.at), "payment", patron, amount]
    reasons = {
        "renew": "a .koc file has no renewals (Koha renews when an item is issued again to the same patron)",
        "in_house_use": "a .koc file has no in-house uses",
        "patron_register": "a .koc file has no patron registrations",
    }
    raise LineProblem(reasons.get(kind, f"a .koc file cannot record {kind!r}"))


def _timestamp(at: datetime) -> str:
    try:
        t = utc(at)
    except (OverflowError, ValueError):
        raise LineProblem("its time is out of range") from None
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:{t.second:02d}"


def _amount(amount: Decimal | None) -> str:
    if amount is None:
        raise LineProblem("a payment without an amount cannot be written")
    try:
        text = plain_decimal(amount)
        positive = amount > 0
    except (InvalidOperation, ValueError, TypeError):
        raise LineProblem(f"amount {amount!r} is not a number") from None
    if not positive:
        raise LineProblem(f"amount {text} must be more than zero")
    if not _AMOUNT.fullmatch(text):
        raise LineProblem(f"amount {text} has too many digits for a .koc file")
    return text


def looks_like(text: str) -> bool:
    """Whether one line of a file looks like a .koc line (for guessing a file's format)."""
    fields = [field.strip(" ") for field in text.split("\t")]
    if fields[0].startswith("Version=") and _is_header([f for f in fields if f]):
        return True
    return (
        len(fields) >= 3
        and _TIMESTAMP.fullmatch(fields[0].strip(" ")) is not None
        and fields[1].strip(" ") in _ARGUMENTS
    )
