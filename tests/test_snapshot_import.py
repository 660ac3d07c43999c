"""A library whose ILS has no REST (SIP2 only). A snapshot from files: Koha's patron export (or any CSV with
its columns) and an items CSV, read a page at a time, odd lines left out; sent to a desk with `circmesh
snapshot import`, built there, named in the log, fetched by the other desks, and the files deleted. And the
ILS asked at scan time while it answers (SIP2 patron and item information)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from node.snapshot.atrest import ChunkFiles
from node.snapshot.csvfile import CsvSource
from node.snapshot.importer import SnapshotImport
from node.snapshot.rows import item_from_koha, patron_from_koha
from node.snapshot.store import SnapshotStore
from tests.factories import SnapshotLogStub
from tests.ilssim import running_simulator
from tests.procs import TEST_PASSWORD, TEST_USER, DeskProcess, auth_headers, get_json, post_json, wait_for

PATRONS = (
    "\ufeffcardnumber;surname;firstname;categorycode;branchcode;dateexpiry;debarred;debarredcomment;lost;gonenoaddress;"
    "email\n"
    "23000001;Dvořák;Antonín;ADULT;MAIN;2030-01-31;;;0;0;a@example.org\n"
    "23000002;Müller;Hans;ADULT;MAIN;2030-01-31;2031-05-01;damaged book;0;0;\n"
    "23000003;\"Smith; Jr\";John;CHILD;EAST;2020-01-01;;;1;0;\n"
    "23000004;Novák;Jan;ADULT;MAIN;2030-01-31;9999-12-31;;0;1;\n"
    ";No card;;ADULT;MAIN;;;;;;\n"
)
ITEMS = (
    "barcode,title,author,itemcallnumber,itype,homebranch,notforloan,itemlost,withdrawn\n"
    "39000001,Rusalka,Dvořák,782.1 DVO,BOOK,MAIN,0,0,0\n"
    "39000002,Reference,,R 030,REF,MAIN,1,0,0\n"
)


async def test_koha_export_columns_become_desk_rows_a_page_at_a_time(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(PATRONS, encoding="utf-8")
    (tmp_path / "i.csv").write_text(ITEMS, encoding="utf-8")
    source = CsvSource(tmp_path / "p.csv", tmp_path / "i.csv")
    pages, after = [], 0
    while page := await source.fetch_after("patrons", after, 2):
        pages.append(page)
        after = page[-1]["patron_id"]
    assert [len(p) for p in pages] == [2, 2, 1] and after == 5
    rows = [patron_from_koha(r) for p in pages for r in p]
    assert rows[-1] is None  # no card: left out
    by_card = {r.barcode: r for r in rows if r is not None}
    assert by_card["23000001"].name == "Dvořák, Antonín" and by_card["23000001"].block is None
    assert by_card["23000002"].block == "debarred until 2031-05-01: damaged book"
    assert by_card["23000003"].name == "Smith; Jr, John" and by_card["23000003"].block == "card reported lost"
    assert by_card["23000004"].block == "debarred"  # for good
    assert by_card["23000002"].expiry == "2030-01-31" and by_card["23000003"].category == "CHILD"
    items = [item_from_koha(r) for r in await source.fetch_after("items", 0, 100)]
    assert [(i.barcode, i.title, i.not_for_loan) for i in items] == [("39000001", "Rusalka", False),
                                                                     ("39000002", "Reference", True)]
    assert await source.fetch_after("checkouts", 0, 100) == [] and await source.fetch_rules() == (None, None)
    again = await source.fetch_after("patrons", 0, 10)  # a new pull reads from the start
    assert len(again) == 5


@pytest.mark.multiprocess
async def test_an_admin_gives_a_desk_the_patrons_as_files_and_every_desk_gets_them(tmp_path: Path) -> None:
    (tmp_path / "patrons.csv").write_text(PATRONS, encoding="utf-8")
    (tmp_path / "items.csv").write_text(ITEMS, encoding="utf-8")
    b = DeskProcess(tmp_path / "B", "B", [])  # no ILS at all: a SIP2-only library's desks
    await b.start()
    c = DeskProcess(tmp_path / "C", "C", [b.peer_address])
    try:
        await c.start()
        async with aiohttp.ClientSession() as session:
            url = f"{b.url}/api/v1/snapshot/import"
            async with session.post(url, data=b"cardnumber\n1\n", headers=auth_headers(b.url)) as r:
                assert r.status == 400 and (await r.json())["error"]["code"] == "not_multipart"
            boundary = "cf533b779cf85fc0af9cafe789b336d8"  # parts with odd names (schemathesis found a 500)
            odd = (f'--{boundary}\r\nContent-Disposition: form-data; name=",j\xd5\x1a\xb3\xf1\x00H"\r\n\r\n{{}}\r\n'
                   f'--{boundary}\r\nContent-Disposition: form-data; name=""\r\n\r\nfalse\r\n--{boundary}--\r\n')
            async with session.post(url, data=odd.encode("utf-8", "surrogateescape"), headers=auth_headers(b.url) | {
                    "Content-Type": f"multipart/form-data; boundary={boundary}"}) as r:
                assert r.status == 400, await r.text()
            form = aiohttp.FormData()
            form.add_field("items", ITEMS.encode(), filename="items.csv")
            async with session.post(url, data=form, headers=auth_headers(b.url)) as r:
                assert r.status == 400 and (await r.json())["error"]["code"] == "no_patrons"
            env = os.environ | {"CIRCMESH_USER": TEST_USER, "CIRCMESH_PASSWORD": TEST_PASSWORD}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "node.cli", "snapshot", "import", "--desk", b.url, "--patrons",
                str(tmp_path / "patrons.csv"), "--items", str(tmp_path / "items.csv"), "--wait", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            async with asyncio.timeout(120):
                out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            printed = json.loads(out.decode().strip().splitlines()[-1])
            assert (printed["version"], printed["patrons"], printed["items"]) == (1, 4, 2), printed
            assert printed["file_import"]["left_out"]["patrons"] == 1, printed
            assert not list((tmp_path / "B" / "snapshot-import").glob("*"))  # the files in clear are gone

            async def c_has_it() -> bool:
                return (await get_json(session, f"{c.url}/api/v1/status"))["snapshot"]["version"] == 1

            await wait_for(c_has_it, within=60, what="desk C to get the imported snapshot from B")
            code, answer = await post_json(session, f"{c.url}/api/v1/checkouts",
                                           {"patron": "23000002", "item": "39000001"})
            assert code == 409 and "patron_blocked" in {w["code"] for w in answer["warnings"]}, answer
            hits = (await get_json(session, f"{c.url}/api/v1/patrons?q=muller"))["patrons"]
            assert [h["barcode"] for h in hits] == ["23000002"]
            code, answer = await post_json(session, f"{c.url}/api/v1/checkouts",
                                           {"patron": "23000001", "item": "39000002"})
            assert code == 409 and "item_not_for_loan" in {w["code"] for w in answer["warnings"]}, answer
    finally:
        await c.stop()
        await b.stop()


@pytest.mark.multiprocess
async def test_a_sip2_only_desk_asks_the_ils_at_scan_time(tmp_path: Path) -> None:
    """No REST, no snapshot yet: while the ILS answers, the desk with ILS access asks it of each card and item
    (SIP2 patron and item information) and warns as it would from a snapshot; with the ILS down, it lends."""
    async with running_simulator(tmp_path / "ils", patrons=120, items=200) as sim, \
            aiohttp.ClientSession() as session:
        blocked, good = await sim.take_blocked_patron(), await sim.take_patron()
        lent, borrower = await sim.take_item_on_loan()
        shelf = [(await sim.take_available_item())["external_id"] for _ in range(3)]
        creds = tmp_path / "ils-credentials"
        creds.write_text(f"user={sim.user}\npassword={sim.password}\n")
        creds.chmod(0o600)
        desk = DeskProcess(tmp_path / "A", "A", [], extra=[
            "--ils", sim.sip2_url + "?institution=MAIN&timeout=5", "--ils-credentials", str(creds)])
        await desk.start()
        try:
            async def reachable() -> bool:
                return bool(((await get_json(session, f"{desk.url}/api/v1/status"))["ils"] or {}).get("reachable"))

            await wait_for(reachable, within=30, what="the bridge to reach the ILS over SIP2")
            status = (await get_json(session, f"{desk.url}/api/v1/status"))["snapshot"]
            assert status["version"] is None and "SIP2 cannot list" in status["refresh"]["last_error"], status

            def codes(answer: dict) -> set[str]:
                return {w["code"] for w in answer.get("warnings", [])}

            checkout = f"{desk.url}/api/v1/checkouts"
            code, answer = await post_json(session, checkout, {"patron": blocked["cardnumber"], "item": shelf[0]})
            assert code == 409 and "patron_blocked" in codes(answer), answer
            code, answer = await post_json(session, checkout, {"patron": good["cardnumber"], "item": shelf[0]})
            assert code == 201 and codes(answer) == set(), answer
            code, answer = await post_json(session, checkout, {"patron": good["cardnumber"],
                                                               "item": lent["external_id"]})
            assert code == 409 and "item_on_ils_loan" in codes(answer), answer
            assert next(w for w in answer["warnings"] if w["code"] == "item_on_ils_loan")["patron"] == borrower
            code, answer = await post_json(session, checkout, {"patron": "23999999999", "item": "39999999999"})
            assert code == 201 and codes(answer) == {"unknown_patron", "item_unknown"}, answer

            await sim.set_state(online=False)

            async def down() -> bool:
                return not await reachable()

            await wait_for(down, within=60, what="the bridge to see the ILS down")
            code, answer = await post_json(session, checkout, {"patron": blocked["cardnumber"], "item": shelf[1]})
            assert code == 201 and codes(answer) == set(), answer  # nothing to ask, no snapshot: lent
        finally:
            await desk.stop()


async def test_a_file_that_gives_no_patrons_changes_nothing(tmp_path: Path) -> None:
    """A wrong export (other column names, UTF-16, an empty file) must not tell every desk that nobody is
    known: the build is refused and the snapshot the desk had stays."""
    key = bytes(range(32))
    snapshot = SnapshotStore(tmp_path / "snapshot.sqlite", key)
    chunks = ChunkFiles(tmp_path / "chunks", key)
    log = SnapshotLogStub()
    (tmp_path / "good.csv").write_text(PATRONS, encoding="utf-8")
    importer = SnapshotImport(snapshot, chunks, log, asyncio.Lock(), tmp_path / "import")
    assert importer.reserve() and not importer.reserve()  # one build from files at a time
    importer.start(tmp_path / "good.csv", None, "file good.csv")
    await importer._task
    assert snapshot.manifest.patrons == 4 and snapshot.manifest.items == 0 and len(log.appended) == 1
    assert not (tmp_path / "good.csv").exists()  # deleted once built
    for bad in ("Card number,Name\n1,Dvořák\n2,Müller\n".encode(), PATRONS.encode("utf-16"), b""):
        (tmp_path / "bad.csv").write_bytes(bad)
        assert importer.reserve()
        importer.start(tmp_path / "bad.csv", None, "file bad.csv")
        await importer._task
        assert importer.to_json()["state"] == "failed" and "could not be read" in importer.to_json()["last_error"]
        assert snapshot.manifest.patrons == 4 and len(log.appended) == 1  # the snapshot it had stays
    (tmp_path / "import").mkdir()
    (tmp_path / "import" / "patrons-x.csv").write_text(PATRONS)  # left by a desk that stopped mid-import
    SnapshotImport(snapshot, chunks, log, asyncio.Lock(), tmp_path / "import")
    assert list((tmp_path / "import").iterdir()) == []


async def test_odd_lines_are_left_out_and_past_restrictions_do_not_block(tmp_path: Path) -> None:
    head = PATRONS.splitlines()[0]
    odd = [head, "23100001;Past;Pat;ADULT;MAIN;2030-01-31;2001-01-01;served;0;0;",
           "23100002;Long;" + "x" * 100_000 + ";ADULT;MAIN;;;;;;", "23100003;Nul\x00;A;ADULT;MAIN;;;;;;",
           "23100004;Fine;Ann;ADULT;MAIN;2030-01-31;;;0;0;"]
    (tmp_path / "odd.csv").write_text("\n".join(odd) + "\n", encoding="utf-8")
    rows = [patron_from_koha(r) for r in await CsvSource(tmp_path / "odd.csv").fetch_after("patrons", 0, 100)]
    read = {r.barcode: r for r in rows if r is not None}
    assert set(read) == {"23100001", "23100004"} and len(rows) == 4  # the long line and the NUL left out
    assert read["23100001"].block is None  # restricted until 2001: not any more
