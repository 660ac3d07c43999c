"""The desk and admin web UI in a real browser (Debian's chromium driven by Playwright), against two real
desk processes linked through a relay the test can cut, desk A being the bridge to a simulated ILS.

Every screen is photographed into the run's output folder (out/screenshots/). Barcodes made up here
(23990…, 39990…) are unknown to the simulated library, so the ILS refuses them on upload; the upload
test uses the library's real patrons and items."""

from __future__ import annotations

import re
import time

import pytest
from playwright.async_api import expect

from node.api.sessions import FIRST_DELAY_S
from tests import browser
from tests.browser import ADMIN, CLERK, STEP_MS, VICTIM, close, open_desk, open_page, sign_in, text_of
from tests.procs import get_json, post_json, wait_for

chromium = browser.chromium  # the module's fixtures
ui_cluster = browser.ui_cluster
pytestmark = [pytest.mark.multiprocess, pytest.mark.asyncio(loop_scope="module")]
UPLOAD_MS = 90_000


async def loans_of(cluster, desk, patron: str) -> list[tuple[str, str]]:
    body = await get_json(cluster.session, f"{desk.url}/api/v1/loans?patron={patron}")
    return sorted((loan["item"], loan["desk"]) for loan in body["loans"])


async def test_checkout_at_a_shows_in_b_feed_and_patron_panel_without_reload(chromium, ui_cluster) -> None:
    c = ui_cluster
    a = await open_page(chromium, c.a)
    await a.shot("01-sign-in")
    await sign_in(a, CLERK)
    b = await open_desk(chromium, c.b)
    patron, first, second = "239900000101", "399900000101", "399900000102"

    await b.scan(patron)  # B looks at the same patron before A lends anything
    await b.result("info", patron)
    await expect(b.page.locator("#patron-body")).to_contain_text(text_of("en", "patron.loans_none"))
    await b.page.evaluate("window.sameDocument = 'never reloaded'")

    await a.scan(patron)
    await a.result("info", patron)
    await expect(a.page.locator("#scan-label")).to_have_text(text_of("en", "mode.checkout.scan_item"))
    await a.scan(first)
    await a.result("ok", f"Lent {first} to {patron}")
    await a.scan(second)
    await a.result("ok", f"Lent {second} to {patron}")
    await expect(a.page.locator("#visit-list li")).to_have_count(2)
    await expect(a.page.locator("#patron-body tbody tr")).to_have_count(2)
    await expect(a.page.locator("#announcer")).to_contain_text(f"Lent {second} to {patron}")
    await a.shot("02-desk-checkout")

    entry = b.page.locator("#feed li", has_text=first)
    await expect(entry).to_have_count(1)
    await expect(entry.locator(".desk-chip")).to_have_text("Front desk")
    loan = b.page.locator(f'#patron-body tr[data-item="{first}"]')
    await expect(loan).to_contain_text("Front desk")
    await expect(b.page.locator("#patron-body tbody tr")).to_have_count(2)
    assert await b.page.evaluate("window.sameDocument") == "never reloaded"
    await expect(b.page.locator("#cb-upload")).to_contain_text("scans to upload")  # the ILS is offline
    await b.shot("03-desk-b-live-feed-and-patron")
    await b.page.set_viewport_size({"width": 1920, "height": 1080})
    await expect(b.page.locator("#scan")).to_be_focused()
    await b.shot("03b-desk-b-1920")
    assert await loans_of(c, c.b, patron) == [(first, "Front desk"), (second, "Front desk")]
    a.assert_no_script_errors()
    b.assert_no_script_errors()
    await close(a)
    await close(b)


