"""The ILS snapshot at a real bridge desk, against the simulator: pulled at start and on an admin's request,
shown in the patron and item panels, searched by name without accents, and turned into the warnings staff
see at checkout and checkin; a blocking one is refused until the override, which the event records."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.ilssim import running_simulator
from tests.procs import TEST_PASSWORD, TEST_USER, DeskProcess, get_json, post_json, wait_for

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
        creds = tmp_path / "ils-credentials"
        creds.write_text(f"user={sim.user}\npassword={sim.password}\n")
        creds.chmod(0o600)
        bridge = DeskProcess(tmp_path / "A", "A", [], extra=["--ils", sim.koha_url, "--ils-credentials", str(creds)])
        front = DeskProcess(tmp_path / "B", "B", [bridge.peer_address])
        try:
            await bridge.start()
            await front.start()

            async def snapshot_version(desk: DeskProcess) -> int:
                return (await get_json(session, f"{desk.url}/api/v1/status"))["snapshot"]["version"] or 0

            await wait_for(lambda: snapshot_version(bridge), within=60, what="the bridge's first snapshot")
            status = (await get_json(session, f"{bridge.url}/api/v1/status"))["snapshot"]
            patrons, items = await sim.all_patrons(), await sim.all_items()
            assert (status["patrons"], status["items"]) == (len(patrons), len(items))
            assert status["refresh"]["state"] == "idle" and status["refresh"]["left_out"] == {"patrons": 0,
                                                                                           "items": 0}

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
        finally:
            await front.stop()
            await bridge.stop()
