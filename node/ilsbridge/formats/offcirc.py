"""Alma's offline circulation file (`OffCirc.dat`): read the manual's form and the padded form, write padded.

Confirmed in the sources (project, file):

- Alma online help, "Offline Circulation": the upload takes the `.dat` file the Offline Circulation
  utility writes (`…\\Alma Offline Circulation\\OffCirc\\files\\OffCirc.dat`); due dates are computed from
  the loan dates in the file, and a due date that would fall in the past is set to the upload time; a loan
  and a return of the same item in one file are applied in the order of the file. (The manual's own
  section on the record layout could not be retrieved; the second-column form below is the one circmesh's
  design brief gives for it.)
- University of Oregon Libraries, alma-offline-circulation-tool, `src/extract.php`, and its fork by
  Portland State University Library, Alma-Offline-Circulation-Tool, `extract.php` (the fork says so in its
  `readme.md`, so these two are one lineage): every record is `YYYYMMDDHHmm` (12 characters) + `L` or `R`
  + the item barcode, the whole padded with spaces to 93 characters ("80 characters for the barcode as a
  fixed width"), then the patron barcode when there is one, then CRLF. Return lines are padded too.
- University of Pisa (bediniupi, Alma-LoanTransfer, `loantransfer.py`), written independently for the
  same upload: loan lines are date + `L` + the barcode + spaces up to 80 characters + the user id; return
  lines are date + `R` + the barcode, unpadded; lines end with a bare LF. It converts the UTC times of
  Alma's API to the local time before writing: the file's times are the library's local time.

Import:

- The time is local, read in `tz`, to the minute (seconds are zero).
- After the letter comes, in order of precedence: a TAB-separated second column (the manual's form); or
  the fixed 80-character barcode field, recognised when the line reaches column 93 with a space in column
  93 (so a barcode may contain spaces there); or fields separated by runs of spaces, where a barcode
  cannot contain a space (a third field is an error rather than a guess).
- `L` needs a patron id; `R` takes none: a return with a patron column is reported, since it most likely
  means the columns are shifted.

Export writes the University of Oregon form (every record padded to 93 characters, CRLF), times in `tz`
truncated to the minute. OffCirc has only loans and returns: renewals, payments, in-house uses and
registrations are skipped and reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from node.ilsbridge.formats.common import LineProblem, ParseResult, clean_id, local_to_utc, quoted, run_lines
from node.ilsbridge.operation import Operation

STAMP_LENGTH = 12
BARCODE_FIELD = 80
EOL = "\r\n"
ITEM = "item barcode"
PATRON = "patron id"

_STAMP = re.compile(r"\d{12}", re.ASCII)
_SPACES = re.compile(r" +")
_ACTIONS = {"L": "checkout", "R": "checkin"}
_LAYOUT = "expected YYYYMMDDHHMM, then L or R, then the item barcode"


def parse(data: bytes, *, tz) -> ParseResult:
    return run_lines(data, lambda _number, text: _read_line(text, tz))


def _read_line(text: str, tz) -> Operation:
    stamp = text[:STAMP_LENGTH]
    if not _STAMP.fullmatch(stamp):
        shown = text.split("\t")[0].split(" ")[0][: STAMP_LENGTH + 1]
        raise LineProblem(f"line does not start with a date and time: found {quoted(shown)} ({_LAYOUT})")
    at = _read_stamp(stamp, tz)
    if len(text) == STAMP_LENGTH:
        raise LineProblem(f"missing action letter ({_LAYOUT})")
    letter = text[STAMP_LENGTH]
    if letter not in _ACTIONS:
        raise LineProblem(f"unknown action letter {quoted(letter)} (expected L for a loan or R for a return)")
    item, patron = _split_rest(text[STAMP_LENGTH + 1 :])
    item = clean_id(item, ITEM)
    if letter == "L":
        if patron is None:
            raise LineProblem(f"missing {PATRON} (a loan needs one)")
        return Operation(kind="checkout", at=at, item=item, patron=clean_id(patron, PATRON))
    if patron:
        raise LineProblem(f"a return line takes no {PATRON}, found {quoted(patron)}")
    return Operation(kind="checkin", at=at, item=item)


def _read_stamp(stamp: str, tz) -> datetime:
    year, month, day = int(stamp[0:4]), int(stamp[4:6]), int(stamp[6:8])
    hour, minute = int(stamp[8:10]), int(stamp[10:12])
    try:
        datetime(year, month, day)
    except ValueError:
        raise LineProblem(f"timestamp {quoted(stamp)} is not a valid date") from None
    if hour > 23 or minute > 59:
        raise LineProblem(f"timestamp {quoted(stamp)} is not a valid time")
    return local_to_utc(datetime(year, month, day, hour, minute), tz, stamp)


def _split_rest(rest: str) -> tuple[str | None, str | None]:
    """The item barcode and the patron id (or None) from what follows the action letter."""
    if "\t" in rest:
        fields = [field.strip(" ") for field in rest.split("\t")]
        while fields and fields[-1] == "":
            fields.pop()
    elif len(rest) > BARCODE_FIELD - 1 and rest[BARCODE_FIELD - 1] == " ":
        fields = [rest[:BARCODE_FIELD].strip(" "), rest[BARCODE_FIELD:].strip(" ")]
    else:
        stripped = rest.strip(" ")
        fields = _SPACES.split(stripped) if stripped else []
    if len(fields) > 2:
        raise LineProblem(
            f"unexpected extra field {quoted(fields[2])}: "
            f"a line has only the {ITEM} and, for a loan, the {PATRON}"
        )
    item = fields[0] if fields else None
    patron = fields[1] if len(fields) > 1 and fields[1] else None
    return item, patron


def export_report(operations: Iterable[Operation], *, tz) -> tuple[bytes, list[tuple[Operation, str]]]:
    lines: list[str] = []
    skipped: list[tuple[Operation, str]] = []
    for operation in operations:
        try:
            lines.append(_record(operation, tz))
        except LineProblem as problem:
            skipped.append((operation, str(problem)))
    return "".join(lines).encode("utf-8"), skipped


def _record(operation: Operation, tz) -> str:
    if operation.kind == "checkout":
        if operation.patron is None:
            raise LineProblem("a loan without a patron cannot be written")
        item = clean_id(operation.item, ITEM)
        return f"{_stamp(operation.at, tz)}L{item:<{BARCODE_FIELD}}{clean_id(operation.patron, PATRON)}{EOL}"
    if operation.kind == "checkin":
        item = clean_id(operation.item, ITEM)
        return f"{_stamp(operation.at, tz)}R{item:<{BARCODE_FIELD}}{EOL}"
    reasons = {
        "renew": "OffCirc.dat has no renewals",
        "payment": "OffCirc.dat has no payments",
        "in_house_use": "OffCirc.dat has no in-house uses",
        "patron_register": "OffCirc.dat has no patron registrations",
    }
    raise LineProblem(reasons.get(operation.kind, f"OffCirc.dat cannot record {operation.kind!r}"))


def _stamp(at: datetime, tz) -> str:
    try:
        t = at.astimezone(tz)
    except (OverflowError, ValueError):
        raise LineProblem("its time is out of range") from None
    return f"{t.year:04d}{t.month:02d}{t.day:02d}{t.hour:02d}{t.minute:02d}"


def looks_like(text: str) -> bool:
    """Whether one line of a file looks like an OffCirc.dat line (for guessing a file's format)."""
    return (
        len(text) > STAMP_LENGTH + 1
        and _STAMP.fullmatch(text[:STAMP_LENGTH]) is not None
        and text[STAMP_LENGTH] in _ACTIONS
    )
