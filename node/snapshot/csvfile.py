"""A snapshot from files, for a library whose ILS offers no REST (SIP2 only): Koha's patron export, or any CSV
with Koha's column names, and an optional items file.

Patrons: the `borrowers` columns of Koha's patron export and patron import files (`cardnumber`, `surname`,
`firstname`, `categorycode`, `branchcode`, `dateexpiry`, `debarred`, `debarredcomment`, `lost`,
`gonenoaddress`; others are ignored). Items: `barcode`, `title`, `author`, `itemcallnumber`, `itype`,
`homebranch`, `notforloan`, `itemlost`, `withdrawn` (a report of Koha's `items` and `biblio` tables). Each
line becomes the REST shape `rows.py` reads, so a line that does not fit is left out and counted as a
refresh does; the separator (comma, semicolon or tab) is guessed from the header. Read a page at a time
(`fetch_after`, the refresh's own protocol), so a million patrons never sit in memory.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any, TextIO

from node.ilsbridge.adapters.base import SnapshotKind

MAX_LINE = 64 * 1024  # characters in one line: a longer one is no patron's (left out, its rest skipped)


def _flag(value: str | None) -> int:
    return 1 if (value or "").strip() not in ("", "0", "0000-00-00") else 0


def _patron(row: dict[str, str]) -> dict[str, Any]:
    debarred = (row.get("debarred") or "").strip()[:10]
    if debarred and debarred < date.today().isoformat():
        debarred = ""  # Koha keeps a past date: restricted only until then
    return {
        "cardnumber": row.get("cardnumber"), "surname": row.get("surname"), "firstname": row.get("firstname"),
        "category_id": row.get("categorycode"), "library_id": row.get("branchcode"),
        "expiry_date": row.get("dateexpiry"),
        "restriction": {"expiration_date": None if debarred.startswith("9999") else debarred,
                        "comment": row.get("debarredcomment")} if debarred else None,
        "patron_card_lost": bool(_flag(row.get("lost"))), "incorrect_address": bool(_flag(row.get("gonenoaddress"))),
    }


def _item(row: dict[str, str]) -> dict[str, Any]:
    return {
        "external_id": row.get("barcode"), "title": row.get("title"), "author": row.get("author"),
        "callnumber": row.get("itemcallnumber"), "item_type_id": row.get("itype"),
        "home_library_id": row.get("homebranch"), "not_for_loan_status": _flag(row.get("notforloan")),
        "lost_status": _flag(row.get("itemlost")), "withdrawn": _flag(row.get("withdrawn")),
    }


def _lines(f: TextIO) -> Iterator[str]:
    """The file's lines, each at most MAX_LINE characters: the rest of a longer one is skipped, and what was
    read of it is given as a line the reader will leave out (no CSV field can be that long here)."""
    while line := f.readline(MAX_LINE):
        if len(line) == MAX_LINE and not line.endswith("\n"):
            while (rest := f.readline(MAX_LINE)) and not rest.endswith("\n"):
                pass
            yield "\x00\n"  # a line no shape accepts
            continue
        yield line


def _rows(path: Path, shape: Callable[[dict[str, str]], dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each line in the REST shape, or {} for one the CSV reader cannot read (left out, counted)."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        lines = _lines(f)
        head = next(lines, "")
        dialect = max((",", ";", "\t"), key=head.count)
        header = next(csv.reader(io.StringIO(head), delimiter=dialect), [])
        reader = csv.DictReader(lines, fieldnames=[h.strip().lower() for h in header], delimiter=dialect)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error:
                yield {}
                continue
            if "\x00" in "".join(v for v in row.values() if isinstance(v, str)):
                yield {}
                continue
            yield shape({k: v for k, v in row.items() if isinstance(k, str) and isinstance(v, str)})


class CsvSource:
    """A `SnapshotSource` (refresh.py) over files: rows are numbered from 1 in file order, as ids."""

    def __init__(self, patrons: Path, items: Path | None = None) -> None:
        self.files: dict[str, tuple[Path, Callable[[dict[str, str]], dict[str, Any]]]] = {"patrons": (patrons, _patron)}
        if items is not None:
            self.files["items"] = (items, _item)
        self._open: dict[str, tuple[Iterator[dict[str, Any]], int]] = {}

    async def fetch_after(self, kind: SnapshotKind, after: int, per_page: int) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._page, kind, after, per_page)

    def _page(self, kind: str, after: int, per_page: int) -> list[dict[str, Any]]:
        if kind not in self.files:
            return []
        rows, seen = self._open.get(kind, (None, 0))
        if rows is None or seen != after:  # a new pull: from the start, skipping what was taken
            rows, seen = _rows(*self.files[kind]), 0
            for _ in range(after):
                next(rows, None)
            seen = after
        page = []
        for row in rows:
            seen += 1
            page.append({**row, "patron_id": seen, "item_id": seen})
            if len(page) >= per_page:
                break
        self._open[kind] = (rows, seen)
        return page

    async def fetch_rules(self) -> tuple[Any, Any]:
        return None, None