async def test_a_warning_needs_a_deliberate_override_a_scan_cannot_give_it(chromium, ui_cluster) -> None:
    c = ui_cluster
    a = await open_desk(chromium, c.a)
    b = await open_desk(chromium, c.b)
    holder, other, item = "239900000201", "239900000202", "399900000201"
    await a.scan(holder)
    await a.scan(item)
    await a.result("ok", item)
    await wait_for(lambda: loans_of(c, c.b, holder), what="the loan at B")

    await b.scan(other)
    await b.scan(item)
    dialog = b.page.locator("#override-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text(f"Item {item} is on loan to patron {holder}, lent at Front desk.")
    await expect(b.page.locator("#override-cancel")).to_be_focused()
    await b.shot("04-desk-override-warning")
    await b.page.keyboard.type("399900000299")  # the next scan arrives while the warning is up
    await b.page.keyboard.press("Enter")
    await expect(dialog).to_be_hidden()
    await b.result("info", f"Not lent: {item}")
    assert await loans_of(c, c.b, other) == []

    await b.scan(item)
    await expect(dialog).to_be_visible()
    await b.page.click("#override-confirm")
    await b.result("warn", f"Lent {item} to {other}")
    await expect(b.page.locator("#scan")).to_be_focused()
    assert await loans_of(c, c.b, other) == [(item, "Returns")]
    b.assert_no_script_errors()
    await close(a)
    await close(b)


async def test_every_desk_mode_check_in_renew_payment_in_house_registration(chromium, ui_cluster) -> None:
    c = ui_cluster
    a = await open_desk(chromium, c.a)
    page = a.page
    patron, item, spare = "239900000301", "399900000301", "399900000302"
    await a.scan(patron)
    await a.scan(item)
    await a.result("ok", item)

    await page.keyboard.press("F3")  # renew
    await expect(page.locator("#mode-title")).to_have_text(text_of("en", "mode.renew.title"))
    await a.scan(item)
    await a.result("ok", f"Renewed {item}")
    await a.shot("05-desk-renew")

    await page.keyboard.press("F2")  # check in
    await expect(page.locator("#mode-title")).to_have_text(text_of("en", "mode.checkin.title"))
    await a.scan(item)
    await a.result("ok", f"Checked in {item}, lent to {patron} at Front desk.")
    await a.scan(spare)  # never lent since the outage: a warning, not an error
    await a.result("warn", f"Checked in {spare}")
    await expect(page.locator("#result-notes")).to_contain_text("the ILS will check it in")
    await a.shot("06-desk-checkin")

    await page.keyboard.press("F4")  # payment
    await a.scan(patron)
    await expect(page.locator("#amount")).to_be_focused()
    await page.keyboard.type("abc")
    await page.keyboard.press("Enter")
    await a.result("error", "“abc” is not an amount of money.")
    await page.fill("#amount", "2.50")
    await page.press("#amount", "Enter")
    await a.result("ok", f"Recorded 2.50 paid by {patron}.")
    await expect(page.locator("#patron-body")).to_contain_text("2.50")
    await a.shot("07-desk-payment")

    await page.keyboard.press("F6")  # in-house use
    await a.scan(spare)
    await a.result("ok", f"Recorded in-house use of {spare}.")
    await a.shot("08-desk-in-house-use")

    await page.keyboard.press("F7")  # registration
    await a.scan("239900000399")
    await expect(page.locator("#reg-name")).to_be_focused()
    await page.keyboard.type("Ada Lovelace")
    await page.keyboard.press("Enter")
    await a.result("ok", "Registered patron 239900000399: Ada Lovelace.")
    await a.shot("09-desk-registration")

    await page.keyboard.press("F1")
    await a.scan("239900000399")
    await expect(page.locator("#patron-body")).to_contain_text("Ada Lovelace")
    await page.keyboard.press("Escape")
    await expect(page.locator("#strip-patron")).to_have_text(text_of("en", "desk.no_patron"))
    await expect(page.locator("#scan")).to_be_focused()

    events = await get_json(c.session, f"{c.a.url}/api/v1/events?after=0&limit=10000")
    kinds = {e["kind"] for e in events["events"] if e["staff"] == "clerk" and e["node"] == c.a.node}
    assert {"checkout", "renew", "checkin", "payment", "in_house_use", "patron_register"} <= kinds
    a.assert_no_script_errors()
    await close(a)


async def test_a_conflict_is_explained_and_settled_in_the_admin_view_on_both(chromium, ui_cluster) -> None:
    c = ui_cluster
    item, one, two = "399900000401", "239900000401", "239900000402"
    clerk_a = await open_desk(chromium, c.a)
    clerk_b = await open_desk(chromium, c.b)
    c.relay.cut()
    await wait_for(c.apart, within=30, what="A and B apart")
    await clerk_a.scan(one)
    await clerk_a.scan(item)
    await clerk_a.result("ok", f"Lent {item} to {one}")  # neither desk can see the other's loan
    await clerk_b.scan(two)
    await clerk_b.scan(item)
    await clerk_b.result("ok", f"Lent {item} to {two}")
    c.relay.heal()
    await c.wait_linked()

    async def conflict_everywhere() -> str | None:
        found = [[x for x in (await get_json(c.session, f"{d.url}/api/v1/conflicts"))["conflicts"]
                  if x["item"] == item] for d in (c.a, c.b)]
        return found[0][0]["id"] if found[0] and found[1] and found[0][0]["id"] == found[1][0]["id"] else None

    conflict_id = await wait_for(conflict_everywhere, within=30, what="the same conflict on A and B")
    admin_a = await open_desk(chromium, c.a, ADMIN)
    admin_b = await open_desk(chromium, c.b, ADMIN)
    for admin in (admin_a, admin_b):
        await admin.page.keyboard.press("F8")
        await expect(admin.page.locator("#conflicts-title")).to_be_visible()
    card = admin_b.page.locator("article.conflict", has_text=item)
    await expect(card.locator("h2")).to_have_text(f"Item {item} was lent twice at the same time")
    steps = card.locator(".steps li")
    await expect(steps).to_have_count(2)
    await expect(card).to_contain_text("Front desk")
    await expect(card).to_contain_text("Returns")
    await expect(admin_b.page.locator("#conflict-badge")).to_be_visible()
    await admin_b.shot("10-admin-conflicts")

    conflicts = (await get_json(c.session, f"{c.b.url}/api/v1/conflicts"))["conflicts"]
    [conflict] = [x for x in conflicts if x["id"] == conflict_id]
    kept = next(e for e in conflict["detail"] if e["body"]["patron"] == one)
    await card.locator(f'button[data-action="keep"][data-event="{kept["id"]}"]').click()
    await expect(admin_b.page.locator("#conflicts-message")).to_have_text(text_of("en", "conflicts.settled"))
    for admin in (admin_b, admin_a):  # A was not reloaded: the settlement reached it live
        await expect(admin.page.locator("article.conflict", has_text=item)).to_have_count(0)
    await admin_b.shot("11-admin-conflicts-settled")

    async def settled_everywhere() -> bool:
        for d in (c.a, c.b):
            open_ones = (await get_json(c.session, f"{d.url}/api/v1/conflicts"))["conflicts"]
            if any(x["item"] == item for x in open_ones):
                return False
        return await loans_of(c, c.a, one) == [(item, "Front desk")] and await loans_of(c, c.b, two) == []

    await wait_for(settled_everywhere, within=30, what="the settlement on both desks")
    for p in (clerk_a, clerk_b, admin_a, admin_b):
        p.assert_no_script_errors()
        await close(p)


async def test_staff_do_not_see_the_admin_screens(chromium, ui_cluster) -> None:
    clerk = await open_desk(chromium, ui_cluster.b)
    await expect(clerk.page.locator("#admin-tabs")).to_be_hidden()
    await clerk.goto("#/admin/conflicts")
    await expect(clerk.page.locator("#view-desk")).to_be_visible()
    await expect(clerk.page.locator("#view-conflicts")).to_be_hidden()
    await close(clerk)


async def test_czech_and_the_other_languages_switch_the_desk_screen(chromium, ui_cluster) -> None:
    c = ui_cluster
    german = await open_page(chromium, c.b, locale="de-DE")  # chosen from the browser's languages
    await expect(german.page.locator("#signin-title")).to_have_text(text_of("de", "signin.title"))
    await german.shot("12-sign-in-de")
    await close(german)

    b = await open_desk(chromium, c.b)
    page = b.page
    patron, item = "239900000501", "399900000501"
    await b.scan(patron)
    await b.scan(item)
    await b.result("ok", item)
    await page.select_option("#lang-select", "cs")
    await expect(page.locator("html")).to_have_attribute("lang", "cs")
    await expect(page.locator("#mode-title")).to_have_text(text_of("cs", "mode.checkout.title"))
    await expect(page.locator("#scan-label")).to_have_text(text_of("cs", "mode.checkout.scan_item"))
    checkin_tab = page.locator('#desk-tabs a[data-mode="checkin"] span')
    await expect(checkin_tab).to_have_text(text_of("cs", "mode.checkin.tab"))
    await expect(page.locator("#patron-title")).to_have_text(text_of("cs", "patron.title"))
    await expect(page.locator("#sign-out")).to_have_text(text_of("cs", "signin.sign_out"))
    await expect(page.locator("#feed-title")).to_have_text(text_of("cs", "feed.title"))
    await b.scan("399900000502")
    await b.result("ok", f"399900000502 vypůjčeno čtenáři {patron}")
    due = await page.locator("#result-text").inner_text()
    assert re.search(r"\d{1,2}\. \d{1,2}\. \d{4}", due), due  # a Czech date: 14. 12. 2026
    await expect(page.locator("#patron-body tbody tr")).to_have_count(2)
    # what the desk said before the switch is said again in Czech
    await expect(page.locator("#visit-list li").last).to_contain_text(f"{item} vypůjčeno")
    await b.shot("13-desk-cs")

    await page.reload()  # the choice is remembered
    await expect(page.locator("#mode-title")).to_have_text(text_of("cs", "mode.checkout.title"))
    for code, shot in (("zh-CN", "14-desk-zh-CN"), ("de", "15-desk-de")):
        await page.select_option("#lang-select", code)
        await expect(page.locator("#mode-title")).to_have_text(text_of(code, "mode.checkout.title"))
        await b.scan(patron)
        await expect(page.locator("#patron-title")).to_have_text(text_of(code, "patron.title"))
        await b.shot(shot)
    await page.select_option("#lang-select", "en")
    b.assert_no_script_errors()
    await close(b)


async def test_five_bad_passwords_then_sign_in_is_slowed_down(chromium, ui_cluster) -> None:
    page_ = await open_page(chromium, ui_cluster.a)
    page = page_.page
    error = page.locator("#signin-error")
    for i in range(5):
        await expect(page.locator("#signin-submit")).to_be_enabled()
        await page.fill("#signin-name", VICTIM[0])
        await page.fill("#signin-password", f"wrong-{i}")
        await page.press("#signin-password", "Enter")
        await expect(error).to_have_text(text_of("en", "signin.wrong"))
    fifth = time.monotonic()
    # the desk now makes the next attempt wait, and the page counts it down
    await expect(error).to_contain_text("Too many wrong passwords", timeout=STEP_MS)
    await expect(page.locator("#signin-submit")).to_be_disabled()
    status, body = await post_json(ui_cluster.session, f"{ui_cluster.a.url}/api/v1/session",
                                   {"name": VICTIM[0], "password": VICTIM[1]})
    if status != 429:  # a slow machine: the wait (FIRST_DELAY_S) was over before the request went
        assert status == 200 and time.monotonic() - fifth >= FIRST_DELAY_S, (status, body)
    else:
        assert body["error"]["code"] == "throttled"  # even the right password must wait
    await page_.shot("16-sign-in-slowed-down")
    await expect(error).to_have_text(text_of("en", "signin.retry_now"), timeout=STEP_MS)
    await sign_in(page_, VICTIM)
    page_.assert_no_script_errors()
    await close(page_)


async def test_an_api_call_from_the_page_without_the_csrf_token_is_refused(chromium, ui_cluster) -> None:
    b = await open_desk(chromium, ui_cluster.b)
    result = await b.page.evaluate("""async () => {
        const body = JSON.stringify({patron: '239900000601', item: '399900000601'});
        const headers = {'Content-Type': 'application/json'};
        const without = await fetch('/api/v1/checkouts', {method: 'POST', body, headers});
        const session = await (await fetch('/api/v1/session')).json();
        const withToken = await fetch('/api/v1/checkouts',
            {method: 'POST', body, headers: {...headers, 'X-CSRF-Token': session.csrf}});
        return {without: without.status, code: (await without.json()).error.code, with: withToken.status};
    }""")
    assert result == {"without": 403, "code": "csrf", "with": 201}
    assert await loans_of(ui_cluster, ui_cluster.b, "239900000601") == [("399900000601", "Returns")]
    await close(b)


async def test_signing_out_and_an_ended_session_return_to_the_sign_in_screen(chromium, ui_cluster) -> None:
    b = await open_desk(chromium, ui_cluster.b)
    # the session ends behind the page's back (expiry, a restart): the next scan finds out
    status = await b.page.evaluate("""async () => {
        const session = await (await fetch('/api/v1/session')).json();
        const headers = {'X-CSRF-Token': session.csrf};
        return (await fetch('/api/v1/session', {method: 'DELETE', headers})).status;
    }""")
    assert status == 200
    await b.scan("239900000701")
    await expect(b.page.locator("#signin-notice")).to_have_text(text_of("en", "signin.expired"))
    await expect(b.page.locator("#nav")).to_be_hidden()
    await sign_in(b, CLERK)
    await b.page.click("#sign-out")
    await expect(b.page.locator("#signin-notice")).to_have_text(text_of("en", "signin.signed_out"))
    await expect(b.page.locator("#signin-name")).to_be_focused()
    b.assert_no_script_errors()
    await close(b)


async def test_the_upload_progress_bar_reaches_100_when_the_ils_comes_back(chromium, ui_cluster) -> None:
    c = ui_cluster
    await c.sim.set_state(online=True)  # the library's real patron and items, read while it answers
    patron = (await c.sim.take_patron())["cardnumber"]
    items = [(await c.sim.take_available_item())["external_id"] for _ in range(3)]
    for_newcomer = (await c.sim.take_available_item())["external_id"]
    await c.sim.set_state(online=False)
    b = await open_desk(chromium, c.b, ADMIN)
    await b.scan(patron)
    for item in items:
        await b.scan(item)
        await b.result("ok", item)
    # a patron registered at the desk with a card from the stock borrows at once; the ILS learns of both
    newcomer = "23990000777"
    await b.page.keyboard.press("F7")
    await b.scan(newcomer)
    await expect(b.page.locator("#reg-name")).to_be_focused()
    await b.page.keyboard.type("Nováková, Eva")
    await b.page.keyboard.press("Enter")
    await b.result("ok", f"Registered patron {newcomer}: Nováková, Eva.")
    await b.page.keyboard.press("F1")
    await b.scan(newcomer)
    await b.scan(for_newcomer)
    await b.result("ok", for_newcomer)
    upload = b.page.locator("#cb-upload")
    await expect(upload).to_have_attribute("data-tone", "warn")
    await expect(upload).to_contain_text("to upload")
    await expect(b.page.locator("#cb-bridge")).to_contain_text("Bridge: Front desk")
    await b.shot("17-upload-waiting")

    await c.sim.set_state(online=True)
    online = text_of("en", "cluster.ils_online")
    await expect(b.page.locator("#cb-ils")).to_contain_text(online, timeout=UPLOAD_MS)
    await expect(b.page.locator("#cb-progress")).to_have_attribute("aria-valuenow", "100", timeout=UPLOAD_MS)
    await expect(upload).to_contain_text(text_of("en", "cluster.upload_done"))
    await b.shot("18-upload-done")
    for item in items:
        assert (await c.sim.loan_of(item))["cardnumber"] == patron
    [created] = await c.sim.rest("/api/v1/patrons", cardnumber=newcomer)  # created before its loan
    assert (created["surname"], created["firstname"]) == ("Nováková", "Eva")
    assert (await c.sim.loan_of(for_newcomer))["cardnumber"] == newcomer

    # the upload report: what the ILS answered, filterable, exportable
    await b.page.keyboard.press("F9")
    table = b.page.locator("#uploads-body")
    await expect(table.locator("tr", has_text=items[0])).to_contain_text(text_of("en", "outcome.applied"))
    await b.shot("19-admin-upload-report")
    await expect(table.locator("tr", has_text=f"Patron created (card {newcomer}")).to_have_count(1)
    await b.page.select_option("#uploads-status", "refused")
    await expect(table.locator("tr", has_text=items[0])).to_have_count(0)
    await expect(table.locator("tr").first).to_contain_text(text_of("en", "outcome.refused"))
    await b.page.select_option("#uploads-status", "")
    await b.page.fill("#uploads-q", items[1])
    await expect(table.locator("tr")).to_have_count(1)
    async with b.page.expect_download() as info:
        await b.page.click("#uploads-csv")
    download = await info.value
    csv = (await download.path()).read_text(encoding="utf-8")
    lines = csv.strip().splitlines()
    assert lines[0] == "event,kind,desk,at,patron,item,amount,status,message,ils_at"  # ils_at: a corrected time
    assert len(lines) == 2 and items[1] in lines[1] and ",applied," in lines[1]
    b.assert_no_script_errors()
    await close(b)


async def test_admin_files_export_and_import_with_a_line_report(chromium, ui_cluster) -> None:
    a = await open_desk(chromium, ui_cluster.a, ADMIN)
    await a.goto("#/admin/files")
    async with a.page.expect_download() as info:
        await a.page.click('[data-export="koc"]')
    exported = (await (await info.value).path()).read_text(encoding="utf-8")
    assert exported.startswith("Version=1.0") and "399900000101" in exported
    await expect(a.page.locator("#export-message")).to_contain_text("circmesh.koc")

    koc = ("Version=1.0\tGenerator=test\tGeneratorVersion=1\r\n"
           "2026-03-02 10:00:00\tissue\t239900000701\t399900000701\r\n"
           "not a line at all\r\n")
    await a.page.select_option("#import-format", "koc")
    await a.page.set_input_files("#import-file", files=[{"name": "desk.koc", "mimeType": "text/plain",
                                                         "buffer": koc.encode()}])
    await a.page.check("#import-skip")
    await a.page.click('#import-form button[type="submit"]')
    await expect(a.page.locator("#import-message")).to_contain_text("1 scan recorded.")
    rows = a.page.locator("#import-errors tr")
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("td").first).to_have_text("3")
    await a.shot("20-admin-files")
    assert await loans_of(ui_cluster, ui_cluster.a, "239900000701") == [("399900000701", "Front desk")]
    a.assert_no_script_errors()
    await close(a)


