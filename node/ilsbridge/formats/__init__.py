"""The offline files of today's tools, read into operations and written from them.

A desk that worked with an old tool, or a library migrating, imports its files (`circmesh import FILE`);
circmesh exports its merged log in each format so that a library can still upload by hand. Everything
here is pure: bytes in, bytes out, no file access and no clock. Each format's module says what was
confirmed about it and from where; `common` holds what they share (lines, encodings, the barcode rule).

`tz` is the zone local-time formats are read and written in (Alma's OffCirc.dat, the Koha desktop tool's
.koc timestamps, Evergreen due dates without an offset). Every operation read has a UTC `at`.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from node.ilsbridge.formats import evergreen, koc, offcirc
from node.ilsbridge.formats.common import LineError, LineProblem, ParseResult, decode, is_blank, raw_lines
from node.ilsbridge.operation import Operation

__all__ = ["FORMATS", "LineError", "ParseResult", "detect", "export", "export_report", "parse"]

FORMATS = ("koc", "offcirc", "evergreen")
_MODULES = {"koc": koc, "offcirc": offcirc, "evergreen": evergreen}
_DETECT_LINES = 20


def _module(fmt: str):
    try:
        return _MODULES[fmt]
    except (KeyError, TypeError):
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}") from None


def parse(fmt: str, data: bytes, *, tz: datetime.tzinfo) -> ParseResult:
    """Read a whole file. Never raises for any content: bad lines are reported in `errors`."""
    return _module(fmt).parse(bytes(data), tz=tz)


def export_report(
    fmt: str,
    operations: Iterable[Operation],
    *,
    tz: datetime.tzinfo,
    generator: str = "circmesh",
    generator_version: str = "0.1.0",
) -> tuple[bytes, list[tuple[Operation, str]]]:
    """Write operations in file order; those the format cannot carry are left out and returned with the
    reason. `generator` and `generator_version` name the writer where the format has a header (.koc)."""
    module = _module(fmt)
    if module is koc:
        return koc.export_report(operations, tz=tz, generator=generator, generator_version=generator_version)
    if module is offcirc:
        return offcirc.export_report(operations, tz=tz)
    return evergreen.export_report(operations)


def export(
    fmt: str,
    operations: Iterable[Operation],
    *,
    tz: datetime.tzinfo,
    generator: str = "circmesh",
    generator_version: str = "0.1.0",
) -> bytes:
    """The file only; see `export_report` for the operations that were left out."""
    data, _skipped = export_report(
        fmt, operations, tz=tz, generator=generator, generator_version=generator_version
    )
    return data


def detect(data: bytes) -> str | None:
    """Guess a file's format from its first non-blank lines, or None when no format fits most of them."""
    scores = dict.fromkeys(FORMATS, 0)
    seen = 0
    for _number, raw in raw_lines(bytes(data)):
        try:
            text = decode(raw)
        except LineProblem:
            text = raw.decode("utf-8", errors="replace")
        if is_blank(text):
            continue
        seen += 1
        for fmt, module in _MODULES.items():
            if module.looks_like(text):
                scores[fmt] += 1
        if seen >= _DETECT_LINES:
            break
    best = max(FORMATS, key=lambda fmt: scores[fmt])
    if scores[best] == 0 or scores[best] * 2 < seen:
        return None
    return best
