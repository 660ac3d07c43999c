"""A desk an hour ahead, for real (issue 8): three `circmesh run` processes, one of them under libfaketime
(`faketime -f +1h`), desk "Front desk" the bridge to the ILS simulator.

A loan at the fast desk, returned at the front desk: the return sorts after the loan, the other desks'
clocks stay within the drift bound of real time, every desk names the fast desk (in /status and in
/conflicts), the ILS is told the loan's real time (corrected by the measured offset, marked in the upload
report) and never a return before its loan; in a browser, the cluster bar of each desk names the desk that
is off, and an admin acknowledges the warning."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests import browser
from tests.browser import ADMIN, close, open_desk
from tests.ilssim import Sim
from tests.procs import DeskProcess, get_json, post_json, wait_for

FAKETIME = shutil.which("faketime")
pytestmark = [
    pytest.mark.multiprocess,
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(FAKETIME is None, reason="faketime is not installed (Debian package faketime, which "
                                                "scripts/install-browser installs)"),
]
chromium = browser.chromium
HOUR = 3_600_000
MAX_DRIFT = 120_000
SLACK = 30_000  # scheduling and link delays on a busy test machine, far below the hour being looked for


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ledger_ms(timestamp: str) -> int:
    return int(datetime.strptime(timestamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp() * 1000)


@dataclass
class ClockCluster:
    front: DeskProcess  # the bridge; its clock is right
    fast: DeskProcess  # an hour ahead
    returns: DeskProcess  # right
    sim: Sim
    session: aiohttp.ClientSession
    two_desks: dict[str, list[dict[str, Any]]]  # clock_suspects of front and fast before the third desk came

    @property
    def desks(self) -> list[DeskProcess]:
        return [self.front, self.fast, self.returns]

    async def get(self, desk: DeskProcess, path: str) -> Any:
        return await get_json(self.session, f"{desk.url}/api/v1/{path}")

    async def scan(self, desk: DeskProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
        status, answer = await post_json(self.session, f"{desk.url}/api/v1/{path}", body)
        assert status == 201, answer
        return answer["event"]

    async def everywhere(self, event_id: str) -> bool:
        for desk in self.desks:
            ids = [e["id"] for e in (await self.get(desk, "events?after=0&limit=5000"))["events"]]
            if event_id not in ids:
                return False
        return True

    async def lend_then_return(self) -> tuple[dict[str, Any], dict[str, Any], int]:
        """A loan at the fast desk, returned at the front desk once it has seen the loan."""
        patron = (await self.sim.take_patron())["cardnumber"]
        item = (await self.sim.take_available_item())["external_id"]
        real = now_ms()
        lent = await self.scan(self.fast, "checkouts", {"patron": patron, "item": item})
        await wait_for(lambda: self.everywhere(lent["id"]), within=30, what="the loan on every desk")
        back = await self.scan(self.front, "checkins", {"item": item})
        await wait_for(lambda: self.everywhere(back["id"]), within=30, what="the return on every desk")
        return lent, back, real


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clocks(tmp_path_factory: pytest.TempPathFactory, sim: Sim) -> AsyncIterator[ClockCluster]:
    root = tmp_path_factory.mktemp("clocks")
    credentials = root / "ils-credentials"
    credentials.write_text(f"user={sim.user}\npassword={sim.password}\n")
    credentials.chmod(0o600)
    front = DeskProcess(root / "front", "Front desk", [],
                        extra=["--ils", sim.koha_url, "--ils-credentials", str(credentials)])
    # Only the wall clock is an hour ahead: asyncio's timers run on the real monotonic clock, as on a PC
    # whose clock was set wrong.
    fast = DeskProcess(root / "fast", "Fast desk", [front.peer_address], prefix=[str(FAKETIME), "-f", "+1h"],
                       env={"FAKETIME_DONT_FAKE_MONOTONIC": "1", "DONT_FAKE_MONOTONIC": "1"})
    returns = DeskProcess(root / "returns", "Returns", [front.peer_address, fast.peer_address])
    desks = [front, fast, returns]
    for desk in desks:
        browser._prepare(desk)
    async with aiohttp.ClientSession() as session:
        cluster = ClockCluster(front, fast, returns, sim, session, {})

        async def linked(among: list[DeskProcess]) -> bool:
            for desk in among:
                peers = (await cluster.get(desk, "status"))["peers"]
                if sum(p["connected"] for p in peers) < len(among) - 1:
                    return False
            return True

        async def suspects(desk: DeskProcess) -> list[dict[str, Any]] | None:
            return (await cluster.get(desk, "status"))["clock_suspects"] or None

        try:
            await asyncio.gather(front.start(), fast.start())  # two desks first: they can only say they differ
            await wait_for(lambda: linked([front, fast]), within=30, what="two desks linked")
            for desk in (front, fast):
                cluster.two_desks[desk.desk] = await wait_for(lambda d=desk: suspects(d), within=30,
                                                              what="two clocks that differ")
            await returns.start()
            await wait_for(lambda: linked(desks), within=30, what="three desks linked")
            yield cluster
        finally:
            await asyncio.gather(*(d.stop() for d in desks))


async def test_a_desk_an_hour_ahead_is_named_everywhere_drags_no_clock_and_the_ils_gets_real_times(clocks) -> None:
    c = clocks
    wall = (await c.get(c.fast, "status"))["node"]["wall"]
    assert abs(wall - now_ms() - HOUR) < SLACK, "faketime did not move the fast desk's clock"
    [front_says], [fast_says] = c.two_desks["Front desk"], c.two_desks["Fast desk"]  # two desks: they differ
    assert front_says["desk"] == "Fast desk" and fast_says["desk"] == "Front desk"
    assert front_says["undecided"] and fast_says["undecided"] and front_says["sources"] == ["link"]
    assert abs(front_says["offset_ms"] - HOUR) < SLACK and abs(fast_says["offset_ms"] + HOUR) < SLACK

    lent, back, real = await c.lend_then_return()
    assert lent["at"] - real > HOUR - SLACK
    assert back["hlc"] < lent["hlc"]  # the front desk's clock was not dragged an hour forward

    async def named_everywhere() -> list[dict[str, Any]] | None:
        found = []
        for desk in c.desks:
            conflicts = [k for k in (await c.get(desk, "conflicts"))["conflicts"] if k["kind"] == "clock_ahead"]
            suspects = (await c.get(desk, "status"))["clock_suspects"]
            if len(conflicts) != 1 or [s["node"] for s in suspects] != [c.fast.node]:
                return None
            if desk is not c.fast and "link" not in suspects[0]["sources"]:
                return None
            found.append({"conflict": conflicts[0], "suspect": suspects[0]})
        return found

    named = await wait_for(named_everywhere, within=30, what="the fast desk named on every desk")
    assert len({n["conflict"]["id"] for n in named}) == 1  # every desk names it the same
    for desk, n in zip(c.desks, named, strict=True):
        conflict, suspect = n["conflict"], n["suspect"]
        assert conflict["node"] == c.fast.node and conflict["desk"] == "Fast desk" and not conflict["needs_admin"]
        assert HOUR - SLACK < conflict["offset_ms"] <= HOUR
        assert conflict["id"].startswith("clock_ahead/" + c.fast.node)
        assert suspect["desk"] == "Fast desk" and "log" in suspect["sources"]
        assert suspect["this_desk"] == (desk is c.fast) and abs(suspect["offset_ms"] - HOUR) < SLACK

    for desk in c.desks:
        events = [e["id"] for e in (await c.get(desk, "events?after=0&limit=5000"))["events"]]
        assert events.index(lent["id"]) < events.index(back["id"])  # causal order, whatever the clocks said
        item = await c.get(desk, f"items/{lent['body']['item']}")
        assert item["loan"] is None and item["returned_by"] == back["id"]
    for desk in (c.front, c.returns):
        status = await c.get(desk, "status")
        assert status["max_clock_drift_ms"] == MAX_DRIFT
        assert status["node"]["hlc"][0] <= now_ms() + MAX_DRIFT  # not an hour ahead
        assert abs(status["node"]["wall"] - now_ms()) < SLACK

    async def uploaded() -> list[dict[str, Any]] | None:
        rows = [r for r in await c.sim.ledger() if r["barcode"] == lent["body"]["item"]]
        return rows if len(rows) == 2 else None

    checkout, checkin = await wait_for(uploaded, within=60, what="the loan and the return at the ILS")
    assert (checkout["action"], checkin["action"]) == ("checkout", "checkin")
    assert abs(ledger_ms(checkout["timestamp"]) - real) < SLACK  # the real time of the loan, not an hour later
    assert ledger_ms(checkin["timestamp"]) >= ledger_ms(checkout["timestamp"])  # never returned before lent
    assert lent["body"]["item"] not in {row["barcode"] for row in await c.sim.loans()}

    async def reported(desk: DeskProcess) -> dict[str, dict[str, Any]] | None:
        rows = {r["event"]: r for r in (await c.get(desk, "outcomes"))["outcomes"]}
        done = all(rows.get(e, {}).get("status") == "applied" for e in (lent["id"], back["id"]))
        return rows if done else None

    for desk in c.desks:  # the upload report of every desk marks the corrected time
        rows = await wait_for(lambda desk=desk: reported(desk), within=30, what="the outcomes on every desk")
        row = rows[lent["id"]]
        assert row["at_corrected_by"] == "link" and abs(row["at_corrected_ms"] + HOUR) < SLACK
        assert row["ils_at"] // 1000 * 1000 == ledger_ms(checkout["timestamp"])  # what the ILS was told
        assert rows[back["id"]]["ils_at"] is None and rows[back["id"]]["at_corrected_ms"] is None


async def test_each_cluster_bar_names_the_desk_that_is_off_and_an_admin_acknowledges_it(chromium, clocks) -> None:
    c = clocks
    lent, _, _ = await c.lend_then_return()
    pages = {desk.desk: await open_desk(chromium, desk, ADMIN) for desk in c.desks}
    clock_pill = {name: page.page.locator("#cb-clock") for name, page in pages.items()}
    await expect(clock_pill["Front desk"]).to_have_text("Fast desk's clock is 1 h ahead")
    await expect(clock_pill["Returns"]).to_have_text("Fast desk's clock is 1 h ahead")
    await expect(clock_pill["Fast desk"]).to_have_text("This desk's clock is 1 h ahead")
    await pages["Front desk"].shot("30-cluster-bar-names-the-fast-desk")
    await pages["Fast desk"].shot("31-cluster-bar-on-the-fast-desk")

    admin = pages["Returns"]
    await admin.page.keyboard.press("F8")
    card = admin.page.locator("article.conflict", has_text="Fast desk")
    await expect(card.locator("h2")).to_have_text("The clock of Fast desk is about 1 h ahead")
    await expect(card).to_contain_text("Front desk")  # whose clock it is compared with
    await admin.shot("32-admin-conflicts-clock-ahead")

    report = pages["Front desk"]
    await report.page.keyboard.press("F9")
    row = report.page.locator("#uploads-body tr", has_text=lent["body"]["item"]).filter(has_text="Check out")
    await expect(row.locator(".tag.corrected")).to_have_count(1, timeout=30_000)
    await report.shot("33-upload-report-corrected-time")

    await card.locator('button[data-action="acknowledge"]').click()
    await expect(admin.page.locator("article.conflict", has_text="Fast desk")).to_have_count(0)

    async def acknowledged_everywhere() -> bool:
        for desk in c.desks:
            conflicts = (await c.get(desk, "conflicts"))["conflicts"]
            if any(k["kind"] == "clock_ahead" for k in conflicts):
                return False
        return True

    await wait_for(acknowledged_everywhere, within=30, what="the acknowledgement on every desk")
    await expect(clock_pill["Front desk"]).to_have_text("Fast desk's clock is 1 h ahead")  # still measured off
    for page in pages.values():
        page.assert_no_script_errors()
        await close(page)