async def test_admin_desks_lists_the_cluster(chromium, ui_cluster) -> None:
    a = await open_desk(chromium, ui_cluster.a, ADMIN)
    await a.goto("#/admin/desks")
    rows = a.page.locator("#desks-body tr")
    await expect(rows).to_have_count(2)
    returns = a.page.locator("#desks-body tr", has_text="Returns")
    await expect(returns).to_contain_text(text_of("en", "desks.linked"))
    await expect(a.page.locator("#desks-body tr.mine")).to_contain_text("Front desk")
    await a.shot("21-admin-desks")
    a.assert_no_script_errors()
    await close(a)


async def test_the_ils_snapshot_finds_a_patron_without_accents_and_a_block_needs_the_override(
        chromium, ui_cluster) -> None:
    c = ui_cluster
    await c.sim.set_state(online=True)  # the ILS is back: an admin has the bridge (desk A) read it now
    admin = await open_desk(chromium, c.a, ADMIN)
    await admin.goto("#/admin/uploads")
    await admin.page.click("#snapshot-refresh")
    await expect(admin.page.locator("#uploads-message")).to_have_text(text_of("en", "uploads.snapshot_started"))
    await close(admin)

    async def snapshot_loaded() -> bool:
        status = (await get_json(c.session, f"{c.a.url}/api/v1/status"))["snapshot"]
        return bool(status["version"]) and status["refresh"]["state"] == "idle"

    await wait_for(snapshot_loaded, within=60, what="the snapshot at desk A")
    patrons = await c.sim.all_patrons()
    accented = next(p for p in patrons if "ř" in p["surname"] or "ü" in p["surname"])
    plain = accented["surname"].replace("ř", "r").replace("á", "a").replace("ü", "u").lower()
    blocked = await c.sim.take_blocked_patron()
    item = (await c.sim.take_available_item())["external_id"]

    a = await open_desk(chromium, c.a)
    await expect(a.page.locator("#cb-snapshot")).to_contain_text("ILS data of")  # its age, in the cluster bar
    await a.page.fill("#patron-q", plain)
    hit = a.page.locator("#patron-hits button", has_text=accented["cardnumber"])
    await expect(hit).to_have_count(1)
    await expect(hit).to_contain_text(accented["surname"])
    await a.shot("22-desk-patron-search")
    await hit.click()
    body = a.page.locator("#patron-body")
    await expect(body).to_contain_text(f"{accented['surname']}, {accented['firstname']}")
    await expect(a.page.locator("#scan")).to_be_focused()

    await a.scan(blocked["cardnumber"])
    await expect(body).to_contain_text(f"{blocked['surname']}, {blocked['firstname']}")
    await expect(body.locator("dd.bad")).to_have_count(1)  # the block, from the ILS
    await a.scan(item)
    dialog = a.page.locator("#override-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("is blocked")
    await a.shot("23-desk-blocked-patron-override")
    await a.page.click("#override-confirm")
    await a.result("warn", f"Lent {item} to {blocked['cardnumber']}")
    loans = (await get_json(c.session, f"{c.a.url}/api/v1/loans?patron={blocked['cardnumber']}"))["loans"]
    total = (await get_json(c.session, f"{c.a.url}/api/v1/events?after=0&limit=1"))["total"]
    latest = (await get_json(c.session, f"{c.a.url}/api/v1/events?after={max(0, total - 50)}"))["events"]
    assert [loan["item"] for loan in loans] == [item]
    assert any(e["id"] == loans[0]["event"] and e["body"].get("override") is True for e in latest)
    a.assert_no_script_errors()
    await close(a)
