"""The ILS side end to end, all real processes: the simulator, three desks, one of them the bridge.

Scans made while the ILS is offline are applied once it is back — each exactly once, nothing on the same
item or patron out of order, the ILS failing 30 % of requests at the end — and the simulator's final loans
equal the cluster's. Refusals come back to every desk in the ILS's own words; losing the ILS mid-upload
pauses and resumes."""

from __future__ import annotations

import random
from collections import Counter
from itertools import combinations
from pathlib import Path

import aiohttp
import pytest

from tests.ilssim import running_simulator
from tests.procs import DeskProcess, free_port, get_json, post_json, wait_for

pytestmark = pytest.mark.multiprocess


async def start_cluster(tmp_path: Path, sim, names: list[str], ils_url: str, *, bad_password: bool = False):
    creds = tmp_path / "ils-credentials"
    creds.write_text(f"user={sim.user}\npassword={'wrong' if bad_password else sim.password}\n")
    creds.chmod(0o600)
    desks = [DeskProcess(tmp_path / n, n, []) for n in names]
    for i, j in combinations(range(len(desks)), 2):
        desks[i].peers.append(desks[j].peer_address)
    desks[0].extra = ["--ils", ils_url, "--ils-credentials", str(creds)]
    for d in desks:
        await d.start()
    return desks


async def total(session, desk) -> int:
    return (await get_json(session, f"{desk.url}/api/v1/events?after=0&limit=1"))["total"]


async def everywhere(session, desks, n: int) -> bool:
    return all([await total(session, d) >= n for d in desks])


def expected_key(event: dict) -> tuple:
    body = event["body"]
    if event["kind"] == "payment":
        return ("payment", body["patron"])
    action = {"checkout": "checkout", "renew": "checkout", "checkin": "checkin"}[event["kind"]]
    return (action, body["item"])


def ledger_key(row: dict) -> tuple:
    if row["action"] == "payment":
        return ("payment", row["cardnumber"])
    return ("checkout" if row["action"] in ("checkout", "renew") else "checkin", row["barcode"])


async def test_offline_scans_are_applied_exactly_once_in_causal_order(tmp_path: Path) -> None:
    async with running_simulator(tmp_path / "ils", patrons=300, items=800) as sim, \
            aiohttp.ClientSession() as session:
        facts = await _library_facts(sim)  # read while the ILS is up, as snapshots will be
        await sim.set_state(online=False)
        desks = await start_cluster(tmp_path, sim, ["A", "B", "C"], sim.koha_url)
        try:
            await _offline_then_upload(sim, session, desks, *facts)
        finally:
            for d in desks:
                await d.stop()


async def _library_facts(sim):
    patrons = [(await sim.take_patron())["cardnumber"] for _ in range(40)]
    fined = [(await sim.take_patron_with_fines())["cardnumber"] for _ in range(5)]
    shelf = [(await sim.take_available_item())["external_id"] for _ in range(130)]
    lent_before = [await sim.take_item_on_loan() for _ in range(20)]
    return patrons, fined, shelf, lent_before


