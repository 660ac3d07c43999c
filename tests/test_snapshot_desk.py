"""The ILS snapshot at a real bridge desk, against the simulator: pulled at start and on an admin's request,
shown in the patron and item panels, searched by name without accents, and turned into the warnings staff
see at checkout and checkin; a blocking one is refused until the override, which the event records."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.snapshot.atrest import KEY_FILE, derive
from node.snapshot.chunks import pack_rows
from node.snapshot.rows import Patron
from tests.ilssim import running_simulator
from tests.procs import TEST_PASSWORD, TEST_USER, DeskProcess, Relay, get_json, post_json, wait_for

pytestmark = pytest.mark.multiprocess


async def checkout(session, desk, patron: str, item: str, override: bool = False) -> tuple[int, dict]:
    body = {"patron": patron, "item": item, **({"override": True} if override else {})}
    return await post_json(session, f"{desk.url}/api/v1/checkouts", body)


def codes(answer: dict) -> set[str]:
    return {w["code"] for w in answer.get("warnings") or answer.get("error", {}).get("warnings", [])}


async def test_the_bridge_pulls_a_snapshot_and_the_desk_warns_from_it(tmp_path: Path) -> None:
    async with running_simulator(tmp_path / "ils", patrons=200, items=400) as sim, \
            aiohttp.ClientSession() as session:
        good = await sim.take_patron()
        blocked = await sim.take_blocked_patron()
        expired = await sim.take_expired_patron()
        fined = await sim.take_patron_with_fines()
        shelf = [(await sim.take_available_item())["external_id"] for _ in range(7)]
        held, _ = await sim.take_item_with_hold(on_loan=False)
        lent, borrower = await sim.take_item_on_loan()  # lent online, before the outage
        held_too, _ = await sim.take_item_with_hold(on_loan=False)
        taken_card = await sim.take_patron()  # a card the ILS already gives someone
        creds = tmp_path / "ils-credentials"
        creds.write_text(f"user={sim.user}\npassword={sim.password}\n")
        creds.chmod(0o600)
        bridge = DeskProcess(tmp_path / "A", "A", [], extra=["--ils", sim.koha_url, "--ils-credentials", str(creds)])
        front = DeskProcess(tmp_path / "B", "B", [bridge.peer_address], extra=["--branch", "EAST"])
        try:
            await bridge.start()
            await front.start()

            async def snapshot_version(desk: DeskProcess) -> int:
                return (await get_json(session, f"{desk.url}/api/v1/status"))["snapshot"]["version"] or 0

            await wait_for(lambda: snapshot_version(bridge), within=60, what="the bridge's first snapshot")
            await wait_for(lambda: snapshot_version(front), within=60, what="desk B to get it from the bridge")
            status = (await get_json(session, f"{bridge.url}/api/v1/status"))["snapshot"]
            patrons, items = await sim.all_patrons(), await sim.all_items()
            assert (status["patrons"], status["items"]) == (len(patrons), len(items))
            assert status["loans"] == len(await sim.all_checkouts()) > 0
            assert status["refresh"]["state"] == "idle" and status["refresh"]["left_out"] == {
                "patrons": 0, "items": 0, "checkouts": 0}

            # the patron and item panels say what the ILS says
            panel = await get_json(session, f"{bridge.url}/api/v1/patrons/{blocked['cardnumber']}")
            assert panel["name"] == f"{blocked['surname']}, {blocked['firstname']}"
            assert panel["ils"]["block"]
            item = await get_json(session, f"{bridge.url}/api/v1/items/{held['external_id']}")
            assert item["ils"]["title"] == held["title"] and item["ils"]["holds"]

            # name search, without the accents staff may not type
            accented = next(p for p in patrons if any(ord(ch) > 127 for ch in p["surname"]))
            plain = accented["surname"].translate(str.maketrans("řáéíóúůüöäčšžěýňťďĺľ", "raeiouuuoacszeyntdll"))
            hits = (await get_json(session, f"{bridge.url}/api/v1/patrons?q={plain}"))["patrons"]
            assert accented["cardnumber"] in {h["barcode"] for h in hits}, (plain, hits[:3])

            # checkouts: clean, then each warning the ILS would have given, refused until overridden
            code, answer = await checkout(session, bridge, good["cardnumber"], shelf[0])
            assert code == 201 and answer["warnings"] == [], answer
            # due as the ILS's loan rules and calendar say, worked out here from what the ILS serves
            item_type = next(i for i in items if i["external_id"] == shelf[0])["item_type_id"]
            rules = await sim.rest("/api/v1/circulation_rules")
            calendar = await sim.rest("/api/v1/contrib/circmesh/calendar")
            days = next(r["issuelength"] for r in rules if r["context"]["patron_category_id"] == good["category_id"]
                        and r["context"]["item_type_id"] == item_type)
            expected = date.today() + timedelta(days=days)
            while expected.weekday() in calendar["closed_weekdays"] or expected.isoformat() in calendar["holidays"]:
                expected += timedelta(days=1)
            lent_due = datetime.fromtimestamp(answer["event"]["body"]["due"] / 1000).astimezone()
            assert (lent_due.date(), lent_due.strftime("%H:%M")) == (expected, "23:59"), (lent_due, days, calendar)
            for patron, expected in ((blocked, "patron_blocked"), (expired, "card_expired"),
                                     (fined, "fines_over_limit")):
                item_barcode = shelf.pop()
                code, answer = await checkout(session, bridge, patron["cardnumber"], item_barcode)
                assert code == 409 and answer["error"]["code"] == "needs_override", answer
                assert expected in codes(answer), answer
                said = next(w for w in answer["warnings"] if w["code"] == expected)
                assert said["name"] == f"{patron['surname']}, {patron['firstname']}", said  # the screen words it
                code, answer = await checkout(session, bridge, patron["cardnumber"], item_barcode, override=True)
                assert code == 201 and answer["event"]["body"].get("override") is True, answer
            # what the fined patron pays at the desk counts: paid up, no fines warning
            owed = f"{fined['account_balance']:.2f}"
            code, answer = await post_json(session, f"{bridge.url}/api/v1/payments",
                                           {"patron": fined["cardnumber"], "amount": owed})
            assert code == 201, answer
            code, answer = await checkout(session, bridge, fined["cardnumber"], shelf.pop())
            assert code == 201 and "fines_over_limit" not in codes(answer), answer
            code, answer = await checkout(session, bridge, good["cardnumber"], held["external_id"])
            assert code == 409 and "item_on_hold" in codes(answer), answer
            code, answer = await checkout(session, bridge, "99999999999", shelf.pop())
            assert code == 201 and "unknown_patron" in codes(answer), answer  # a warning, not a refusal
            code, answer = await post_json(session, f"{bridge.url}/api/v1/checkins", {"item": held["external_id"]})
            assert code == 201 and "hold_found" in codes(answer), answer
            code, answer = await post_json(session, f"{front.url}/api/v1/checkins",
                                           {"item": held_too["external_id"]})  # at EAST: to the pick-up library
            assert code == 201 and codes(answer) == {"hold_in_transit", "not_lent"}, answer
            said = next(w for w in answer["warnings"] if w["code"] == "hold_in_transit")
            assert said["branch"] == held_too["holds"][0]["pickup_library_id"], answer

            # a loan made online before the outage: known at the desk, warned about, ended by a checkin
            panel = await get_json(session, f"{front.url}/api/v1/items/{lent['external_id']}")
            assert panel["ils_loan"]["patron"] == borrower and panel["loan"] is None, panel
            code, answer = await checkout(session, front, good["cardnumber"], lent["external_id"])
            assert code == 409 and "item_on_ils_loan" in codes(answer), answer
            said = next(w for w in answer["warnings"] if w["code"] == "item_on_ils_loan")
            assert said["patron"] == borrower and "at the ILS" in said["message"], said
            panel = await get_json(session, f"{front.url}/api/v1/patrons/{borrower}")
            assert lent["external_id"] in {loan["item"] for loan in panel["ils_loans"]}, panel
            code, answer = await post_json(session, f"{front.url}/api/v1/checkins", {"item": lent["external_id"]})
            assert code == 201, answer  # a plain return, at another library (B is at EAST): it goes home
            assert codes(answer) in ({"in_transit"}, {"hold_in_transit"}), answer
            said = answer["warnings"][0]
            assert said["branch"] == lent["home_library_id"] or said["code"] == "hold_in_transit", said
            panel = await get_json(session, f"{front.url}/api/v1/items/{lent['external_id']}")
            assert panel["ils_loan"] is None, panel
            code, answer = await checkout(session, front, good["cardnumber"], lent["external_id"])
            assert code == 201 and not codes(answer) & {"item_on_loan", "item_on_ils_loan"}, answer
            code, answer = await post_json(session, f"{front.url}/api/v1/checkins", {"item": shelf[-1]})
            assert code == 201 and codes(answer) == {"not_lent", "in_transit"}, answer  # on the shelf, never lent

            # the ILS goes away: a refresh stops, says why, and the desk keeps the snapshot it had
            before = await snapshot_version(bridge)
            await sim.set_state(online=False)
            code, answer = await post_json(session, f"{bridge.url}/api/v1/snapshot/refresh", {})
            assert code == 202, answer

            async def refresh_failed() -> bool:
                status = (await get_json(session, f"{bridge.url}/api/v1/status"))["snapshot"]
                return status["refresh"]["state"] == "failed"

            await wait_for(refresh_failed, within=60, what="the refresh to fail while the ILS is away")
            status = (await get_json(session, f"{bridge.url}/api/v1/status"))["snapshot"]
            assert status["version"] == before and "did not answer" in status["refresh"]["last_error"]
            panel = await get_json(session, f"{bridge.url}/api/v1/patrons/{blocked['cardnumber']}")
            assert panel["ils"]["block"]  # still known, from the snapshot kept
            await sim.set_state(online=True)

            # an admin asks for a refresh: a new version; a desk that is not the bridge says where to ask
            code, answer = await post_json(session, f"{bridge.url}/api/v1/snapshot/refresh", {})
            assert code == 202, answer

            async def newer() -> bool:
                return await snapshot_version(bridge) > before

            await wait_for(newer, within=60, what="a refreshed snapshot")

            # and from the command line, waiting for the new version
            version = await snapshot_version(bridge)
            env = os.environ | {"CIRCMESH_USER": TEST_USER, "CIRCMESH_PASSWORD": TEST_PASSWORD}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "node.cli", "snapshot", "refresh", "--desk", bridge.url, "--wait", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            async with asyncio.timeout(120):
                out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            printed = json.loads(out.decode().strip().splitlines()[-1])
            assert printed["version"] > version and printed["patrons"] == len(patrons), printed
            code, answer = await post_json(session, f"{front.url}/api/v1/snapshot/refresh", {})
            assert code == 409 and answer["error"]["code"] == "not_the_bridge", answer

            # a desk registers a card the ILS gives someone else: the ILS does not create the patron (this
            # bridge has no category= either; with one, Koha says the card is taken), and the loan made to
            # that card waits (Koha would put it on the other account) until an admin says
            code, answer = await post_json(session, f"{front.url}/api/v1/registrations",
                                           {"patron": taken_card["cardnumber"], "name": "Someone, Else"})
            assert code == 201, answer
            item_barcode = shelf.pop()
            code, answer = await checkout(session, front, taken_card["cardnumber"], item_barcode)
            assert code == 201, answer

            async def refused_registration() -> dict | None:
                found = (await get_json(session, f"{front.url}/api/v1/conflicts"))["conflicts"]
                return next((x for x in found if x["kind"] == "registration_refused"), None)

            conflict = await wait_for(refused_registration, within=60, what="the refused registration's conflict")
            assert conflict["patrons"] == [taken_card["cardnumber"]], conflict
            assert await sim.loan_of(item_barcode) is None  # held: not on the other patron's account
            code, answer = await post_json(session, f"{front.url}/api/v1/conflicts/{conflict['id']}/resolution",
                                           {"action": "apply"})  # staff checked at the ILS: upload it
            assert code == 201, answer

            async def uploaded() -> bool:
                return (await sim.loan_of(item_barcode) or {}).get("cardnumber") == taken_card["cardnumber"]

            await wait_for(uploaded, within=60, what="the held loan to go up once the admin said")
        finally:
            await front.stop()
            await bridge.stop()


def damage_chunks(data: Path) -> int:
    """Replaces every chunk a desk keeps with another chunk's rows, sealed properly under that desk's key (a
    disk fault the seal cannot see, or a bug): the desk must not serve them, or build from them."""
    key = derive((data / KEY_FILE).read_bytes(), "circmesh snapshot chunks")
    wrong = pack_rows([Patron("0", "Nobody, No", None, None, None, None, 0, 0, None)])
    files = [p for p in (data / "snapshot-chunks").iterdir() if not p.name.startswith(".")]
    for path in files:
        nonce = os.urandom(12)
        path.write_bytes(nonce + AESGCM(key).encrypt(nonce, wrong, path.name.encode()))
    return len(files)


async def test_every_desk_gets_the_snapshot_from_its_peers_even_in_an_outage(tmp_path: Path) -> None:
    """A (the bridge) pulls the snapshot; B gets it from A; the ILS goes down; C, a new desk, starts linked
    only to B, whose chunks are damaged: B serves none of them (and drops them), and once C can reach A it
    gets the snapshot from A. Then a refresh that changes one patron reaches every desk. (A peer that sends
    wrong bytes over the wire: tests/test_tampering.py.)"""
    async with running_simulator(tmp_path / "ils", patrons=300, items=300) as sim, \
            aiohttp.ClientSession() as session:
        blocked, good = await sim.take_blocked_patron(), await sim.take_patron()
        shelf = (await sim.take_available_item())["external_id"]
        # for every warning at every desk, the ILS away: the patrons and items that call for each
        expired, fined = await sim.take_expired_patron(), await sim.take_patron_with_fines()
        held, _ = await sim.take_item_with_hold(on_loan=False)
        lent, borrower = await sim.take_item_on_loan()
        not_lendable = sim._take(await sim.all_items(), "external_id", lambda i: i["not_for_loan_status"] != 0)
        today = date.today().isoformat()
        near_limit = min((p for p in await sim.all_patrons() if not p["restricted"] and p["expiry_date"] >= today
                          and p["account_balance"] <= 5 and p["checkouts_limit"] and p["cardnumber"] not in (
                              good["cardnumber"], borrower)),
                         key=lambda p: p["checkouts_limit"] - p["checkouts_count"])
        room = near_limit["checkouts_limit"] - near_limit["checkouts_count"]
        assert 1 <= room <= 20, near_limit
        for_limit = [(await sim.take_available_item())["external_id"] for _ in range(room + 1)]
        creds = tmp_path / "ils-credentials"
        creds.write_text(f"user={sim.user}\npassword={sim.password}\n")
        creds.chmod(0o600)
        a = DeskProcess(tmp_path / "A", "A", [], extra=["--ils", sim.koha_url, "--ils-credentials", str(creds)])
        b = DeskProcess(tmp_path / "B", "B", [a.peer_address])
        await a.start()
        relay = Relay(a.peer_port)
        await relay.start()
        c = DeskProcess(tmp_path / "C", "C", [b.peer_address, relay.address])
        try:
            await b.start()

            async def snapshot(desk: DeskProcess) -> dict:
                return (await get_json(session, f"{desk.url}/api/v1/status"))["snapshot"]

            async def installed(desk: DeskProcess, version: int) -> bool:
                return (await snapshot(desk))["version"] == version

            await wait_for(lambda: installed(a, 1), within=60, what="the bridge's first snapshot")
            await wait_for(lambda: installed(b, 1), within=60, what="desk B to get the snapshot from A")
            b_status = await snapshot(b)
            assert b_status["fetch"] == {"state": "idle", "version": 1, "have": 4, "needed": 4, "fetched": 4,
                                         "refused": 0, "last_error": None, "purged_at": None}, b_status
            assert (b_status["patrons"], b_status["items"]) == (300, 300) and b_status["refresh"] is None
            panel = await get_json(session, f"{b.url}/api/v1/patrons/{blocked['cardnumber']}")
            assert panel["ils"]["block"] and panel["name"] == f"{blocked['surname']}, {blocked['firstname']}"

            surnames = {p["surname"].encode() for p in await sim.all_patrons() if len(p["surname"]) >= 5}
            assert len(surnames) > 20
            await sim.set_state(online=False)  # the outage
            assert damage_chunks(tmp_path / "B") == 4  # the index, patrons, items, loans
            relay.cut()  # C cannot reach A yet
            await c.start()

            async def b_dropped_its_damaged_chunks() -> bool:  # the index, the first chunk C asks for
                return len(list((tmp_path / "B" / "snapshot-chunks").iterdir())) < 4

            await wait_for(b_dropped_its_damaged_chunks, within=60, what="desk B to find its chunks damaged")
            fetch = (await snapshot(c))["fetch"]
            assert fetch["state"] == "fetching" and fetch["version"] == 1 and fetch["fetched"] == 0, fetch
            assert (await snapshot(c))["version"] is None  # nothing wrong was installed
            relay.heal()
            await wait_for(lambda: installed(c, 1), within=60, what="desk C to get the snapshot from A")
            status = await get_json(session, f"{c.url}/api/v1/status")
            assert status["snapshot"]["fetch"]["state"] == "idle", status
            assert (status["snapshot"]["patrons"], status["snapshot"]["items"]) == (300, 300)

            # C warns from it with the ILS down: the blocked patron is refused until overridden
            code, answer = await checkout(session, c, blocked["cardnumber"], shelf)
            assert code == 409 and "patron_blocked" in codes(answer), answer
            code, answer = await checkout(session, c, blocked["cardnumber"], shelf, override=True)
            assert code == 201 and answer["event"]["body"]["override"] is True, answer
            hits = (await get_json(session, f"{c.url}/api/v1/patrons?q={blocked['surname']}"))["patrons"]
            assert blocked["cardnumber"] in {h["barcode"] for h in hits}

            # every warning at B and at C, the ILS away, each from the snapshot the desk fetched
            for desk in (b, c):
                for patron, item, expected in (
                        (expired["cardnumber"], for_limit[0], "card_expired"),
                        (fined["cardnumber"], for_limit[0], "fines_over_limit"),
                        (good["cardnumber"], held["external_id"], "item_on_hold"),
                        (good["cardnumber"], lent["external_id"], "item_on_ils_loan"),
                        (good["cardnumber"], not_lendable["external_id"], "item_not_for_loan"),
                        (borrower, lent["external_id"], "already_on_loan_to_patron")):
                    code, answer = await checkout(session, desk, patron, item)
                    assert code == 409 and expected in codes(answer), (desk.desk, expected, answer)
            # the loan limit counts the loans made at every desk: lent at B and C, refused at both
            card = near_limit["cardnumber"]
            for k, item in enumerate(for_limit[:room]):
                code, answer = await checkout(session, (b, c)[k % 2], card, item)
                assert code == 201 and "loan_limit_reached" not in codes(answer), answer

            async def limit_everywhere() -> bool:
                found = []
                for desk in (b, c):
                    code, answer = await checkout(session, desk, card, for_limit[room])
                    found.append(code == 409 and "loan_limit_reached" in codes(answer))
                return all(found)

            await wait_for(limit_everywhere, within=30, what="the loan limit reached at B and at C")

            # the ILS is back and staff there restrict a patron: the next refresh reaches every desk, which
            # fetches the one chunk that changed (and the new index), not the items' and loans' it holds
            await sim.set_state(online=True)
            await sim.restrict(good["cardnumber"], "2031-01-31", "damaged book")
            fetched = {d.desk: (await snapshot(d))["fetch"]["fetched"] for d in (b, c)}
            code, answer = await post_json(session, f"{a.url}/api/v1/snapshot/refresh", {})
            assert code == 202, answer
            for desk in (a, b, c):
                await wait_for(lambda d=desk: installed(d, 2), within=60, what=f"desk {desk.desk} to get version 2")
                panel = await get_json(session, f"{desk.url}/api/v1/patrons/{good['cardnumber']}")
                assert panel["ils"]["block"] == "debarred until 2031-01-31: damaged book", (desk.desk, panel)
            # C fetches the changed chunk and the index (and the loans' chunk if the bridge had uploaded C's
            # checkout before it refreshed), never the items' it holds; B, which dropped its damaged chunks,
            # fetches all 4
            assert (await snapshot(c))["fetch"]["fetched"] - fetched["C"] in (2, 3)
            assert (await snapshot(b))["fetch"]["fetched"] - fetched["B"] == 4
            assert len(list((a.data / "snapshot-chunks").iterdir())) == 4  # the old version's chunks are gone

            # no patron's name lies in clear on any desk's disk
            for desk in (a, b, c):
                for path in [desk.data / "snapshot.sqlite", *(desk.data / "snapshot-chunks").iterdir()]:
                    data = path.read_bytes()
                    found = [s for s in surnames if s in data]
                    assert not found, (desk.desk, path.name, found[:3])
        finally:
            await relay.close()
            for desk in (c, b, a):
                await desk.stop()
