"""The patron and item snapshot without a desk: rows read from whatever the ILS sends, the SQLite store's
look-ups and accent-insensitive name search, and an atomic switch between versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from node.snapshot import store
from node.snapshot.rows import Hold, Item, Patron, item_from_koha, patron_from_koha
from node.snapshot.store import SnapshotStore, fts_query

KEY = bytes(range(32))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
patron_fields = st.sampled_from(["cardnumber", "surname", "firstname", "expiry_date", "restriction", "restricted",
                                 "account_balance", "checkouts_count", "checkouts_limit", "patron_card_lost"])
item_fields = st.sampled_from(["external_id", "title", "holds", "not_for_loan_status", "lost_status", "withdrawn"])


@settings(max_examples=300)
@given(st.one_of(json_values, st.dictionaries(patron_fields, json_values)),
       st.one_of(json_values, st.dictionaries(item_fields, json_values)))
def test_whatever_the_ils_sends_is_read_or_left_out_never_raised_on(patron, item) -> None:
    p = patron_from_koha(patron)
    assert p is None or (isinstance(p, Patron) and p.barcode and p.name)
    i = item_from_koha(item)
    assert i is None or (isinstance(i, Item) and i.barcode and i.title)
    builder = store.Builder(Path(":memory:"), KEY)  # and what is read can be written
    builder.add_patrons([p] if p else [])
    builder.add_items([i] if i else [])
    builder.abort()


def test_text_sqlite_or_msgpack_would_refuse_is_made_safe() -> None:
    p = patron_from_koha({"cardnumber": "7", "surname": "\ud800Dvor\u030cák", "checkouts_count": 2**70,
                          "checkouts_limit": -3})
    assert p is not None and p.name == "?Dvořák" and p.loans == 0 and p.limit is None
    builder = store.Builder(Path(":memory:"), KEY)
    builder.add_patrons([p])
    builder.abort()


def test_a_patron_row_in_staffs_words() -> None:
    p = patron_from_koha({"cardnumber": " 23000001 ", "surname": "Dvořák", "firstname": "Antonín",
                          "expiry_date": "2026-01-31", "restricted": True, "account_balance": 12.5,
                          "restriction": {"type": "MANUAL", "expiration_date": "2027-03-01", "comment": "damaged book"},
                          "checkouts_count": 3, "checkouts_limit": 5, "email": "ignored@example.org"})
    assert p == Patron("23000001", "Dvořák, Antonín", None, None, "2026-01-31",
                       "debarred until 2027-03-01: damaged book", 1250, 3, 5)
    assert patron_from_koha({"cardnumber": "1", "patron_card_lost": True}).block == "card reported lost"
    assert patron_from_koha({"cardnumber": "", "surname": "X"}) is None
    assert patron_from_koha({"surname": "no card"}) is None


def test_an_item_row_lists_its_holds_waiting_first() -> None:
    i = item_from_koha({"external_id": "39000001", "title": "Rusalka", "not_for_loan_status": 0,
                        "holds": [{"cardnumber": "A", "priority": 1, "status": None},
                                  {"cardnumber": "B", "priority": 2, "status": "W", "pickup_library_id": "MAIN"}]})
    assert i.holds == (Hold("B", True, "MAIN"), Hold("A", False, None))
    assert item_from_koha({"external_id": "2", "not_for_loan_status": 1}).not_for_loan


def patrons() -> list[Patron]:
    names = ["Dvořák, Antonín", "Müller, Hans", "Muller, Jane", "Smith, John", "Nguyễn, Thị Minh"]
    return [Patron(f"2300000{k}", name, "ADULT", "MAIN", "2030-01-01", None, 0, 0, 5) for k, name in enumerate(names)]


def built(tmp_path: Path, people: list[Patron], version: int = 1) -> SnapshotStore:
    snapshot = SnapshotStore(tmp_path / "snapshot.sqlite", KEY)
    store.build(snapshot.next_path(), KEY, people, [Item("39000001", "Rusalka", None, None, None, None, False, False,
                                                    False, ())], 1_700_000_000_000, version, "test ILS")
    snapshot.switch(snapshot.next_path())
    return snapshot


def test_names_are_found_without_their_accents_and_by_prefix(tmp_path: Path) -> None:
    snapshot = built(tmp_path, patrons())

    def names(text: str) -> set[str]:
        return {p.name for p in snapshot.search(text)}

    assert names("dvorak") == {"Dvořák, Antonín"}
    assert names("DVOŘÁK antonin") == {"Dvořák, Antonín"}
    assert names("muller") == {"Müller, Hans", "Muller, Jane"}
    assert names("müller hans") == {"Müller, Hans"}
    assert names("dvo") == {"Dvořák, Antonín"}
    assert names("nguyen minh") == {"Nguyễn, Thị Minh"}
    assert names("Dvor\u030cák") == {"Dvořák, Antonín"}  # typed decomposed (a combining caron)
    assert names("nobody") == set()
    for odd in ['"', "*", "AND", "(x", "NEAR(a b)", "-", "a:b", "'; DROP TABLE patrons; --", "\x00", "ü" * 100]:
        snapshot.search(odd)  # never an FTS syntax error
    assert fts_query("  ,;  ") is None
    assert snapshot.patron("23000001").name == "Müller, Hans" and snapshot.patron("nope") is None
    assert snapshot.item("39000001").title == "Rusalka"
    assert snapshot.manifest.patrons == 5 and snapshot.manifest.items == 1


def test_a_new_version_replaces_the_old_one_whole(tmp_path: Path) -> None:
    snapshot = built(tmp_path, patrons())
    second = [Patron("24000000", "Novák, Jan", "ADULT", "MAIN", "2030-01-01", "debarred", 0, 0, 5)]
    store.build(snapshot.next_path(), KEY, second, [], 1_700_000_100_000, 2, "test ILS")
    assert snapshot.patron("23000000") is not None  # until the switch, the old version answers
    snapshot.switch(snapshot.next_path())
    assert snapshot.patron("23000000") is None and snapshot.patron("24000000").block == "debarred"
    assert snapshot.manifest.version == 2 and snapshot.manifest.items == 0
    assert [p.name for p in snapshot.search("novak")] == ["Novák, Jan"]
    assert not snapshot.next_path().exists()
    reopened = SnapshotStore(tmp_path / "snapshot.sqlite", KEY)  # and a restart finds it
    assert reopened.manifest == snapshot.manifest


def test_a_damaged_snapshot_file_is_as_none(tmp_path: Path) -> None:
    (tmp_path / "snapshot.sqlite").write_bytes(b"not a database" * 100)
    snapshot = SnapshotStore(tmp_path / "snapshot.sqlite", KEY)
    assert snapshot.manifest is None and snapshot.patron("1") is None and snapshot.search("x") == []
    conn = sqlite3.connect(tmp_path / "other.sqlite")
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.commit()
    conn.close()
    assert SnapshotStore(tmp_path / "other.sqlite", KEY).manifest is None  # in clear (an older version's)
    assert not (tmp_path / "other.sqlite").exists()  # and so removed: no name stays on the disk in clear


def test_a_barcode_the_ils_repeats_keeps_its_last_row_and_one_name(tmp_path: Path) -> None:
    builder = store.Builder(tmp_path / "new.sqlite", KEY)
    first = Patron("23", "Dvořák, Antonín", None, None, None, None, 0, 0, None)
    builder.add_patrons([first])
    builder.add_patrons([Patron("23", "Svoboda, Petr", None, None, None, None, 0, 0, None),
                         Patron("23", "Novák, Jan", None, None, None, "debarred", 0, 0, None)])  # twice in a page
    manifest = builder.finish(1, 1, "test")
    snapshot = SnapshotStore(tmp_path / "snapshot.sqlite", KEY)
    snapshot.switch(tmp_path / "new.sqlite")
    assert manifest.patrons == 1 and snapshot.patron("23").block == "debarred"
    assert snapshot.search("dvorak") == snapshot.search("svoboda") == []
    assert [p.barcode for p in snapshot.search("novak")] == ["23"]
    aborted = store.Builder(tmp_path / "half.sqlite", KEY)
    aborted.add_patrons([first])
    aborted.abort()
    assert not (tmp_path / "half.sqlite").exists()
