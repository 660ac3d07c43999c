"""A snapshot as chunks, without a desk: cut and replayed it answers as the bridge's own; kept sealed on disk
(no name in clear, in the database or the chunks); and fetched from peers that may lack a chunk or send
wrong bytes, refused and asked elsewhere. The real links and processes: tests/test_snapshot_desk.py."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crdt.refusals import Refusal
from node.crdt.state import SnapshotRef
from node.snapshot import store
from node.snapshot.atrest import KEY_FILE, ChunkFiles, load_or_create_key, shred
from node.snapshot.chunks import ChunkError, Cutter, name_of, names, pack_rows, unpack_index, unpack_rows
from node.snapshot.fetch import Fetcher, Stopped, install
from node.snapshot.rows import Hold, IlsLoan, Item, Patron
from node.snapshot.store import SnapshotStore
from tests.factories import SnapshotLogStub

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
NAMES = ["Dvořák, Antonín", "Müller, Hans", "Nguyễn, Thị Minh", "Smith, John"]


def people(n: int) -> list[Patron]:
    return [Patron(f"23{k:06d}", f"{NAMES[k % 4]} {k}", "ADULT", "MAIN", "2030-01-01",
                   "debarred" if k % 7 == 0 else None, k, 0, 5) for k in range(n)]


def things(n: int) -> list[Item]:
    return [Item(f"39{k:06d}", f"Rusalka {k}", "Dvořák", None, "BK", "MAIN", k % 5 == 0, False, False,
                 (Hold("23000001", True, "MAIN"),) if k % 3 == 0 else ()) for k in range(n)]


def cut(chunks: ChunkFiles, patrons: list[Patron], items: list[Item], rows: int,
        loans: list[IlsLoan] | None = None) -> tuple[str, int]:
    """What the bridge's refresh does with its pages: cut them into chunks and keep them."""
    cutter = Cutter(rows)
    for page in range(0, len(patrons), 7):
        cutter.add("patrons", patrons[page:page + 7])
    for page in range(0, len(items), 7):
        cutter.add("items", items[page:page + 7])
    cutter.add("loans", loans or [])
    index, data = cutter.finish(3, 1_700_000_000_000, len(patrons), len(items), "test ILS", len(loans or []))
    for name, chunk in [*cutter.take(), (index, data)]:
        chunks.put(name, chunk)
    return index, len(cutter.entries)


def test_chunks_replayed_answer_as_the_bridges_own_snapshot(tmp_path: Path) -> None:
    patrons, items = people(95), things(40)
    patrons.append(Patron("23000003", "Svoboda, Petr", None, None, None, None, 0, 0, None))  # a barcode again
    loans = [IlsLoan(f"39{k:06d}", "23000007", "2027-01-15") for k in range(0, 40, 4)]
    chunks = ChunkFiles(tmp_path / "chunks", KEY)
    index_name, n = cut(chunks, patrons, items, rows=20, loans=loans)
    index = unpack_index(chunks.get(index_name))
    kinds = [e.kind for e in index.chunks]
    assert index.version == 3 and n > 3 and kinds == sorted(kinds, key=["patrons", "items", "loans"].index)
    assert sum(e.rows for e in index.chunks if e.kind == "patrons") == 96 and all(e.rows <= 80 for e in index.chunks)

    bridge = SnapshotStore(tmp_path / "bridge.sqlite", KEY)
    store.build(bridge.next_path(), KEY, patrons, items, 1_700_000_000_000, 3, "test ILS", loans)
    bridge.switch(bridge.next_path())
    desk = SnapshotStore(tmp_path / "desk.sqlite", OTHER_KEY)  # another desk, its own key
    manifest = install(desk, chunks, index, index_name)
    desk.switch(desk.next_path())
    assert manifest.index == index_name and desk.manifest == manifest
    assert (manifest.patrons, manifest.items) == (bridge.manifest.patrons, bridge.manifest.items) == (95, 40)
    for barcode in ["23000000", "23000003", "23000094", "nope"]:
        assert desk.patron(barcode) == bridge.patron(barcode)
    assert desk.patron("23000003").name == "Svoboda, Petr"
    assert [p.barcode for p in desk.search("dvorak 4")] == [p.barcode for p in bridge.search("dvorak 4")]
    assert desk.search("muller")[0].name.startswith("Müller") and desk.search("antonin 3") != []
    assert desk.item("39000039") == bridge.item("39000039")
    assert desk.manifest.loans == bridge.manifest.loans == 10 and desk.loan("39000004") == loans[1]
    assert desk.loans_of("23000007") == bridge.loans_of("23000007") and len(desk.loans_of("23000007")) == 10
    assert desk.loan("39000001") is None and desk.loans_of("nobody") == []