async def _offline_then_upload(sim, session, desks, patrons, fined, shelf, lent_before) -> None:
    rng = random.Random(7)
    on_loan: dict[str, str] = {}
    scans: list[tuple[int, str, dict]] = []
    a, b = desks[0], desks[1]
    # the case the issue names: lent at A, returned at B
    scans += [(0, "checkouts", {"patron": patrons[0], "item": shelf[0]}), (1, "checkins", {"item": shelf[0]})]
    shelf = shelf[1:]
    while len(scans) < 300:
        roll = rng.random()
        desk = rng.randrange(3)
        if roll < 0.45 and shelf:
            item = shelf.pop()
            on_loan[item] = rng.choice(patrons)
            scans.append((desk, "checkouts", {"patron": on_loan[item], "item": item}))
        elif roll < 0.75 and on_loan:
            item = rng.choice(sorted(on_loan))
            del on_loan[item]
            scans.append((desk, "checkins", {"item": item}))
            if rng.random() < 0.3:
                shelf.append(item)  # lent again later, to someone else perhaps
        elif roll < 0.85 and on_loan:
            item = rng.choice(sorted(on_loan))
            scans.append((desk, "renewals", {"item": item}))
        elif roll < 0.93 and lent_before:
            item, _holder = lent_before.pop()
            scans.append((desk, "checkins", {"item": item["external_id"]}))
        else:
            scans.append((desk, "payments", {"patron": rng.choice(fined), "amount": "0.50"}))
    for n, (desk, path, body) in enumerate(scans, start=1):
        status, answer = await post_json(session, f"{desks[desk].url}/api/v1/{path}", body)
        assert status == 201, answer
        # a patron walks from one desk to the next: the next desk has seen this scan before the next one
        await wait_for(lambda n=n: everywhere(session, desks, n), within=20, what=f"scan {n} everywhere")
    status = await get_json(session, f"{b.url}/api/v1/status")
    assert status["upload"]["pending"] == 300 and status["bridge"]["desk"] == "A"
    assert status["ils"]["reachable"] is False
    assert await sim.ledger() == []

    await sim.set_state(online=True, latency_ms=15)
    await wait_for(lambda: _applied_at_least(session, b, 60), within=60, what="upload under way")
    await sim.set_state(online=False)  # the ILS goes away mid-upload
    paused = await wait_for(lambda: _paused(session, a), within=30, what="upload paused")
    assert 0 < paused["upload"]["pending"] < 300
    await sim.set_state(online=True, latency_ms=0, failure_rate=0.3)  # back, failing 30 % of requests
    await wait_for(lambda: _all_applied(session, desks), within=120, what="upload complete on every desk")
    await sim.set_state(failure_rate=0.0)

    log = (await get_json(session, f"{a.url}/api/v1/events?after=0&limit=10000"))["events"]
    desk_events = [e for e in log if e["kind"] in ("checkout", "checkin", "renew", "payment")]
    ledger = await sim.ledger()
    assert len(ledger) == len(desk_events) == 300  # every scan exactly once
    assert Counter(map(ledger_key, ledger)) == Counter(map(expected_key, desk_events))
    for key in {expected_key(e) for e in desk_events}:  # nothing on the same item or patron out of order
        want = [ev["kind"] for ev in desk_events if expected_key(ev)[1] == key[1]]
        got = [row["action"] for row in ledger if ledger_key(row)[1] == key[1]]
        assert [_norm(k) for k in want] == [_norm(k) for k in got], key
    assert all(row["outcome"] in ("Success.",) for row in ledger if row["action"] != "payment"), \
        Counter(row["outcome"] for row in ledger)
    ils_loans = {row["barcode"]: row["cardnumber"] for row in await sim.loans()}
    cluster_loans = {x["item"]: x["patron"] for x in (await get_json(session, f"{b.url}/api/v1/loans"))["loans"]}
    touched = {e["body"]["item"] for e in desk_events if "item" in e["body"]}
    assert {i: ils_loans.get(i) for i in touched} == {i: cluster_loans.get(i) for i in touched}
    outcomes = (await get_json(session, f"{desks[2].url}/api/v1/outcomes?status=applied"))["outcomes"]
    assert len(outcomes) == 300


def _norm(kind: str) -> str:
    return {"renew": "checkout", "renewal": "checkout", "return": "checkin", "issue": "checkout"}.get(kind, kind)


async def _applied_at_least(session, desk, n: int) -> bool:
    return (await get_json(session, f"{desk.url}/api/v1/status"))["upload"]["applied"] >= n


async def _paused(session, desk):
    status = await get_json(session, f"{desk.url}/api/v1/status")
    return status if status["ils"]["reachable"] is False and not status["upload"]["uploading"] else None


async def _all_applied(session, desks) -> bool:
    for d in desks:
        upload = (await get_json(session, f"{d.url}/api/v1/status"))["upload"]
        if upload["pending"] or upload["applied"] != 300:
            return False
    return True


