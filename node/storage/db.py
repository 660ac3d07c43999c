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
                                    node TEXT, seq INTEGER, meaning TEXT, wall INTEGER, counter INTEGER,
                                    kind TEXT, target TEXT);
CREATE TABLE IF NOT EXISTS records (node TEXT PRIMARY KEY, raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS changes (pos INTEGER PRIMARY KEY AUTOINCREMENT, bytes BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS saved (id INTEGER PRIMARY KEY CHECK (id = 1), bytes BLOB NOT NULL,
                                  upto INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (event TEXT PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS base (id INTEGER PRIMARY KEY CHECK (id = 1), bytes BLOB NOT NULL, held TEXT NOT NULL,
                                 pos INTEGER NOT NULL, wall INTEGER NOT NULL, counter INTEGER NOT NULL,
                                 node TEXT NOT NULL, seq INTEGER NOT NULL);
"""
# Kinds a desk keeps in memory for its whole history, however old (few, and each matters to every later event):
# admins' answers (the fold's settlements), seals (epochs), revocations and desks marked away.
KEPT_KINDS = ("void", "resolve", "seal", "revoke")
_KEPT = ", ".join(f"'{kind}'" for kind in KEPT_KINDS)

Statement = tuple[str, tuple[Any, ...] | list[tuple[Any, ...]]]  # a list of rows: one executemany
T = TypeVar("T")
OrderKey = tuple[int, int, str, int]


@dataclass(frozen=True)
class Row:
    """A journal row as read back: the event as kept, its `meaning` (see journal_insert), its arrival position,
    and its order key (None in a journal from before order stamps were kept)."""

    raw: bytes
    meaning: str | None
    pos: int
    key: OrderKey | None


@dataclass(frozen=True)
class SavedBase:
    """The fold checkpoint a desk starts from (order.py `Base`): its bytes, its order key, the events before
    it that stay in memory (open work), and the last journal position it had seen: a row after that position
    sorting before the key is a late event the checkpoint does not hold."""

    data: bytes
    key: OrderKey
    held: list[str]
    pos: int


@dataclass(frozen=True)
class Loaded:
    journal: list[Row]  # with a base: the events after it (and late ones, and `held`), in order; else every event
    records: dict[str, bytes]
    document: bytes | None  # the last save followed by every change chunk since
    meta: dict[str, str]
    base: SavedBase | None = None
    kept: list[Row] | None = None  # with a base: the events of KEPT_KINDS it holds
    tips: dict[str, tuple[int, bytes]] | None = None  # with a base: each desk's latest seq and event as kept
    count: int = 0  # events in the journal
    last_pos: int = 0


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
        if "wall" not in columns:  # order stamps and kinds: written by the first start that folds them all
            for column in ("wall INTEGER", "counter INTEGER", "kind TEXT", "target TEXT"):
                self._conn.execute(f"ALTER TABLE journal ADD COLUMN {column}")
        self._conn.execute("UPDATE journal SET node = substr(id, 1, 32), "
                           "seq = CAST(substr(id, 34) AS INTEGER) WHERE node IS NULL")
        self._conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS journal_chain ON journal (node, seq)")
        self._conn.execute("CREATE INDEX IF NOT EXISTS journal_order ON journal (wall, counter, node, seq)")
        self._conn.execute("DROP INDEX IF EXISTS journal_kind")  # only the rare kinds: every insert pays for an index
        self._conn.execute(f"CREATE INDEX IF NOT EXISTS journal_kept ON journal (kind) WHERE kind IN ({_KEPT})")
        self._conn.execute("CREATE INDEX IF NOT EXISTS journal_target ON journal (target) WHERE target IS NOT NULL")

    def load(self, with_base: bool = True) -> Loaded:
        """Everything needed to start; called once before serving. With a saved base (and every row stamped),
        only what sorts after it, what it says stays in memory, and the kept kinds; else the whole journal."""
        c = self._conn
        count, last_pos = c.execute("SELECT COUNT(*), COALESCE(MAX(pos), 0) FROM journal").fetchone()
        saved_base = self._saved_base() if with_base else None
        if saved_base is not None and c.execute("SELECT 1 FROM journal WHERE wall IS NULL LIMIT 1").fetchone():
            saved_base = None
        kept = tips = None
        if saved_base is None:
            journal = [_row(r) for r in c.execute(f"SELECT {_COLUMNS} FROM journal ORDER BY pos")]
        else:
            k = saved_base.key
            # Two range reads (an OR would scan the whole order index): after the key, and written after the base.
            after = list(c.execute(f"SELECT {_COLUMNS} FROM journal WHERE (wall, counter, node, seq) > (?, ?, ?, ?) "
                                   "ORDER BY wall, counter, node, seq", k))
            late = [r for r in c.execute(f"SELECT {_COLUMNS} FROM journal WHERE pos > ?", (saved_base.pos,))
                    if (r[3], r[4], r[5], r[6]) <= k]
            journal = [_row(r) for r in sorted(late, key=lambda r: (r[3], r[4], r[5], r[6])) + after]
            held = [c.execute(f"SELECT {_COLUMNS} FROM journal WHERE id = ?", (i,)).fetchone()
                    for i in saved_base.held]
            journal += [_row(r) for r in held
                        if r is not None and (r[3], r[4], r[5], r[6]) <= k and r[2] <= saved_base.pos]
            kept = [_row(r) for r in c.execute(
                f"SELECT {_COLUMNS} FROM journal WHERE kind IN ({_KEPT}) "  # literal: the partial index applies
                "AND (wall, counter, node, seq) <= (?, ?, ?, ?) AND pos <= ? ORDER BY wall, counter, node, seq",
                (*k, saved_base.pos))]
            tips = {node: (seq, raw) for node, seq, raw in c.execute(
                "SELECT j.node, j.seq, j.raw FROM journal j JOIN (SELECT node, MAX(seq) AS seq FROM journal "
                "GROUP BY node) t ON j.node = t.node AND j.seq = t.seq")}
        records = dict(c.execute("SELECT node, raw FROM records"))
        saved = c.execute("SELECT bytes, upto FROM saved WHERE id = 1").fetchone()
        upto = saved[1] if saved else 0
        rows = c.execute("SELECT bytes FROM changes WHERE pos > ? ORDER BY pos", (upto,))
        chunks = [row[0] for row in rows]
        document = (saved[0] if saved else b"") + b"".join(chunks)
        meta = dict(c.execute("SELECT key, value FROM meta"))
        return Loaded(journal, records, document or None, meta, saved_base, kept, tips, count, last_pos)

    def _saved_base(self) -> SavedBase | None:
        row = self._conn.execute("SELECT bytes, held, pos, wall, counter, node, seq FROM base WHERE id = 1").fetchone()
        if row is None:
            return None
        data, held, pos, *key = row
        return SavedBase(data, (key[0], key[1], key[2], key[3]), [i for i in held.split(",") if i], pos)

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


_COLUMNS = "raw, meaning, pos, wall, counter, node, seq"


def _row(r: tuple[Any, ...]) -> Row:
    return Row(r[0], r[1], r[2], None if r[3] is None else (r[3], r[4], r[5], r[6]))


@dataclass(frozen=True)
class JournalEntry:
    """An event to write: `meaning` is "" for an event whose body was read, else why it could not be (the
    fold quarantines it). Every row is an event verified before it was written, so a desk starting reads it
    back without checking it again (event.decode_kept): at 300,000 events the checks were most of the start.
    `pos`: its arrival position (the /events cursor); `key`: where it sorts (order.py); `target`: the event an
    `applied` answers (whether an event was answered is read from here once its outcome is retired)."""

    id: str
    raw: bytes
    problem: str | None
    kind: str
    pos: int
    key: OrderKey
    target: str | None = None


def journal_insert(entries: list[JournalEntry]) -> Statement:
    """Events in one statement (one executemany: a run of the bulk path is one)."""
    return ("INSERT OR IGNORE INTO journal (pos, id, raw, node, seq, meaning, wall, counter, kind, target) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.pos, e.id, e.raw, e.key[2], e.key[3], e.problem or "", e.key[0], e.key[1], e.kind, e.target)
             for e in entries])


def journal_stamps(stamps: list[tuple[str, OrderKey, str, str | None]]) -> Statement:
    """Order keys (with kinds and targets) of events already written: a stamp recomputed (order.py), or a
    journal from before stamps were kept."""
    return ("UPDATE journal SET wall = ?, counter = ?, kind = ?, target = ? WHERE id = ?",
            [(key[0], key[1], kind, target, event_id) for event_id, key, kind, target in stamps])


def base_save(data: bytes, key: OrderKey, held: list[str], pos: int) -> Statement:
    """The fold's new base (see SavedBase): it holds every event up to `key` among rows up to `pos`."""
    return ("INSERT OR REPLACE INTO base (id, bytes, held, pos, wall, counter, node, seq) "
            "VALUES (1, ?, ?, ?, ?, ?, ?, ?)", (data, ",".join(held), pos, *key))


class Reader:
    """A second connection, read-only, for reads on the event loop's thread: the events a fold base holds
    (order.py History), pages of /events. WAL lets it read while the writer thread commits: it sees what is
    committed, which is all it is asked for (memory holds what is not yet)."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA query_only=1")

    def event(self, node: str, seq: int) -> Row | None:
        r = self._conn.execute(f"SELECT {_COLUMNS} FROM journal WHERE node = ? AND seq = ?", (node, seq)).fetchone()
        return _row(r) if r is not None else None

    def upto(self, key: OrderKey) -> Iterable[Row]:
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM journal WHERE (wall, counter, node, seq) <= (?, ?, ?, ?) "
                                  "ORDER BY wall, counter, node, seq", key)
        return (_row(r) for r in rows)

    def in_order(self) -> Iterable[Row]:
        """Every event, in the log's order (exports)."""
        rows = self._conn.execute(f"SELECT {_COLUMNS} FROM journal ORDER BY wall, counter, node, seq")
        return (_row(r) for r in rows)

    def answers(self, target: str, upto: OrderKey) -> Iterable[Row]:
        """The readable `applied` events about `target` sorting at or before `upto`, in order."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM journal WHERE target = ? AND kind = 'applied' AND meaning = '' "
            "AND (wall, counter, node, seq) <= (?, ?, ?, ?) ORDER BY wall, counter, node, seq", (target, *upto))
        return (_row(r) for r in rows)

    def page(self, after: int, limit: int) -> list[Row]:
        """Events by arrival position, after `after` (the /events cursor)."""
        return [_row(r) for r in self._conn.execute(
            f"SELECT {_COLUMNS} FROM journal WHERE pos > ? ORDER BY pos LIMIT ?", (after, limit))]

    def close(self) -> None:
        self._conn.close()


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


def attempted(conn: sqlite3.Connection) -> list[str]:
    """The events the bridge marked as sent (attempt_insert), answered or not."""
    return [event_id for (event_id,) in conn.execute("SELECT event FROM attempts")]


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
