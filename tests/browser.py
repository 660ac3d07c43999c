"""Fixtures and helpers for tests in a real browser: Debian's chromium (installed by scripts/install-browser),
driven by Playwright's Python package, against real desk processes on loopback.

Playwright never downloads a browser here: it launches /usr/bin/chromium. Each desk page gets its own
browser context (its own cookies and storage), like two PCs at two desks. Screenshots go to
`$CIRCMESH_OUT/screenshots/` (default `out/screenshots/`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.ilssim import Sim, start_simulator
from tests.procs import DeskProcess, Relay, get_json, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}
WEB = Path(__file__).resolve().parent.parent / "web"
STEP_MS = 15_000  # the longest any one thing on a page may take to show

ADMIN = ("admin", "admin-pass-1", "admin")
CLERK = ("clerk", "clerk-pass-1", "staff")
VICTIM = ("victim", "victim-pass-1", "staff")
PATRON_PATTERN = "^23"


def screenshots_dir() -> Path:
    folder = Path(os.environ.get("CIRCMESH_OUT", "out")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def strings(language: str) -> dict[str, Any]:
    return json.loads((WEB / "i18n" / f"{language}.json").read_text(encoding="utf-8"))


def text_of(language: str, key: str, **values: Any) -> str:
    """A UI string as the page shows it (for plural forms, the "other" form)."""
    node: Any = strings(language)
    for part in key.split("."):
        node = node[part]
    if isinstance(node, dict):
        node = node["other"]
    return re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), m.group(0))), node)


@dataclass
class DeskPage:
    """A signed-in page at one desk, with every script error it raised."""

    page: Page
    desk: DeskProcess
    errors: list[str] = field(default_factory=list)

    async def shot(self, name: str) -> Path:
        path = screenshots_dir() / f"{name}.png"
        await self.page.screenshot(path=str(path))
        return path

    async def scan(self, barcode: str) -> None:
        """What a barcode scanner does: types into whatever has focus, then presses Enter. The scan field
        must have the focus, as the desk screen promises."""
        await expect(self.page.locator("#scan")).to_be_focused(timeout=STEP_MS)
        await self.page.keyboard.type(barcode)
        await self.page.keyboard.press("Enter")

    async def result(self, kind: str, contains: str) -> None:
        await expect(self.page.locator("#result")).to_have_attribute("data-kind", kind, timeout=STEP_MS)
        await expect(self.page.locator("#result-text")).to_contain_text(contains, timeout=STEP_MS)

    async def goto(self, hash_: str) -> None:
        await self.page.evaluate("h => { location.hash = h; }", hash_)

    def assert_no_script_errors(self) -> None:
        assert self.errors == [], self.errors


async def open_page(browser: Browser, desk: DeskProcess, *, locale: str = "en-US") -> DeskPage:
    context = await browser.new_context(viewport=VIEWPORT, locale=locale, accept_downloads=True)
    page = await context.new_page()
    page.set_default_timeout(STEP_MS)
    desk_page = DeskPage(page, desk)
    page.on("pageerror", lambda e: desk_page.errors.append(str(e)))
    await page.goto(desk.url + "/")
    await expect(page.locator("#signin-name")).to_be_visible()
    return desk_page


async def sign_in(desk_page: DeskPage, user: tuple[str, str, str]) -> None:
    page = desk_page.page
    await page.fill("#signin-name", user[0])
    await page.fill("#signin-password", user[1])
    await page.press("#signin-password", "Enter")
    await expect(page.locator("#scan")).to_be_visible()
    await expect(page.locator("#cb-live")).to_have_attribute("data-tone", "good")  # the live feed is up


async def open_desk(browser: Browser, desk: DeskProcess, user: tuple[str, str, str] = CLERK, *,
                    locale: str = "en-US") -> DeskPage:
    desk_page = await open_page(browser, desk, locale=locale)
    await sign_in(desk_page, user)
    return desk_page


async def close(desk_page: DeskPage) -> None:
    await desk_page.page.context.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser (scripts/test does)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class UiCluster:
    """Two desks linked through a relay the test can cut, desk A the bridge to a simulated ILS."""

    a: DeskProcess
    b: DeskProcess
    relay: Relay
    sim: Sim
    session: aiohttp.ClientSession

    async def linked(self) -> bool:
        for desk in (self.a, self.b):
            status = await get_json(self.session, f"{desk.url}/api/v1/status")
            if not any(p["connected"] for p in status["peers"]):
                return False
        return True

    async def apart(self) -> bool:
        for desk in (self.a, self.b):
            status = await get_json(self.session, f"{desk.url}/api/v1/status")
            if any(p["connected"] for p in status["peers"]):
                return False
        return True

    async def wait_linked(self) -> None:
        await wait_for(self.linked, within=30, what="desks A and B linked")


def _prepare(desk: DeskProcess) -> None:
    desk.users = [ADMIN, CLERK, VICTIM]
    desk.data.mkdir(parents=True, exist_ok=True)
    (desk.data / "ui.json").write_text(json.dumps({"patron_pattern": PATRON_PATTERN}))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ui_cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[UiCluster]:
    root = tmp_path_factory.mktemp("ui")
    sim = await asyncio.to_thread(start_simulator, root, patrons=120, items=300)
    try:
        await sim.set_state(online=False)  # the outage the desks work through
        credentials = root / "ils-credentials"
        credentials.write_text(f"user={sim.user}\npassword={sim.password}\n")
        credentials.chmod(0o600)
        a = DeskProcess(root / "a", "Front desk", [], extra=[  # it creates the patrons registered at a desk
            "--ils", sim.koha_url + "?branchcode=MAIN&category=ADULT", "--ils-credentials", str(credentials)])
        b = DeskProcess(root / "b", "Returns", [])
        relay = Relay(a.peer_port)
        await relay.start()
        b.peers = [relay.address]
        for desk in (a, b):
            _prepare(desk)
        await asyncio.gather(a.start(), b.start())
        async with aiohttp.ClientSession() as session:
            cluster = UiCluster(a, b, relay, sim, session)
            try:
                await cluster.wait_linked()
                yield cluster
            finally:
                await asyncio.gather(a.stop(), b.stop())
                await relay.close()
    finally:
        await asyncio.to_thread(sim.stop)