def test_a_refresh_that_changes_one_patron_changes_one_chunk(tmp_path: Path) -> None:
    """Where chunks end depends on their rows: desks fetch what changed, not everything after it."""
    before = people(5_000)
    changed = list(before)
    changed[2_345] = Patron(before[2_345].barcode, before[2_345].name, "ADULT", "MAIN", "2030-01-01",
                            "debarred until 2027-03-01", 0, 0, 5)

    chunks = ChunkFiles(tmp_path / "chunks", KEY)

    def chunk_names(patrons: list[Patron]) -> set[str]:
        index, _ = cut(chunks, patrons, [], rows=100)
        return set(names(unpack_index(chunks.get(index))))

    old = chunk_names(before)
    assert len(old) > 20
    assert len(chunk_names(changed) - old) == 1  # the one chunk holding the changed patron
    gone = before[:1_000] + before[1_001:]  # a patron deleted at the ILS
    assert len(chunk_names(gone) - old) == 1
    added = [*before, Patron("24000000", "Nová, Eva", None, None, None, None, 0, 0, None)]
    assert len(chunk_names(added) - old) == 1


def test_an_install_stops_between_chunks_when_the_desk_stops(tmp_path: Path) -> None:
    chunks = ChunkFiles(tmp_path / "chunks", KEY)
    index_name, _ = cut(chunks, people(500), things(100), rows=50)
    desk = SnapshotStore(tmp_path / "desk.sqlite", KEY)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        install(desk, chunks, unpack_index(chunks.get(index_name)), index_name, stop)
    assert not desk.next_path().exists() and desk.manifest is None  # no half-built file left


def test_no_name_lies_in_clear_on_the_disk(tmp_path: Path) -> None:
    patrons = people(2_000)
    chunks = ChunkFiles(tmp_path / "chunks", KEY)
    cut(chunks, patrons, things(100), rows=500)
    snapshot = SnapshotStore(tmp_path / "snapshot.sqlite", KEY)
    store.build(snapshot.next_path(), KEY, patrons, things(100), 1_700_000_000_000, 1, "test ILS")
    snapshot.switch(snapshot.next_path())
    assert snapshot.search("smith john 1999")[0].barcode == "23001999"
    files = [tmp_path / "snapshot.sqlite", *(tmp_path / "chunks").iterdir()]
    assert len(files) > 5
    for path in files:
        data = path.read_bytes()
        for text in ["Dvořák", "Müller", "Nguyễn", "Smith", "Rusalka", "23001999"]:
            for form in (text.encode(), text.encode("utf-16-le")):
                assert form not in data, (path.name, text)
        for lowered in [b"dvorak", b"muller", b"nguyen"]:  # what an FTS index holds, folded
            assert lowered not in data.lower(), (path.name, lowered)


