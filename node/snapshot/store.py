"""A snapshot on disk: SQLite, looked up by barcode, searched by name, replaced whole and atomically.

A new version is written to a file of its own (built in a worker thread, fsynced) and moved over the old
one with one rename, so a desk reads either the old snapshot or the new one, never half of each, and a crash
while building leaves the old one. Names are searched with SQLite's FTS5 (`unicode61 remove_diacritics 2`):
"dvorak" finds "Dvořák" and "muller" finds "Müller", each word a prefix ("dvo" finds them too). Rows are
msgpack (rows.py). The file is encrypted whole with SQLCipher under a key derived from the desk's snapshot key
(atrest.py): rows, names and the FTS index alike, so no name or address lies on the disk in clear.
"""

from __future__ import annotations

import os
import re
import threading
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec
from sqlcipher3 import dbapi2 as sqlcipher

from node.snapshot.atrest import derive
from node.snapshot.loanrules import LoanRules
from node.snapshot.rows import ENCODER, ILS_LOAN, ITEM, PATRON, IlsLoan, Item, Patron

PLAIN_HEADER = b"SQLite format 3\x00"  # an encrypted file never starts so
DbError = sqlcipher.Error  # what SQLCipher raises: the file cannot be written, read, or opened with this key

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE patrons (barcode TEXT PRIMARY KEY, row BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE items (barcode TEXT PRIMARY KEY, row BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE loans (item TEXT PRIMARY KEY, patron TEXT NOT NULL, row BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX loans_of ON loans (patron);
CREATE VIRTUAL TABLE names USING fts5(name, barcode UNINDEXED, tokenize = 'unicode61 remove_diacritics 2');
"""
_WORD = re.compile(r"\w+", re.UNICODE)
SEARCH_WORDS = 6


@dataclass(frozen=True)
class Manifest:
    """What a snapshot holds: `ils_time` is when the ILS was read (ms), `version` counts refreshes."""

    version: int
    ils_time: int
    patrons: int
    items: int
    source: str
    index: str = ""  # the name of its index chunk (chunks.py): what the log's `snapshot` event names
    loans: int = 0  # loans open at the ILS

    def to_json(self) -> dict[str, object]:
        return {"version": self.version, "ils_time": self.ils_time, "patrons": self.patrons, "items": self.items,
                "source": self.source, "index": self.index, "loans": self.loans}


def _connect(target: str, key: bytes, *, uri: bool = False) -> sqlcipher.Connection:
    """A connection that reads and writes through the cipher (the key first, before any other statement)."""
    conn = sqlcipher.connect(target, uri=uri, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA key = \"x'{derive(key, 'circmesh snapshot database').hex()}'\"")
    return conn


class Builder:
    """Writes a new snapshot file a page at a time, so that memory holds a page, not the ILS. Each call
    blocks (SQLite): run them in a worker thread. `finish` makes it durable; `abort` removes it."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        for suffix in ("", "-journal", "-wal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        self._conn = _connect(str(path), key)
        self._conn.execute("PRAGMA journal_mode=OFF")  # a file nobody reads until it is complete
        self._conn.execute("PRAGMA synchronous=OFF")  # fsynced once, at the end
        self._conn.executescript(SCHEMA)
        self._conn.execute("BEGIN")
        # Pages are written in a worker thread; an abort (the desk stops) waits for the page being written.
        self._lock = threading.Lock()

    def add_patrons(self, patrons: Iterable[Patron]) -> None:
        last = {p.barcode: p for p in patrons}  # a barcode the ILS repeats keeps its last row, and one name
        rows = [(p.barcode, ENCODER.encode(p), p.name) for p in last.values()]
        with self._lock:
            self._conn.executemany("DELETE FROM names WHERE barcode = ?",
                                   [(b,) for b, _, _ in rows if self._has("patrons", b)])
            self._conn.executemany("INSERT OR REPLACE INTO patrons VALUES (?, ?)", [(b, r) for b, r, _ in rows])
            self._conn.executemany("INSERT INTO names VALUES (?, ?)", [(n, b) for b, _, n in rows])

    def add_items(self, items: Iterable[Item]) -> None:
        rows = [(i.barcode, ENCODER.encode(i)) for i in items]
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO items VALUES (?, ?)", rows)

    def add_loans(self, loans: Iterable[IlsLoan]) -> None:
        rows = [(loan.item, loan.patron, ENCODER.encode(loan)) for loan in loans]
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO loans VALUES (?, ?, ?)", rows)

    def _has(self, table: str, barcode: str) -> bool:
        return self._conn.execute(f"SELECT 1 FROM {table} WHERE barcode = ?", (barcode,)).fetchone() is not None

    def counts(self) -> tuple[int, int, int]:
        """Patrons, items and loans so far (each barcode once)."""
        with self._lock:
            count = self._conn.execute
            return (count("SELECT COUNT(*) FROM patrons").fetchone()[0],
                    count("SELECT COUNT(*) FROM items").fetchone()[0],
                    count("SELECT COUNT(*) FROM loans").fetchone()[0])

    def finish(self, ils_time: int, version: int, source: str, index: str = "",
               rules: LoanRules | None = None) -> Manifest:
        patrons, items, loans = self.counts()
        with self._lock:
            return self._finish(Manifest(version, ils_time, patrons, items, source, index, loans), rules)

    def _finish(self, manifest: Manifest, rules: LoanRules | None) -> Manifest:
        meta = [(k, str(v)) for k, v in manifest.to_json().items()]
        if rules is not None:
            meta.append(("rules", msgspec.json.encode(rules).decode()))
        self._conn.executemany("INSERT INTO meta VALUES (?, ?)", meta)
        self._conn.execute("COMMIT")
        self._conn.close()
        with open(self.path, "rb") as f:
            os.fsync(f.fileno())
        return manifest

    def abort(self) -> None:
        with self._lock:
            self._conn.close()
            self.path.unlink(missing_ok=True)


def build(path: Path, key: bytes, patrons: Iterable[Patron], items: Iterable[Item], ils_time: int, version: int,
          source: str, loans: Iterable[IlsLoan] = (), rules: LoanRules | None = None) -> Manifest:
    """A whole snapshot at once (tests, imports)."""
    builder = Builder(path, key)
    builder.add_patrons(patrons)
    builder.add_items(items)
    builder.add_loans(loans)
    return builder.finish(ils_time, version, source, rules=rules)


def fts_query(text: str) -> str | None:
    """Staff's words as an FTS5 query: each word a quoted prefix, all required; None if no word. Composed
    first (NFC): a keyboard that types "ř" as r and a combining caron would split the word."""
    words = _WORD.findall(unicodedata.normalize("NFC", text))[:SEARCH_WORDS]
    return " ".join(f'"{w}"*' for w in words) if words else None


class SnapshotStore:
    """The snapshot a desk holds (`snapshot.sqlite` in its data directory), read on the event loop's thread:
    a look-up is one indexed read."""

    def __init__(self, path: Path, key: bytes) -> None:
        self.path = path
        self.key = key
        self._conn: sqlcipher.Connection | None = None
        self.manifest: Manifest | None = None
        self.rules: LoanRules | None = None  # the ILS's loan rules and calendar, when it gave them
        self._open()

    def _open(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.manifest, self.rules = None, None
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            if f.read(16) == PLAIN_HEADER:  # written in clear by a version before encryption: never kept
                f.close()
                self.path.unlink(missing_ok=True)
                return
        conn = _connect(f"file:{self.path}?mode=ro", self.key, uri=True)
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            manifest = Manifest(int(meta["version"]), int(meta["ils_time"]), int(meta["patrons"]),
                                int(meta["items"]), meta["source"], meta.get("index", ""), int(meta.get("loans", 0)))
            rules = msgspec.json.decode(meta["rules"], type=LoanRules) if "rules" in meta else None
        except (DbError, KeyError, ValueError, msgspec.DecodeError):  # damaged, or another key's: as if none
            conn.close()
            return
        self._conn, self.manifest, self.rules = conn, manifest, rules

    def next_path(self) -> Path:
        return self.path.with_name(self.path.name + ".new")

    def switch(self, new: Path) -> None:
        """Makes the snapshot built at `new` the desk's, atomically (one rename)."""
        os.replace(new, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself survives a power cut
        finally:
            os.close(fd)
        self._open()

    def patron(self, barcode: str) -> Patron | None:
        row = self._one("SELECT row FROM patrons WHERE barcode = ?", barcode)
        return PATRON.decode(row) if row is not None else None

    def item(self, barcode: str) -> Item | None:
        row = self._one("SELECT row FROM items WHERE barcode = ?", barcode)
        return ITEM.decode(row) if row is not None else None

    def loan(self, item: str) -> IlsLoan | None:
        row = self._one("SELECT row FROM loans WHERE item = ?", item)
        return ILS_LOAN.decode(row) if row is not None else None

    def loans_of(self, patron: str) -> list[IlsLoan]:
        if self._conn is None:
            return []
        rows = self._conn.execute("SELECT row FROM loans WHERE patron = ? LIMIT 1000", (patron,)).fetchall()
        return [ILS_LOAN.decode(r[0]) for r in rows]

    def search(self, text: str, limit: int = 50) -> list[Patron]:
        query = fts_query(text)
        if query is None or self._conn is None:
            return []
        # No ORDER BY rank: every word must match anyway, and ranking all 20,000 patrons named Müller in a
        # million took 50 ms at p99; the first `limit` matches are sorted by name instead.
        rows = self._conn.execute(
            "SELECT p.row FROM names JOIN patrons p ON p.barcode = names.barcode WHERE names MATCH ? LIMIT ?",
            (query, limit)).fetchall()
        return sorted((PATRON.decode(r[0]) for r in rows), key=lambda p: (p.name.casefold(), p.barcode))

    def _one(self, sql: str, key: str) -> bytes | None:
        if self._conn is None:
            return None
        found = self._conn.execute(sql, (key,)).fetchone()
        return found[0] if found is not None else None

    def forget(self, key: bytes) -> None:
        """Deletes this desk's snapshot (the purge, retention.py); later ones are sealed with `key`."""
        self.close()
        for path in (self.path, self.next_path()):
            for suffix in ("", "-journal", "-wal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        self.key = key
        self._open()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
