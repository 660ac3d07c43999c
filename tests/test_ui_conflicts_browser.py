"""The two newest kinds of conflict on the admin Conflicts screen, in a real browser (Debian's chromium
driven by Playwright) against real desk processes: events that verify but cannot be read, and admins
whose answers to one conflict disagree.

The desks are this module's own (tests.browser.ui_cluster): A and B, linked through a relay the test
can cut. The unreadable events are written by a third desk in this process whose EventLog signs
whatever it is given (the bug being simulated, as in test_unreadable.py); A and B receive them by sync
and are the real thing. Screenshots go to out/screenshots/."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import expect

from node.desk import DeskConfig, DeskNode
from tests import browser
from tests.browser import ADMIN, CLERK, STEP_MS, UiCluster, close, open_desk, text_of
from tests.procs import get_json, post_json, wait_for
from tests.provision import provision

chromium = browser.chromium  # the module's fixtures
ui_cluster = browser.ui_cluster
pytestmark = [pytest.mark.multiprocess, pytest.mark.asyncio(loop_scope="module")]

WRITER = "Branch desk"
TOO_LATE = 2**64 - 1  # a time no desk can read


async def conflicts_of(c: UiCluster, desk) -> list[dict]:
    return (await get_json(c.session, f"{desk.url}/api/v1/conflicts"))["conflicts"]


async def loans_of(c: UiCluster, desk, patron: str) -> list[tuple[str, str]]:
    body = await get_json(c.session, f"{desk.url}/api/v1/loans?patron={patron}")
    return sorted((loan["item"], loan["desk"]) for loan in body["loans"])


async def quarantined(c: UiCluster, desk) -> int:
    return int((await get_json(c.session, f"{desk.url}/api/v1/status"))["quarantined"]["count"])


class BuggyDesk:
    """A member desk in this process, linked to desk A, whose EventLog signs bodies it should refuse."""

    def __init__(self, c: UiCluster) -> None:
        data = c.a.data.parent / "buggy"
        provision(data, WRITER)  # the same test CA as A and B: a member of their cluster
        self.node = DeskNode(DeskConfig(data_dir=data, desk=WRITER, port=0, peer_port=0, mdns=False,
                                        peers=[c.a.peer_address]))

    async def write_unreadable(self, monkeypatch: pytest.MonkeyPatch, *entries: tuple[str, dict, int | None]
                               ) -> list[str]:
        with monkeypatch.context() as m:
            m.setattr("node.crdt.event.check_body", lambda kind, body, at=None: None)
            written = [await self.node.log.append(kind, body, "tester", at=at) for kind, body, at in entries]
        assert all(e.problem for e in written), [e.problem for e in written]
        return [e.id for e in written]


@pytest_asyncio.fixture(loop_scope="module")  # its tasks must run in the loop the tests run in
async def buggy_desk(ui_cluster: UiCluster) -> AsyncIterator[BuggyDesk]:
    desk = BuggyDesk(ui_cluster)
    await desk.node.start()
    try:
        yield desk
    finally:
        await desk.node.stop()


async def test_unreadable_events_are_counted_explained_and_voided_by_an_admin(
        chromium, ui_cluster, buggy_desk, monkeypatch) -> None:
    c = ui_cluster
    admin_b = await open_desk(chromium, c.b, ADMIN)  # an admin is watching the Conflicts screen at B
    await admin_b.page.keyboard.press("F8")
    await expect(admin_b.page.locator("#conflicts-title")).to_be_visible()
    # a payment of 1E+999999999 (the first case of issue 8) and a kind from a newer version: neither is a
    # kind the Conflicts screen reloads for, so only their being unreadable can bring the cards up
    payment, newer = await buggy_desk.write_unreadable(
        monkeypatch, ("payment", {"patron": "239900000801", "amount": "1E+999999999"}, None),
        ("hold_shelf", {"item": "399900000802", "shelf": 3}, None))
    arrived = admin_b.page.locator("article.conflict", has_text=WRITER)
    await expect(arrived).to_have_count(2, timeout=STEP_MS)  # without a reload
    [renewal] = await buggy_desk.write_unreadable(monkeypatch, ("renew", {"item": "399900000801"}, TOO_LATE))
    ids = {f"unreadable_event/{e}" for e in (payment, renewal, newer)}

    async def held_by_a_and_b() -> bool:
        for desk in (c.a, c.b):
            if not ids <= {x["id"] for x in await conflicts_of(c, desk)} or await quarantined(c, desk) != 3:
                return False
        return True

    await wait_for(held_by_a_and_b, within=30, what="the unreadable events quarantined on A and B")
    [about_payment] = [x for x in await conflicts_of(c, c.a) if x["id"] == f"unreadable_event/{payment}"]
    reason = about_payment["reason"]
    assert "amount" in reason

    admin = await open_desk(chromium, c.a, ADMIN)
    page = admin.page
    pill = page.locator("#cb-unreadable")
    await expect(pill).to_be_visible()
    await expect(pill).to_have_text(text_of("en", "cluster.unreadable", count=3))
    await expect(pill).to_have_attribute("data-tone", "bad")
    await expect(pill).to_have_attribute("title", re.compile(re.escape(f"{WRITER}: {reason}")))
    feed = page.locator("#feed")  # the desk's feed shows them too, by their reason, never their body
    await expect(feed.locator("li", has_text=text_of("en", "event.unreadable", reason=reason))).to_have_count(1)
    await expect(feed.locator("li", has_text=str(TOO_LATE))).to_have_count(1)  # its time, as it was written
    await admin.shot("22-unreadable-pill-and-feed")

    clerk = await open_desk(chromium, c.b, CLERK)  # staff are told too, but cannot open the admin screen
    await expect(clerk.page.locator("#cb-unreadable")).to_have_text(text_of("en", "cluster.unreadable", count=3))
    await expect(clerk.page.locator("#cb-unreadable")).not_to_have_attribute("href", re.compile(".*"))

    await pill.click()  # the pill leads the admin to the Conflicts screen
    await expect(page.locator("#conflicts-title")).to_be_visible()
    card = page.locator(f'article.conflict[data-conflict="unreadable_event/{payment}"]')
    await expect(card.locator("h2")).to_have_text(text_of("en", "conflicts.kind.unreadable_event.title",
                                                          desk=WRITER))
    await expect(card.locator(".explain")).to_have_text(text_of("en", "conflicts.kind.unreadable_event.explain",
                                                                desk=WRITER, reason=reason))
    await expect(card.locator(".steps li")).to_have_count(1)
    await expect(card.locator(".steps li")).to_contain_text(WRITER)
    await expect(card.locator(".steps li .step-text")).to_have_text(text_of("en", "event.unreadable", reason=reason))
    void = card.locator(f'button[data-action="void"][data-event="{payment}"]')
    await expect(void).to_have_text(text_of("en", "conflicts.action.void", what=text_of("en", "kind.payment"),
                                            desk=WRITER))
    await expect(card.locator('button[data-action="accept_ils"]')).to_be_visible()
    # the event with a time no browser can format is shown with the time it carries, not a blank screen
    late = page.locator(f'article.conflict[data-conflict="unreadable_event/{renewal}"]')
    await expect(late.locator(".step-head")).to_contain_text(str(TOO_LATE))
    newer_card = page.locator(f'article.conflict[data-conflict="unreadable_event/{newer}"]')
    await expect(newer_card.locator(".explain")).to_contain_text("hold_shelf")
    await expect(newer_card.locator(f'button[data-action="void"][data-event="{newer}"]')).to_contain_text("hold_shelf")
    await expect(admin_b.page.locator("article.conflict", has_text=WRITER)).to_have_count(3)
    await admin.shot("23-admin-unreadable-events")

    await void.click()
    await expect(page.locator("#conflicts-message")).to_have_text(text_of("en", "conflicts.settled"))
    for p in (admin, admin_b):  # gone on B too, without a reload
        await expect(p.page.locator(f'article.conflict[data-conflict="unreadable_event/{payment}"]')).to_have_count(
            0, timeout=STEP_MS)
        await expect(p.page.locator("#cb-unreadable")).to_have_text(text_of("en", "cluster.unreadable", count=2),
                                                                    timeout=STEP_MS)
    for event in (renewal, newer):
        await page.locator(f'button[data-action="void"][data-event="{event}"]').click()
        await expect(page.locator(f'article.conflict[data-conflict="unreadable_event/{event}"]')).to_have_count(0)
    for p in (admin, admin_b, clerk):
        await expect(p.page.locator("#cb-unreadable")).to_be_hidden(timeout=STEP_MS)
    await expect(admin_b.page.locator("article.conflict", has_text=WRITER)).to_have_count(0, timeout=STEP_MS)
    await admin.shot("24-admin-unreadable-voided")

    async def voided_everywhere() -> bool:
        for desk in (c.a, c.b):
            if await quarantined(c, desk) or ids & {x["id"] for x in await conflicts_of(c, desk)}:
                return False
        return not buggy_desk.node.log.state.quarantined  # the void reached the desk that wrote them

    await wait_for(voided_everywhere, within=30, what="the voids on every desk")
    for p in (admin, admin_b, clerk):
        p.assert_no_script_errors()
        await close(p)


async def test_admins_whose_answers_disagree_see_both_and_settle_it_once(chromium, ui_cluster) -> None:
    c = ui_cluster
    item, one, two = "399900000901", "239900000901", "239900000902"

    async def partition() -> None:
        c.relay.cut()
        await wait_for(c.apart, within=30, what="A and B apart")

    async def heal() -> None:
        c.relay.heal()
        await c.wait_linked()

    await partition()
    for desk, patron in ((c.a, one), (c.b, two)):  # neither desk can see the other's loan
        status, body = await post_json(c.session, f"{desk.url}/api/v1/checkouts", {"patron": patron, "item": item})
        assert status == 201, body
    await heal()

    async def same_on_a_and_b(kind: str) -> dict | None:
        found = [[x for x in await conflicts_of(c, d) if x["kind"] == kind and x["item"] == item] for d in (c.a, c.b)]
        return found[0][0] if found[0] and found[1] and found[0][0]["id"] == found[1][0]["id"] else None

    original = await wait_for(lambda: same_on_a_and_b("concurrent_checkout"), within=30, what="the double loan")
    lent = {e["body"]["patron"]: e["id"] for e in original["detail"]}

    await partition()  # each admin answers without seeing the other's answer
    for desk, patron in ((c.a, one), (c.b, two)):
        status, body = await post_json(c.session, f"{desk.url}/api/v1/conflicts/{original['id']}/resolution",
                                       {"action": "keep", "event": lent[patron]})
        assert status == 201, body
    await heal()
    disagreement = await wait_for(lambda: same_on_a_and_b("resolutions_disagree"), within=30,
                                  what="the disagreement on A and B")
    assert disagreement["about"] == original["id"]

    admins = [await open_desk(chromium, desk, ADMIN) for desk in (c.a, c.b)]
    for admin in admins:
        await admin.page.keyboard.press("F8")
        await expect(admin.page.locator("#conflicts-title")).to_be_visible()
    page = admins[1].page
    card = page.locator(f'article.conflict[data-conflict="{disagreement["id"]}"]')
    await expect(card.locator("h2")).to_have_text(text_of("en", "conflicts.kind.resolutions_disagree.title",
                                                          item=item))
    await expect(card.locator(".explain")).to_have_text(text_of("en", "conflicts.kind.resolutions_disagree.explain"))
    happened = card.locator(".steps:not(.answers) li")  # what happened: the double loan itself
    await expect(happened).to_have_count(2)
    answers = card.locator(".answers li")  # then what each admin answered
    await expect(answers).to_have_count(2)
    await expect(card).to_contain_text(text_of("en", "conflicts.answers"))
    keep = text_of("en", "conflicts.action_name.keep")
    for patron, desk in ((one, "Front desk"), (two, "Returns")):
        lent_it = text_of("en", "event.checkout", item=item, patron=patron)
        await expect(happened.filter(has_text=lent_it)).to_have_count(1)
        answer = answers.filter(has_text=text_of("en", "event.resolve_of", action=keep, what=lent_it))
        await expect(answer).to_have_count(1)
        await expect(answer.locator(".step-head")).to_contain_text(desk)
    # the ways to settle it are the double loan's own
    buttons = card.locator(".settle-options button")
    await expect(buttons).to_have_count(4)
    await expect(card.locator(f'button[data-action="keep"][data-event="{lent[one]}"]')).to_have_text(
        text_of("en", "conflicts.action.keep", patron=one, desk="Front desk"))
    for admin in admins:  # the double loan is still open too: neither answer took effect
        await expect(admin.page.locator(f'article.conflict[data-conflict="{original["id"]}"]')).to_have_count(1)
    await card.scroll_into_view_if_needed()
    await admins[1].shot("25-admin-answers-disagree")

    await card.locator(f'button[data-action="keep"][data-event="{lent[two]}"]').click()
    await expect(page.locator("#conflicts-message")).to_have_text(text_of("en", "conflicts.settled"))
    for admin in reversed(admins):  # A was not reloaded: the answer reached it live
        for conflict in (disagreement, original):
            await expect(admin.page.locator(f'article.conflict[data-conflict="{conflict["id"]}"]')).to_have_count(
                0, timeout=STEP_MS)
    await admins[0].shot("26-admin-answers-settled")

    async def settled_everywhere() -> bool:
        for desk in (c.a, c.b):
            if any(x["item"] == item for x in await conflicts_of(c, desk)):
                return False
            if await loans_of(c, desk, two) != [(item, "Returns")] or await loans_of(c, desk, one) != []:
                return False
        return True

    await wait_for(settled_everywhere, within=30, what="the settlement on both desks")
    for admin in admins:
        admin.assert_no_script_errors()
        await close(admin)
