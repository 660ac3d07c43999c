"""The admin screen for cluster membership, in a real browser: a desk asks to join, the admin approves it by
typing the code the joining desk shows, the new desk links up; then the admin revokes it and every desk
drops it."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import expect

from node.cluster import init_cluster
from node.trust.identity import load_or_create_identity
from tests.browser import ADMIN, STEP_MS, chromium, close, open_desk, text_of  # noqa: F401 (fixture)
from tests.procs import DeskProcess, get_json, wait_for

pytestmark = [pytest.mark.multiprocess, pytest.mark.asyncio(loop_scope="module")]


async def _linked(session: aiohttp.ClientSession, desk: DeskProcess, node: str) -> bool:
    status = await get_json(session, f"{desk.url}/api/v1/status")
    return any(p["node"] == node and p["connected"] for p in status["peers"])


async def test_admin_approves_a_joining_desk_and_revokes_it(chromium, tmp_path: Path) -> None:  # noqa: F811
    front = DeskProcess(tmp_path / "front", "Front desk", [])
    init_cluster(front.data, load_or_create_identity(front.data), front.desk, "Town library")  # holds the CA
    front.users.append(ADMIN)
    await front.start()
    joiner_data = tmp_path / "study"
    join = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", "join", "--data", str(joiner_data), "--desk", "Study room",
        "--admin", front.peer_address, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    study: DeskProcess | None = None
    page = None
    try:
        assert join.stdout is not None
        async with asyncio.timeout(60):  # the joining desk shows the code the admin must type
            line = (await join.stdout.readline()).decode()
        code = re.search(r"[0-9A-Z]{4}-[0-9A-Z]{4}", line)
        assert code, line
        page = await open_desk(chromium, front, ADMIN)
        await page.goto("#/admin/desks")
        pending = page.page.locator("#pending-body tr", has_text="Study room")
        await expect(pending).to_be_visible(timeout=STEP_MS)
        await page.shot("22-admin-desks-join-request")
        await pending.locator("input.code-input").fill(code.group(0))
        await pending.get_by_role("button", name=text_of("en", "desks.approve")).click()
        async with asyncio.timeout(60):
            assert await join.wait() == 0, (await join.stderr.read()).decode() if join.stderr else ""

        study = DeskProcess(joiner_data, "Study room", [front.peer_address])
        await study.start()
        async with aiohttp.ClientSession() as session:
            await wait_for(lambda: _linked(session, front, study.node), what="the new desk linked")
            row = page.page.locator("#desks-body tr", has_text="Study room")
            await expect(row).to_contain_text(text_of("en", "desks.linked"), timeout=STEP_MS)
            await page.shot("23-admin-desks-joined")
            # mark it away (a desk switched off for the day), then revoke it (a stolen laptop)
            await row.get_by_role("button", name=text_of("en", "desks.away")).click()
            await expect(row).to_contain_text(text_of("en", "desks.state.away"), timeout=STEP_MS)

            page.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await row.get_by_role("button", name=text_of("en", "desks.revoke")).click()
            await expect(row).to_contain_text(text_of("en", "desks.state.revoked"), timeout=STEP_MS)
            await wait_for(lambda: _not_linked(session, front, study.node), what="the revoked desk dropped")
            await page.shot("24-admin-desks-revoked")
            page.assert_no_script_errors()
    finally:
        if page is not None:
            await close(page)
        if join.returncode is None:
            join.kill()
            await join.wait()
        if study is not None:
            await study.stop()
        await front.stop()


async def _not_linked(session: aiohttp.ClientSession, desk: DeskProcess, node: str) -> bool:
    return not await _linked(session, desk, node)
