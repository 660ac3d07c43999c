"""The node's SQLite file: the append-only event journal, Automerge change chunks, the last full save.

The journal is the record: every event this desk ever held, indexed by (node, seq) so that a run of one
desk's events can be served to a peer that lacks it (the bulk catch-up path). The document tables hold only
the current epoch's Automerge document (its last full save and the change chunks since): an epoch change
replaces them in one transaction (`rebase`).

WAL with synchronous=FULL, so a commit is fsynced before it returns. One writer thread owns the
connection and commits everything queued since its last commit in one transaction (group commit): many
desks scanning at once share an fsync instead of queueing behind each other's.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (pos INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, raw BLOB NOT NULL,
                                    node TEXT, seq INTEGER, meaning TEXT);
CREATE TABLE IF NOT EXISTS records (node TEXT PRIMARY KEY, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS changes (pos INTEGER PRIMARY KEY AUTOINCREMENT, bytes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS saved (id INTEGER PRIMARY KEY CHECK (id = 1), bytes BLOB NOT NULL,
                                  upto INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (event TEXT PRIMARY KEY, at INTEGER NOT NULL);
"""

Statement = tuple[str, tuple[Any, ...] | list[tuple[Any, ...]]]  # a list of rows: one executemany
T = TypeVar("T")


@dataclass(frozen=True)
class Loaded:
    journal: list[tuple[bytes, str | None]]  # each event as kept, and its `meaning` (see journal_insert)
    records: dict[str, bytes]
    document: bytes | None  # the last save followed by every change chunk since
    meta: dict[str, str]


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(SCHEMA)
        self._migrate()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="circmesh-store")
        self._pending: list[tuple[list[Statement], asyncio.Future[None]]] = []
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()
        self.commits = 0

    def _migrate(self) -> None:
        """Journals written before the bulk path lack (node, seq): derived from the id, once."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(journal)")}
        if "node" not in columns:
            self._conn.execute("ALTER TABLE journal ADD COLUMN node TEXT")
            self._conn.execute("ALTER TABLE journal ADD COLUMN seq INTEGER")
        if "meaning" not in columns:  # rows written before it are read in full at start, as they were
            self._conn.execute("ALTER TABLE journal ADD COLUMN meaning TEXT")
        self._conn.execute("UPDATE journal SET node = substr(id, 1, 32), "
                           "seq = CAST(substr(id, 34) AS INTEGER) WHERE node IS NULL")
        self._conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS journal_chain ON journal (node, seq)")

    def load(self) -> Loaded:
        """Everything needed to start; called once before serving."""
        c = self._conn
        journal = list(c.execute("SELECT raw, meaning FROM journal ORDER BY pos"))
        records = dict(c.execute("SELECT node, raw FROM records"))
        saved = c.execute("SELECT bytes, upto FROM saved WHERE id = 1").fetchone()
        upto = saved[1] if saved else 0
        rows = c.execute("SELECT bytes FROM changes WHERE pos > ? ORDER BY pos", (upto,))
        chunks = [row[0] for row in rows]
        document = (saved[0] if saved else b"") + b"".join(chunks)
        meta = dict(c.execute("SELECT key, value FROM meta"))
        return Loaded(journal, records, document or None, meta)

    def submit(self, statements: list[Statement]) -> asyncio.Future[None]:
        """Queues statements at once (commits keep submission order); the future resolves when durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((statements, future))
        if not self._flushing:
            self._flushing = True
            self._flush_task = loop.create_task(self._flush())
        return future

    async def commit(self, statements: list[Statement]) -> None:
        await self.submit(statements)

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    statements = [s for st, _ in batch for s in st]
                    await loop.run_in_executor(self._executor, self._write, statements)
                except Exception as e:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)
        finally:
            self._flushing = False

    def _write(self, statements: Iterable[Statement]) -> None:
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    if isinstance(params, list):
                        c.executemany(sql, params)
                    else:
                        c.execute(sql, params)
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:  # SQLite rolls back by itself on some errors (a full disk): keep its reason
                    c.execute("ROLLBACK")
                raise
            self.commits += 1

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Runs a read or a maintenance job on the writer thread."""
        def job() -> T:
            with self._lock:
                return fn(self._conn)
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    def read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A read on the caller's thread, waiting for a commit in progress: for rare paths that cannot await."""
        with self._lock:
            return fn(self._conn)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._conn.close()


def journal_insert(event_id: str, raw: bytes, problem: str | None) -> Statement:
    """`meaning`: "" for an event whose body was read, else why it could not be (the fold quarantines it).
    Every row is an event verified before it was written, so a desk starting reads it back without checking
    it again (event.decode_kept): at 300,000 events the checks were most of the start."""
    return (_JOURNAL_INSERT, _journal_row(event_id, raw, problem))


def journal_insert_many(rows: list[tuple[str, bytes, str | None]]) -> Statement:
    """A run of events in one statement (the bulk path)."""
    return (_JOURNAL_INSERT, [_journal_row(*row) for row in rows])


_JOURNAL_INSERT = "INSERT OR IGNORE INTO journal (id, raw, node, seq, meaning) VALUES (?, ?, ?, ?, ?)"


def _journal_row(event_id: str, raw: bytes, problem: str | None) -> tuple[str, bytes, str, int, str]:
    node, _, seq = event_id.partition(":")
    return (event_id, raw, node, int(seq), problem or "")


def read_run(conn: sqlite3.Connection, node: str, first: int, last: int, max_bytes: int) -> list[bytes]:
    """One desk's events first..last as stored, stopping early (after at least one) past `max_bytes`."""
    out: list[bytes] = []
    size = 0
    rows = conn.execute("SELECT raw FROM journal WHERE node = ? AND seq BETWEEN ? AND ? ORDER BY seq",
                        (node, first, last))
    for (raw,) in rows:
        if out and size + len(raw) > max_bytes:
            break
        out.append(raw)
        size += len(raw)
    return out


def rebase(saved: bytes, epoch: str) -> list[Statement]:
    """The document of a new epoch replaces the last one's save and change chunks, with its epoch named."""
    return [
        ("DELETE FROM changes", ()),
        ("INSERT OR REPLACE INTO saved (id, bytes, upto) "
         "VALUES (1, ?, (SELECT COALESCE(MAX(pos), 0) FROM changes))", (saved,)),
        meta_set("epoch", epoch),
    ]


def change_insert(chunk: bytes) -> Statement:
    return ("INSERT INTO changes (bytes) VALUES (?)", (chunk,))


def record_upsert(node: str, raw: bytes) -> Statement:
    return ("INSERT OR REPLACE INTO records (node, raw) VALUES (?, ?)", (node, raw))


def attempt_insert(event_id: str, at: int) -> Statement:
    """The bridge is about to send `event_id` to the ILS: after a crash, its outcome must be reconciled."""
    return ("INSERT OR IGNORE INTO attempts (event, at) VALUES (?, ?)", (event_id, at))


def meta_set(key: str, value: str) -> Statement:
    return ("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def compaction(saved: bytes) -> list[Statement]:
    """Replaces the change chunks by a full save. Must be submitted right after the save is taken: every
    chunk submitted before is in the save, and a chunk submitted after gets a higher position."""
    return [
        ("INSERT OR REPLACE INTO saved (id, bytes, upto) "
         "VALUES (1, ?, (SELECT COALESCE(MAX(pos), 0) FROM changes))", (saved,)),
        ("DELETE FROM changes WHERE pos <= (SELECT upto FROM saved WHERE id = 1)", ()),
    ]
