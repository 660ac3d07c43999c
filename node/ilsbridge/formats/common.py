"""What the three offline file formats share: reading lines, the barcode rule, error reports.

Decisions that apply to every format (each format's module says what is specific to it):

- Lines end with LF or CRLF (one CR before the LF is dropped). A file with CRs and no LF at all (old Mac
  style) is split on CR. A UTF-8 byte order mark at the start is skipped.
- Text is UTF-8, strictly. No guessing of another encoding (latin-1, the Windows code page): a wrong
  guess would silently change a barcode, so a line that is not UTF-8 is reported with the offending byte
  and left out, and staff can convert the file and import it again. Barcodes are nearly always ASCII, so
  this is rare.
- Blank lines (nothing but spaces and tabs) are ignored, not errors.
- An item barcode or patron id is trimmed of spaces and tabs, then must be 1 to 64 characters, all of them
  printable: no control characters (tab, NUL, DEL, the C1 range), no invisible format characters.
- Every rejected line gives its 1-based line number (counting blank lines), a reason in plain words and
  its text, cut to about 200 characters.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from node.ilsbridge.operation import Operation

BOM = b"\xef\xbb\xbf"
MAX_ID_LENGTH = 64
MAX_SHOWN = 200
# The reason given when a line parser fails in a way its author did not foresee: tests assert it never
# appears, production gets a report instead of a crash.
UNEXPECTED = "this line could not be read (unexpected problem:"


@dataclass(frozen=True)
class LineError:
    """One line of an imported file that could not be turned into an operation."""

    line: int
    reason: str
    text: str


@dataclass(frozen=True)
class ParseResult:
    """Operations with the line they came from, in file order, and the lines that were refused."""

    operations: list[tuple[int, Operation]]
    errors: list[LineError]


class LineProblem(Exception):
    """Raised by a format's line reader; becomes a LineError for that line."""


def raw_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based number, bytes without the line ending) for every line of the file."""
    if data.startswith(BOM):
        data = data[len(BOM) :]
    separator = b"\n" if (b"\n" in data or b"\r" not in data) else b"\r"
    parts = data.split(separator)
    if parts and parts[-1] == b"":
        parts.pop()
    for number, part in enumerate(parts, start=1):
        if separator == b"\n" and part.endswith(b"\r"):
            part = part[:-1]
        yield number, part


def decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LineProblem(
            f"line is not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}); "
            "save the file as UTF-8 and import it again"
        ) from None


def shown(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace")
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"


def is_blank(text: str) -> bool:
    return text.strip(" \t") == ""


def clean_id(value: str | None, what: str) -> str:
    """Trim an item barcode or a patron id and check it, or raise LineProblem saying what is wrong."""
    if value is None:
        raise LineProblem(f"missing {what}")
    text = value.strip(" \t")
    if not text:
        raise LineProblem(f"missing {what}")
    for ch in text:
        if unicodedata.category(ch) == "Cc":
            raise LineProblem(f"{what} contains a control character (U+{ord(ch):04X})")
    for ch in text:
        if not ch.isprintable():
            raise LineProblem(f"{what} contains a character that cannot be printed (U+{ord(ch):04X})")
    if len(text) > MAX_ID_LENGTH:
        raise LineProblem(f"{what} is {len(text)} characters long; at most {MAX_ID_LENGTH} are allowed")
    return text


def quoted(text: str, limit: int = 40) -> str:
    """A value for an error message: quoted, cut short if long."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return f"'{text}'"


def local_to_utc(naive: datetime, tz, original: str) -> datetime:
    """A wall-clock time read in zone `tz`, as UTC. Ambiguous times (the hour repeated when clocks go
    back) are read as their first occurrence: the files carry no offset to tell them apart."""
    try:
        return naive.replace(tzinfo=tz).astimezone(UTC)
    except (OverflowError, ValueError):
        raise LineProblem(f"timestamp {quoted(original)} is out of range") from None


def utc(at: datetime) -> datetime:
    return at.astimezone(UTC)


def plain_decimal(amount: Decimal) -> str:
    """A Decimal written without exponent ("1E+1" would not be read back by Koha)."""
    return format(amount, "f")


def run_lines(data: bytes, read_line) -> ParseResult:
    """Apply `read_line(number, text)` to every non-blank line; it returns an Operation or None (a line
    that carries no operation, such as a header) or raises LineProblem."""
    operations: list[tuple[int, Operation]] = []
    errors: list[LineError] = []
    for number, raw in raw_lines(data):
        try:
            text = decode(raw)
            if is_blank(text):
                continue
            operation = read_line(number, text)
        except LineProblem as problem:
            errors.append(LineError(number, str(problem), shown(raw)))
            continue
        except Exception as unexpected:  # never let one odd line stop an import
            errors.append(LineError(number, f"{UNEXPECTED} {type(unexpected).__name__})", shown(raw)))
            continue
        if operation is not None:
            operations.append((number, operation))
    return ParseResult(operations, errors)