@pytest.mark.parametrize("protocol", ["koha", "sip2"])
async def test_refusals_reach_every_desk_in_the_ils_words(tmp_path: Path, protocol: str) -> None:
    async with running_simulator(tmp_path / "ils", patrons=100, items=200) as sim, \
            aiohttp.ClientSession() as session:
        url = sim.koha_url if protocol == "koha" else sim.sip2_url
        desks = await start_cluster(tmp_path, sim, ["Bridge", "Other"], url)
        try:
            patron = (await sim.take_patron())["cardnumber"]
            shelf = (await sim.take_available_item())["external_id"]
            scans = [
                ("checkouts", {"patron": "99999999999999", "item": shelf}),  # unknown patron
                ("checkouts", {"patron": patron, "item": "NO-SUCH-ITEM"}),  # unknown item
                ("checkins", {"item": "NO-SUCH-ITEM-2"}),
                ("checkins", {"item": (await sim.take_available_item())["external_id"]}),  # not on loan
            ]
            for path, body in scans:
                status, _ = await post_json(session, f"{desks[0].url}/api/v1/{path}", body)
                assert status == 201

            async def refused() -> list | None:
                rows = (await get_json(session, f"{desks[1].url}/api/v1/outcomes?status=refused"))["outcomes"]
                return rows if len(rows) == 4 else None

            rows = await wait_for(refused, within=30, what="four refusals at the other desk")
            messages = {(r["kind"], r["patron"] or r["item"]): r["message"] for r in rows}
            if protocol == "koha":
                assert messages == {
                    ("checkout", "99999999999999"): "Borrower not found.",
                    ("checkout", patron): "Barcode not found.",
                    ("checkin", "NO-SUCH-ITEM-2"): "Item not found.",
                    ("checkin", scans[3][1]["item"]): "Item not issued.",
                }
            else:
                assert all(m for m in messages.values()) and len(set(messages.values())) >= 2
            # and nothing the ILS refused was retried
            assert len(await sim.ledger()) == 4
        finally:
            for d in desks:
                await d.stop()


async def _with_ils_problem(session: aiohttp.ClientSession, desk: DeskProcess) -> dict | None:
    """The desk's /status once it names a problem with the ILS."""
    status = await get_json(session, f"{desk.url}/api/v1/status")
    return status if status["ils"]["problem"] else None


async def _upload_idle(session: aiohttp.ClientSession, desk: DeskProcess) -> bool:
    status = await get_json(session, f"{desk.url}/api/v1/status")
    return status["upload"]["pending"] == 0 and not status["upload"]["uploading"]


async def test_wrong_ils_password_pauses_the_upload_and_records_nothing(tmp_path: Path) -> None:
    async with running_simulator(tmp_path / "ils", patrons=50, items=100) as sim, \
            aiohttp.ClientSession() as session:
        desks = await start_cluster(tmp_path, sim, ["Bridge"], sim.koha_url, bad_password=True)
        try:
            item = (await sim.take_available_item())["external_id"]
            status, _ = await post_json(session, f"{desks[0].url}/api/v1/checkins", {"item": item})
            assert status == 201

            status = await wait_for(lambda: _with_ils_problem(session, desks[0]), within=20,
                                    what="the login refusal in /status")
            assert status["ils"]["problem"] == "Authentication failed." and status["upload"]["pending"] == 1
            assert await sim.ledger() == []
        finally:
            for d in desks:
                await d.stop()


