"""Epochs with real desks: the ILS simulator, a bridge that seals small documents, and a desk cut off from
the others (through a relay the test owns) while the cluster moves on two epochs. Its scans reach every
desk and the ILS exactly once, it gets what it missed in journal runs, and every desk ends in the same
epoch with the same events. A desk that joins later with an empty journal gets the whole history the same
way, with the same state."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.ilssim import running_simulator
from tests.procs import DeskProcess, Relay, get_json, post_json, wait_for
from tests.test_cluster_processes import event_ids

pytestmark = pytest.mark.multiprocess


async def status(session, desk: DeskProcess) -> dict:
    return await get_json(session, f"{desk.url}/api/v1/status")


async def scan(session, desk: DeskProcess, patron: str, item: str) -> str:
    code, answer = await post_json(session, f"{desk.url}/api/v1/checkouts", {"patron": patron, "item": item})
    assert code == 201, answer
    return answer["event"]["id"]


async def test_a_desk_cut_off_across_two_seals_and_a_newcomer(tmp_path: Path) -> None:
    async with running_simulator(tmp_path / "ils", patrons=50, items=300) as sim, \
            aiohttp.ClientSession() as session:
        patrons = [(await sim.take_patron())["cardnumber"] for _ in range(10)]
        items = [(await sim.take_available_item())["external_id"] for _ in range(80)]
        creds = tmp_path / "ils-credentials"
        creds.write_text(f"user={sim.user}\npassword={sim.password}\n")
        creds.chmod(0o600)
        bridge = DeskProcess(tmp_path / "A", "A", [], extra=["--ils", sim.koha_url, "--ils-credentials", str(creds),
                                                              "--seal-every", "25"])
        front = DeskProcess(tmp_path / "B", "B", [bridge.peer_address])
        away = DeskProcess(tmp_path / "C", "C", [])
        to_bridge, to_front = Relay(bridge.peer_port), Relay(front.peer_port)
        await to_bridge.start()
        await to_front.start()
        away.peers = [to_bridge.address, to_front.address]
        desks = [bridge, front, away]
        newcomer: DeskProcess | None = None
        try:
            for d in desks:
                await d.start()

            async def linked(desk: DeskProcess, n: int) -> bool:
                return sum(p["connected"] for p in (await status(session, desk))["peers"]) >= n

            for d in desks:
                await wait_for(lambda d=d: linked(d, 2), what=f"{d.desk} linked")
            to_bridge.cut()
            to_front.cut()
            cut_off = [await scan(session, away, patrons[k % 10], items[k]) for k in range(12)]
            seen = [await scan(session, front, patrons[k % 10], items[k]) for k in range(20, 70)]

            async def epoch_at_least(desk: DeskProcess, n: int) -> bool:
                return (await status(session, desk))["epoch"]["number"] >= n

            # 50 scans and their 50 outcomes: the bridge seals at 25 events in its document
            await wait_for(lambda: epoch_at_least(front, 2), within=60, what="two seals reach the front desk")
            assert (await status(session, away))["epoch"]["number"] == 0
            to_bridge.heal()
            to_front.heal()

            seen_last: list[str] = []

            async def applied_everywhere() -> bool:
                ledger = await sim.ledger()
                ids = [await event_ids(session, d) for d in desks]
                if len(ledger) >= 62 and ids[0] == ids[1] == ids[2]:
                    return True
                states = [await status(session, d) for d in desks]
                union = set().union(*ids)
                seen_last[:] = [f"missing {[sorted(union - i) for i in ids]}, cut off {cut_off}, "
                                f"ledger {len(ledger)}, events {[len(i) for i in ids]}, "
                                f"epochs {[s['epoch'] for s in states]}, peers {[s['peers'] for s in states]}"]
                return False

            try:
                await wait_for(applied_everywhere, within=90, what="every scan at the ILS and every event everywhere")
            except AssertionError as e:
                raise AssertionError(f"{e}: {seen_last}") from None
            ledger = await sim.ledger()
            assert Counter(row["barcode"] for row in ledger) == Counter(items[:12] + items[20:70])  # once each
            states = [await status(session, d) for d in desks]
            assert len({(s["epoch"]["number"], s["epoch"]["seal"]) for s in states}) == 1
            assert states[0]["epoch"]["number"] >= 2
            came_by_runs = sum(p["run_events_in"] for p in states[2]["peers"])
            assert came_by_runs >= 50  # what the cut-off desk missed came in journal runs
            events = await event_ids(session, bridge)
            assert set(cut_off) | set(seen) <= events
            loans = [(await get_json(session, f"{d.url}/api/v1/loans"))["loans"] for d in desks]
            assert loans[0] == loans[1] == loans[2] and len(loans[0]) == 62

            # a newcomer with an empty journal, linked to one desk only
            newcomer = DeskProcess(tmp_path / "D", "D", [front.peer_address])
            await newcomer.start()

            async def caught_up() -> bool:
                assert newcomer is not None
                return await event_ids(session, newcomer) == await event_ids(session, front)

            await wait_for(caught_up, within=60, what="the newcomer holds every event")
            mine = await status(session, newcomer)
            assert (mine["epoch"]["number"], mine["epoch"]["seal"]) == (states[1]["epoch"]["number"],
                                                                        states[1]["epoch"]["seal"])
            assert sum(p["run_events_in"] for p in mine["peers"]) >= len(events) - 25
            assert (await get_json(session, f"{newcomer.url}/api/v1/loans"))["loans"] == loans[1]
        finally:
            for d in [*desks, *([newcomer] if newcomer else [])]:
                await d.stop()
            await to_bridge.close()
            await to_front.close()
