"""The bounds every value in the log keeps, stated once (DESIGN.md §3, issue 8).

Two layers, both declared as msgspec types:
- the **protocol bounds** (here and in `bodies.py`) are the same on every desk and depend only on the
  event itself, never on the receiving desk's clock or settings: whether an event is readable must be
  decided identically everywhere, or the desks would fold different states;
- the **desk limits** (`DeskLimits`) are what this desk accepts from its own staff and files: a library
  may narrow them (a lower payment ceiling, a Unicode barcode set), never widen them past the protocol.

Pure: no I/O.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated

import msgspec

BARCODE_MAX = 64
NAME_MAX = 200
TEXT_MAX = 500
STAFF_MAX = 100
MAX_INT = 2**53  # what a browser's JSON numbers hold exactly
DAY_MS = 86_400_000
# `at` and due dates stay inside what every date library can show (exports, the ILS, the browser).
EARLIEST_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
LATEST_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z
DUE_BEFORE_AT_MS = 366 * DAY_MS  # a due date may lie up to a year before the scan (an overdue renewal)…
DUE_AFTER_AT_MS = 10 * 366 * DAY_MS  # …and up to ten years after it
MONEY_MAX = Decimal("1000000.00")  # no single payment in any library's currency is larger
MONEY_PATTERN = r"^[0-9]{1,7}(\.[0-9]{1,2})?$"
NODE_ID_PATTERN = r"^[0-9a-f]{32}$"
EVENT_ID_PATTERN = r"^[0-9a-f]{32}:[1-9][0-9]{0,15}$"
# printable text: no C0/C1 controls, no line or paragraph separators, no lone surrogates (not Unicode)
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]*$"
ASCII_BARCODE_PATTERN = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"
UNICODE_BARCODE_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f\ud800-\udfff](?:[^\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]*" \
                          r"[^\s\x00-\x1f\x7f-\x9f\ud800-\udfff])?$"

Text = Annotated[str, msgspec.Meta(max_length=TEXT_MAX, pattern=TEXT_PATTERN)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=NAME_MAX, pattern=TEXT_PATTERN)]
Staff = Annotated[str, msgspec.Meta(max_length=STAFF_MAX, pattern=TEXT_PATTERN)]
Money = Annotated[str, msgspec.Meta(pattern=MONEY_PATTERN, description="a positive amount with at most two "
                                    "decimals, written as text (\"2.50\")")]
Millis = Annotated[int, msgspec.Meta(ge=EARLIEST_MS, le=LATEST_MS, description="milliseconds since 1970 (UTC)")]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT)]
NodeId = Annotated[str, msgspec.Meta(pattern=NODE_ID_PATTERN)]
EventId = Annotated[str, msgspec.Meta(pattern=EVENT_ID_PATTERN, max_length=50)]
# In the log a barcode is canonical (trimmed) and printable; which characters a desk accepts from its
# scanners is the desk's setting, so the protocol admits any printable Unicode.
Barcode = Annotated[str, msgspec.Meta(min_length=1, max_length=BARCODE_MAX, pattern=UNICODE_BARCODE_PATTERN)]


class BoundsError(ValueError):
    pass


def printable(value: str) -> bool:
    """Every character is one a person could have typed or scanned. Desk-side only: the Unicode tables
    differ between Python versions, and the log's own bounds must not (they are patterns)."""
    return all(unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for ch in value)


def check_money(value: str, maximum: Decimal = MONEY_MAX) -> Decimal:
    if not isinstance(value, str) or not re.match(MONEY_PATTERN, value):
        raise BoundsError('amount must be a positive number with at most two decimals, written as text ("2.50")')
    try:
        amount = Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only numbers
        raise BoundsError(f"amount {value!r} is not a number") from None
    if amount <= 0:
        raise BoundsError("amount must be more than zero")
    if amount > maximum:
        raise BoundsError(f"amount must be at most {maximum}")
    return amount


def check_due(due: int, at: int) -> None:
    if not at - DUE_BEFORE_AT_MS <= due <= at + DUE_AFTER_AT_MS:
        raise BoundsError("due date must lie between a year before and ten years after the scan")


@dataclass(frozen=True)
class DeskLimits:
    """What this desk accepts from staff and files; always inside the protocol bounds."""

    max_payment: Decimal = Decimal("10000.00")
    unicode_barcodes: bool = False  # ASCII by default: what barcode scanners send
    due_past_days: int = 1  # staff may type a due date of yesterday at the earliest…
    due_future_days: int = 5 * 365  # …and five years ahead at the latest

    def __post_init__(self) -> None:
        if not Decimal("0.01") <= self.max_payment <= MONEY_MAX:
            raise BoundsError(f"the payment ceiling must lie between 0.01 and {MONEY_MAX}")
        if not 0 <= self.due_past_days <= 365 or not 1 <= self.due_future_days <= 10 * 365:
            raise BoundsError("due date window is outside the protocol's bounds")

    @property
    def barcode_pattern(self) -> str:
        return UNICODE_BARCODE_PATTERN if self.unicode_barcodes else ASCII_BARCODE_PATTERN

    def check_barcode(self, value: str, what: str) -> str:
        """A trimmed barcode this desk accepts, or BoundsError saying why not."""
        if not isinstance(value, str):
            raise BoundsError(f"{what} must be text")
        text = value.strip()
        if not text:
            raise BoundsError(f"{what} is empty")
        if len(text) > BARCODE_MAX:
            raise BoundsError(f"{what} is longer than {BARCODE_MAX} characters")
        if not re.match(self.barcode_pattern, text) or not printable(text):
            allowed = "printable characters" if self.unicode_barcodes else "printable ASCII characters"
            raise BoundsError(f"{what} may contain only {allowed}")
        return text

    def due_fits(self, due: int, now: int) -> bool:
        return now - self.due_past_days * DAY_MS <= due <= now + self.due_future_days * DAY_MS

    def check_due(self, due: int, now: int) -> None:
        if not self.due_fits(due, now):
            raise BoundsError(f"due date must lie between {self.due_past_days} day(s) ago and "
                              f"{self.due_future_days} days from now")