async def test_a_renewal_without_patron_over_plain_sip2_goes_for_the_loan_in_the_log(tmp_path: Path) -> None:
    """An ACS whose item information names no borrower (the SIP2 standard) cannot say whose loan to renew:
    the bridge takes the patron from the checkout the renewing desk had seen. Where the log knows no loan
    either, the renewal gets a refusal staff can act on, once, instead of being asked again forever."""
    async with running_simulator(tmp_path / "ils", patrons=50, items=100,
                                 extra_args=("--sip2-standard-item-info",)) as sim, \
            aiohttp.ClientSession() as session:
        patron = (await sim.take_patron())["cardnumber"]
        item = (await sim.take_available_item())["external_id"]
        lent_before, holder = await sim.take_item_on_loan()  # lent before the outage: not in the log
        other = lent_before["external_id"]
        await sim.set_state(online=False)
        desks = await start_cluster(tmp_path, sim, ["Bridge", "Other"], sim.sip2_url)
        bridge, desk = desks
        try:
            status, checkout = await post_json(session, f"{desk.url}/api/v1/checkouts",
                                               {"patron": patron, "item": item})
            assert status == 201, checkout

            async def seen_at_bridge() -> bool:
                return await total(session, bridge) >= 1

            await wait_for(seen_at_bridge, within=30, what="the checkout at the bridge desk")
            renewals = {}
            for barcode in (item, other):
                status, answer = await post_json(session, f"{bridge.url}/api/v1/renewals", {"item": barcode})
                assert status == 201 and "patron" not in answer["event"]["body"], answer
                renewals[barcode] = answer["event"]["id"]
            await sim.set_state(online=True)

            async def answered() -> dict | None:
                rows = (await get_json(session, f"{bridge.url}/api/v1/outcomes"))["outcomes"]
                by_event = {r["event"]: r for r in rows}
                return by_event if all(by_event[e]["status"] != "pending" for e in by_event) else None

            rows = await wait_for(answered, within=60, what="an outcome for every event")
            assert rows[checkout["event"]["id"]]["status"] == "applied"
            assert rows[renewals[item]]["status"] == "applied", rows[renewals[item]]
            orphan = rows[renewals[other]]
            assert (orphan["status"], orphan["message"]) == (
                "refused", f"renewal of item {other} names no patron and the ILS cannot tell who has it: "
                           "renew it at the ILS")
            ledger = await sim.ledger()
            assert [(r["action"], r["cardnumber"], r["barcode"], r["outcome"]) for r in ledger] == [
                ("checkout", patron, item, "Success."), ("renew", patron, item, "Success.")]
            assert (await sim.loan_of(item))["cardnumber"] == patron
            assert (await sim.loan_of(other))["cardnumber"] == holder  # untouched: staff renew it at the ILS
            status = await get_json(session, f"{bridge.url}/api/v1/status")
            assert status["upload"]["pending"] == 0 and status["ils"]["problem"] is None
            # nothing is asked again: every event has its outcome and the bridge is idle
            await wait_for(lambda: _upload_idle(session, bridge), within=30, what="the bridge idle")
            assert len(await sim.ledger()) == 2
            assert (await get_json(session, f"{desk.url}/api/v1/outcomes?status=refused"))["total"] == 1
        finally:
            for d in desks:
                await d.stop()


async def test_an_event_that_keeps_failing_while_the_ils_answers_is_named_in_status(tmp_path: Path) -> None:
    """Plain SIP2 with a REST base that does not answer (a wrong port): who has the item cannot be asked,
    but the ILS answers, so the renewal is retried. It is retried in plain sight: `ils.problem` names it."""
    async with running_simulator(tmp_path / "ils", patrons=50, items=100,
                                 extra_args=("--sip2-standard-item-info",)) as sim, \
            aiohttp.ClientSession() as session:
        lent_before, _holder = await sim.take_item_on_loan()
        item = lent_before["external_id"]
        url = f"{sim.sip2_url}?rest=http://127.0.0.1:{free_port()}"  # nothing listens there
        [bridge] = await start_cluster(tmp_path, sim, ["Bridge"], url)
        try:
            status, _ = await post_json(session, f"{bridge.url}/api/v1/renewals", {"item": item})
            assert status == 201

            status = await wait_for(lambda: _with_ils_problem(session, bridge), within=30,
                                    what="the failing renewal in /status")
            problem = status["ils"]["problem"]
            assert problem.startswith(f"the ILS answers, but the renew of {item} keeps failing (retrying): "
                                      "cannot find who has the item to renew"), problem
            assert status["ils"]["reachable"] and status["upload"]["pending"] == 1
            assert await sim.ledger() == []
        finally:
            await bridge.stop()