def test_a_snapshot_under_a_shredded_key_is_gone(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600 and load_or_create_key(tmp_path) == key
    snapshot = SnapshotStore(tmp_path / "snapshot.sqlite", key)
    store.build(snapshot.next_path(), key, people(10), [], 1_700_000_000_000, 1, "test ILS")
    snapshot.switch(snapshot.next_path())
    chunks = ChunkFiles(tmp_path / "chunks", key)
    index, _ = cut(chunks, people(10), [], rows=5)
    snapshot.close()
    shred(tmp_path)
    new_key = load_or_create_key(tmp_path)
    assert new_key != key
    assert SnapshotStore(tmp_path / "snapshot.sqlite", new_key).manifest is None
    assert ChunkFiles(tmp_path / "chunks", new_key).get(index) is None


def test_chunk_files_refuse_wrong_bytes_and_forget_damaged_ones(tmp_path: Path) -> None:
    chunks = ChunkFiles(tmp_path / "chunks", KEY)
    data = pack_rows(people(3))
    name = name_of(data)
    with pytest.raises(ChunkError):
        chunks.put(name, data + b"x")
    assert not chunks.has(name)
    chunks.put(name, data)
    assert chunks.get(name) == data and chunks.names() == {name}
    other = pack_rows(people(4))
    chunks.put(name_of(other), other)
    (tmp_path / "chunks" / name_of(other)).write_bytes((tmp_path / "chunks" / name).read_bytes())  # renamed
    assert chunks.get(name_of(other)) is None and not chunks.has(name_of(other))  # does not open; removed
    sealed = bytearray((tmp_path / "chunks" / name).read_bytes())
    sealed[40] ^= 1
    (tmp_path / "chunks" / name).write_bytes(bytes(sealed))
    assert chunks.get(name) is None and chunks.names() == set()
    chunks.put(name, data)
    (tmp_path / "chunks" / ".half.tmp").write_bytes(b"x")  # a write in flight: left alone
    (tmp_path / "chunks" / ".old.tmp").write_bytes(b"x")
    os.utime(tmp_path / "chunks" / ".old.tmp", (time.time() - 7200, time.time() - 7200))  # a crash's leftover
    assert chunks.keep(set()) == 2 and chunks.names() == set()
    assert [p.name for p in (tmp_path / "chunks").iterdir()] == [".half.tmp"]


@settings(max_examples=200)
@given(st.binary(max_size=300), st.sampled_from(["patrons", "items", "loans"]))
def test_any_bytes_are_rows_or_a_chunk_error(data: bytes, kind: str) -> None:
    for candidate in (data, zlib.compress(data)):
        try:
            rows = unpack_rows(kind, candidate)  # type: ignore[arg-type]
            assert isinstance(rows, list)
        except ChunkError:
            pass
        try:
            unpack_index(candidate)
        except ChunkError:
            pass


def test_a_chunk_is_cut_before_it_outgrows_a_peer_frame() -> None:
    """Rows as large as the ILS may send (long titles, many holds) still make chunks a link can carry."""
    big = [Item(f"39{k:06d}", "題" * 200, "著" * 200, "x" * 200, "BK", "MAIN", False, False, False,
                tuple(Hold(f"23{h:06d}", False, "MAIN") for h in range(50))) for k in range(3_000)]
    cutter = Cutter(rows_per_chunk=10_000, max_bytes=1024 * 1024)
    cutter.add("items", big)
    cutter.finish(1, 1_700_000_000_000, 0, len(big), "test ILS")
    chunks = cutter.take()
    assert len(chunks) >= 3 and sum(e.rows for e in cutter.entries) == 3_000
    for name, data in chunks:
        assert name == name_of(data) and len(zlib.decompress(data)) <= 1024 * 1024 + 5_000
        assert unpack_rows("items", data)[0].title == "題" * 200


def test_a_chunk_that_inflates_beyond_its_bound_is_refused() -> None:
    with pytest.raises(ChunkError, match="inflates"):
        unpack_rows("patrons", zlib.compress(b"\x00" * (40 * 1024 * 1024)))


# ---- the fetcher, its peers in memory (the real links: tests/test_snapshot_desk.py)


class Silent:
    """A linked desk that never answers what it is asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def ask_chunks(self, wanted: list[str]) -> bool:
        self.asked.extend(wanted)
        return True


class Peer:
    """A desk at the other end of a link: answers what it is asked from its chunk files, or wrongly."""

    def __init__(self, node: str, chunks: ChunkFiles | None, fetcher: Fetcher, *, liar: bool = False) -> None:
        self.node, self.chunks, self.fetcher, self.liar = node, chunks, fetcher, liar
        self.asked: list[str] = []

    async def ask_chunks(self, wanted: list[str]) -> bool:
        self.asked.extend(wanted)
        for name in wanted:
            data = self.chunks.get(name) if self.chunks is not None else None
            if self.liar and data is not None:
                data = pack_rows(people(1))  # well-formed, and not the chunk asked for
            self.fetcher.received(self.node, name, data)
        return True


class Peers:
    def __init__(self) -> None:
        self.links: dict[str, Peer] = {}

    def chunk_links(self) -> dict[str, Peer]:
        return self.links


async def test_a_desk_fetches_from_whoever_has_each_chunk_and_refuses_wrong_bytes(tmp_path: Path) -> None:
    source = ChunkFiles(tmp_path / "bridge-chunks", KEY)
    patrons, items = people(300), things(100)
    index, n = cut(source, patrons, items, rows=25)
    log = SnapshotLogStub()
    refused: list[tuple[Refusal, str]] = []
    log.state.snapshot = SnapshotRef(index, 3, 1_700_000_000_000, 300, 100, "test ILS", "e")
    key_dir = tmp_path / "desk"
    key = load_or_create_key(key_dir)
    desk = SnapshotStore(key_dir / "snapshot.sqlite", key)
    clock = {"now": 1_700_000_000_000 + 3_600_000, "pending": 1}
    fetcher = Fetcher(log, desk, ChunkFiles(tmp_path / "desk-chunks", key), asyncio.Lock(),
                      lambda kind, why: refused.append((kind, why)), window=4, key_dir=key_dir,
                      retention_ms=30 * 86_400_000, pending=lambda: clock["pending"], now=lambda: clock["now"])
    peers = Peers()
    fetcher.peers = peers
    peers.links = {"a-liar": Peer("a-liar", source, fetcher, liar=True), "b-empty": Peer("b-empty", None, fetcher),
                   "c-bridge": Peer("c-bridge", source, fetcher), "d-silent": Silent()}
    fetcher.ask_timeout = 0.0  # a chunk asked of the silent desk is asked of another at the next turn
    await fetcher._step()  # nothing held: the index first
    assert fetcher.state == "fetching" and sum(len(p.asked) for p in peers.links.values()) == 1
    for _ in range(200):
        await fetcher._step()
        if desk.manifest is not None:
            break
    assert desk.manifest is not None and desk.manifest.index == index and fetcher.state == "idle"
    assert desk.patron("23000299") == Patron("23000299", "Smith, John 299", "ADULT", "MAIN", "2030-01-01", None,
                                             299, 0, 5)
    assert fetcher.refused >= 1 and all(kind is Refusal.BAD_CHUNK for kind, _ in refused)
    assert len(refused) == fetcher.refused
    assert peers.links["c-bridge"].asked  # what the others failed came from the one that had it
    assert peers.links["d-silent"].asked  # asked, never answered, and asked elsewhere
    assert set((tmp_path / "desk-chunks").iterdir()) and {p.name for p in (tmp_path / "desk-chunks").iterdir()} == {
        *names(unpack_index(source.get(index))), index}
    assert (fetcher.have, fetcher.needed) == (n + 1, n + 1)  # the index too
    await fetcher._step()
    assert fetcher.state == "idle"  # it holds what the log names: nothing more asked
    held = desk.manifest
    log.state.snapshot = SnapshotRef("0" * 64, 2, 1_690_000_000_000, 1, 1, "test ILS", "older")
    await fetcher._step()  # the log names an older version (a stale bridge): this desk keeps its own
    assert fetcher.state == "idle" and desk.manifest == held
    log.state.snapshot = SnapshotRef(index, 3, 1_700_000_000_000, 300, 100, "test ILS", "e")

    # a month on without a newer snapshot: kept while anything is left to upload, then purged, key and all
    clock["now"] += 31 * 86_400_000
    await fetcher._step()
    assert desk.manifest is not None and fetcher.purged_at is None
    clock["pending"], clock["now"] = 0, clock["now"] + 60_000  # asked again a minute on
    asked = sum(len(p.asked) for p in peers.links.values())
    await fetcher._step()
    assert desk.manifest is None and desk.patron("23000299") is None and fetcher.purged_at == clock["now"]
    assert not (key_dir / "snapshot.sqlite").exists() and list((tmp_path / "desk-chunks").iterdir()) == []
    assert load_or_create_key(key_dir) != key  # the old key is gone: copies of the files read as noise
    await fetcher._step()
    assert fetcher.state == "idle" and sum(len(p.asked) for p in peers.links.values()) == asked  # not refetched
    assert log.appended == []  # a desk that fetches writes nothing
