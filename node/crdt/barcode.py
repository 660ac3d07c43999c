"""What a barcode (patron card or item) may look like: what a scanner types, nothing else."""

from __future__ import annotations

import unicodedata

MAX_BARCODE = 64


class BarcodeError(ValueError):
    pass


def clean_barcode(value: object, what: str = "barcode") -> str:
    """Trims what scanners add around a barcode; refuses anything a scanner would never send."""
    if not isinstance(value, str):
        raise BarcodeError(f"{what} must be text")
    text = value.strip()
    if not text:
        raise BarcodeError(f"{what} is empty")
    if len(text) > MAX_BARCODE:
        raise BarcodeError(f"{what} is longer than {MAX_BARCODE} characters")
    for ch in text:
        if unicodedata.category(ch)[0] in ("C", "Z") and ch != " ":
            raise BarcodeError(f"{what} contains a control or separator character (U+{ord(ch):04X})")
    return text
