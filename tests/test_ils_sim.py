"""The ILS simulator as a real process: Koha's offline service, CSRF login, REST, SIP2 and /sim control."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest

from node.ilsbridge import sip2
from node.ilsbridge.sim.control import SimState
from node.ilsbridge.sim.library import Library
from node.ilsbridge.sim.rules import Calendar, LoanRule, due_date, parse_timestamp
from node.ilsbridge.sim.seed import SeedSpec
from node.ilsbridge.sip2 import Message
from tests.ilssim import Sim, running_simulator, wait_until

SERVICE = "/cgi-bin/koha/offline_circ/service.pl"
AUTH = "/cgi-bin/koha/svc/authentication"


pytestmark = pytest.mark.usefixtures("sim_reset")  # `sim` (one per module) is in conftest.py


async def koha(sim: Sim, method: str = "GET", creds: str = "old", **params: str) -> tuple[int, str]:
    if creds == "old":
        params = {"userid": sim.user, "password": sim.password, **params}
    elif creds == "new":
        params = {"login_userid": sim.user, "login_password": sim.password, **params}
    async with aiohttp.ClientSession() as session:
        if method == "GET":
            async with session.get(sim.http_url + SERVICE, params=params) as r:
                return r.status, await r.text()
        async with session.post(sim.http_url + SERVICE, data=params) as r:
            return r.status, await r.text()


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection (a clean end, or a reset when it left our bytes unread)."""
    try:
        return await asyncio.wait_for(reader.read(), 10) == b""
    except ConnectionResetError:
        return True


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


async def rules_and_calendar(sim: Sim) -> tuple[dict[tuple[str, str], LoanRule], Calendar]:
    rules = {
        (r["context"]["patron_category_id"], r["context"]["item_type_id"]): LoanRule(
            r["issuelength"], r["renewalsallowed"]
        )
        for r in await sim.rest("/api/v1/circulation_rules")
    }
    cal = await sim.rest("/api/v1/contrib/circmesh/calendar")
    calendar = Calendar(
        frozenset(cal["closed_weekdays"]), frozenset(date.fromisoformat(d) for d in cal["holidays"])
    )
    return rules, calendar


# --- Koha offline-circulation service -------------------------------------------------------------------


async def test_issue_with_old_credentials_records_the_loan_at_its_timestamp(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    before = await sim.ledger()
    status, text = await koha(
        sim,
        action="issue",
        cardnumber=patron["cardnumber"],
        barcode=item["external_id"],
        timestamp=stamp(when),
    )
    assert (status, text) == (200, "Success.")
    rules, calendar = await rules_and_calendar(sim)
    expected_due = due_date(when, rules[(patron["category_id"], item["item_type_id"])], calendar)
    loan = await sim.loan_of(item["external_id"])
    assert loan == {
        "barcode": item["external_id"],
        "cardnumber": patron["cardnumber"],
        "due": expected_due.isoformat(),
    }
    assert calendar.is_open(expected_due.date())
    new = (await sim.ledger())[len(before) :]
    assert [
        (e["protocol"], e["action"], e["timestamp"], e["cardnumber"], e["barcode"], e["outcome"]) for e in new
    ] == [("koha", "checkout", stamp(when), patron["cardnumber"], item["external_id"], "Success.")]


async def test_new_credential_names_and_return(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    assert await koha(
        sim, creds="new", action="issue", cardnumber=patron["cardnumber"], barcode=item["external_id"]
    ) == (200, "Success.")
    assert await sim.loan_of(item["external_id"]) is not None
    assert await koha(sim, creds="new", action="return", barcode=item["external_id"]) == (200, "Success.")
    assert await sim.loan_of(item["external_id"]) is None


async def test_every_refusal_is_answered_in_kohas_words_and_ledgered(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    before = len(await sim.ledger())
    cases = [
        (
            {"action": "issue", "cardnumber": "00000000000000", "barcode": item["external_id"]},
            "Borrower not found.",
        ),
        (
            {"action": "issue", "cardnumber": patron["cardnumber"], "barcode": "NO-SUCH-ITEM"},
            "Barcode not found.",
        ),
        ({"action": "return", "barcode": "NO-SUCH-ITEM"}, "Item not found."),
        ({"action": "return", "barcode": item["external_id"]}, "Item not issued."),
        ({"action": "payment", "cardnumber": "00000000000000", "amount": "1.00"}, "Borrower not found."),
    ]
    for params, expected in cases:
        assert await koha(sim, **params) == (200, expected)
    outcomes = [e["outcome"] for e in (await sim.ledger())[before:]]
    assert outcomes == [expected for _, expected in cases]


async def test_authentication_failed_changes_nothing(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    before = len(await sim.ledger())
    for params in (
        {"userid": sim.user, "password": "wrong"},
        {"login_userid": "nobody", "login_password": "x"},
        {},
    ):
        status, text = await koha(
            sim,
            creds="none",
            action="issue",
            cardnumber=patron["cardnumber"],
            barcode=item["external_id"],
            **params,
        )
        assert (status, text) == (200, "Authentication failed.")
    assert len(await sim.ledger()) == before
    assert await sim.loan_of(item["external_id"]) is None


async def test_issue_of_an_item_on_loan_elsewhere_returns_it_first(sim: Sim) -> None:
    item, previous = await sim.take_item_on_loan()
    patron = await sim.take_patron()
    assert previous != patron["cardnumber"]
    assert (await sim.loan_of(item["external_id"]))["cardnumber"] == previous
    assert await koha(sim, action="issue", cardnumber=patron["cardnumber"], barcode=item["external_id"]) == (
        200,
        "Success.",
    )
    loans = [loan for loan in await sim.loans() if loan["barcode"] == item["external_id"]]
    assert [loan["cardnumber"] for loan in loans] == [patron["cardnumber"]]
    checkouts = await sim.rest("/api/v1/checkouts", item_id=str(item["item_id"]))
    assert [c["cardnumber"] for c in checkouts] == [patron["cardnumber"]]
    assert (await sim.ledger())[-1]["outcome"] == "Success."


async def test_issue_to_the_patron_who_has_it_renews(sim: Sim) -> None:
    item, holder = await sim.take_item_on_loan()
    [before] = await sim.rest("/api/v1/checkouts", item_id=str(item["item_id"]))
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    assert await koha(
        sim, action="issue", cardnumber=holder, barcode=item["external_id"], timestamp=stamp(later)
    ) == (200, "Success.")
    [after] = await sim.rest("/api/v1/checkouts", item_id=str(item["item_id"]))
    assert after["checkout_id"] == before["checkout_id"]
    assert after["renewals_count"] == before["renewals_count"] + 1
    assert after["due_date"] > before["due_date"]


async def test_payment_reduces_the_fines(sim: Sim) -> None:
    patron = await sim.take_patron_with_fines()
    assert await koha(sim, action="payment", cardnumber=patron["cardnumber"], amount="0.50") == (
        200,
        "Success.",
    )
    [after] = await sim.rest("/api/v1/patrons", cardnumber=patron["cardnumber"])
    assert Decimal(str(after["account_balance"])) == Decimal(str(patron["account_balance"])) - Decimal("0.50")
    entry = (await sim.ledger())[-1]
    assert (entry["action"], entry["cardnumber"], entry["amount"], entry["barcode"]) == (
        "payment",
        patron["cardnumber"],
        "0.50",
        None,
    )


async def test_pending_true_queues_without_applying(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    assert await koha(
        sim,
        action="issue",
        cardnumber=patron["cardnumber"],
        barcode=item["external_id"],
        pending="true",
        timestamp="2024-01-02 03:04:05",
    ) == (200, "Added.")
    assert await sim.loan_of(item["external_id"]) is None
    queued = [p for p in await sim.pending() if p["barcode"] == item["external_id"]]
    assert [(p["action"], p["cardnumber"], p["timestamp"]) for p in queued] == [
        ("issue", patron["cardnumber"], "2024-01-02 03:04:05")
    ]
    assert (await sim.ledger())[-1]["outcome"] == "Added."
    # anything but "true" applies at once
    assert await koha(
        sim, action="issue", cardnumber=patron["cardnumber"], barcode=item["external_id"], pending="yes"
    ) == (200, "Success.")
    assert await sim.loan_of(item["external_id"]) is not None


async def test_bad_timestamp_or_amount_is_a_400_and_not_recorded(sim: Sim) -> None:
    patron = await sim.take_patron()
    before = len(await sim.ledger())
    assert (
        await koha(sim, action="issue", cardnumber=patron["cardnumber"], barcode="x", timestamp="yesterday")
    )[0] == 400
    assert (await koha(sim, action="payment", cardnumber=patron["cardnumber"], amount="lots"))[0] == 400
    assert await koha(sim, action="dance") == (200, "")
    assert len(await sim.ledger()) == before


# --- Koha 24.05 CSRF login ------------------------------------------------------------------------------


async def test_post_needs_a_csrf_token_bound_to_the_session(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    op = {"action": "issue", "cardnumber": patron["cardnumber"], "barcode": item["external_id"]}
    # No token: refused before anything, even with good credentials.
    assert await koha(sim, "POST", creds="new", **op) == (403, "Wrong CSRF token")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        async with session.get(sim.http_url + AUTH) as r:
            assert r.status == 200
            anon_token, anon_sid = r.headers["CSRF-TOKEN"], r.cookies["CGISESSID"].value
            assert "<status>failed</status>" in await r.text()
        # Login without the token is refused; with it, it works.
        login = {"login_userid": sim.user, "login_password": sim.password}
        async with session.post(
            sim.http_url + AUTH, data=login, headers={"Cookie": f"CGISESSID={anon_sid}"}
        ) as r:
            assert r.status == 403
        bad = {"login_userid": sim.user, "login_password": "wrong"}
        headers = {"CSRF-TOKEN": anon_token, "Cookie": f"CGISESSID={anon_sid}"}
        async with session.post(sim.http_url + AUTH, data=bad, headers=headers) as r:
            assert "<status>failed</status>" in await r.text()
        async with session.post(sim.http_url + AUTH, data=login, headers=headers) as r:
            assert "<status>ok</status>" in await r.text()
            token, sid = r.headers["CSRF-TOKEN"], r.cookies["CGISESSID"].value
        assert sid != anon_sid
        # A token of another session does not fit this session's cookie.
        mismatched = {"CSRF-TOKEN": anon_token, "Cookie": f"CGISESSID={sid}"}
        async with session.post(sim.http_url + SERVICE, data=op, headers=mismatched) as r:
            assert (r.status, await r.text()) == (403, "Wrong CSRF token")
        assert await sim.loan_of(item["external_id"]) is None
        # Token in the header, or as the csrf_token parameter, with the logged-in cookie: applied.
        good = {"CSRF-TOKEN": token, "Cookie": f"CGISESSID={sid}"}
        async with session.post(sim.http_url + SERVICE, data=op, headers=good) as r:
            assert (r.status, await r.text()) == (200, "Success.")
        ret = {"action": "return", "barcode": item["external_id"], "csrf_token": token}
        async with session.post(
            sim.http_url + SERVICE, data=ret, headers={"Cookie": f"CGISESSID={sid}"}
        ) as r:
            assert (r.status, await r.text()) == (200, "Success.")
        # The anonymous session's token with the anonymous cookie passes CSRF but is not logged in.
        async with session.post(sim.http_url + SERVICE, data=op, headers=headers) as r:
            assert (r.status, await r.text()) == (200, "Authentication failed.")


# --- REST --------------------------------------------------------------------------------------------------


async def test_rest_keyset_paging_with_koha_q(sim: Sim) -> None:
    """`q={"patron_id": {">": n}}` and `_order_by=+patron_id`, as the bridge's snapshot pages."""
    seen: list[int] = []
    after = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(10):
            async with session.get(
                sim.http_url + "/api/v1/patrons",
                params={"q": json.dumps({"patron_id": {">": after}}), "_order_by": "+patron_id", "_per_page": "70"},
                headers={"Authorization": sim.basic_auth},
            ) as r:
                assert r.status == 200
                rows = await r.json()
            seen += [row["patron_id"] for row in rows]
            if len(rows) < 70:
                break
            after = rows[-1]["patron_id"]
        assert seen == sorted(seen) and len(set(seen)) == 200
        for params in ({"q": "{"}, {"q": json.dumps({"surname": "x"})}, {"q": json.dumps({"patron_id": {"<": 3}})},
                       {"q": json.dumps({"patron_id": {">": "3"}})}, {"_order_by": "surname"}):
            async with session.get(
                sim.http_url + "/api/v1/patrons", params=params, headers={"Authorization": sim.basic_auth}
            ) as r:
                assert r.status == 400, params
                assert "error" in await r.json()


async def test_rest_paging_and_total_count(sim: Sim) -> None:
    seen: list[int] = []
    async with aiohttp.ClientSession() as session:
        for page in range(1, 6):
            async with session.get(
                sim.http_url + "/api/v1/patrons",
                params={"_page": str(page), "_per_page": "50"},
                headers={"Authorization": sim.basic_auth},
            ) as r:
                assert r.status == 200
                assert r.headers["X-Total-Count"] == "200"
                rows = await r.json()
                if page < 4:
                    assert 'rel="next"' in r.headers["Link"]
                seen += [row["patron_id"] for row in rows]
        assert len(seen) == len(set(seen)) == 200
        assert rows == []  # page 5 is past the end
        for params in ({"_page": "0"}, {"_per_page": "x"}, {"_per_page": "0"}):
            async with session.get(
                sim.http_url + "/api/v1/items", params=params, headers={"Authorization": sim.basic_auth}
            ) as r:
                assert r.status == 400
        async with session.get(sim.http_url + "/api/v1/items") as r:
            assert r.status == 401
        async with session.get(
            sim.http_url + "/api/v1/items", headers={"Authorization": "Basic Ym9ndXM6eA=="}
        ) as r:
            assert r.status == 401
        async with session.get(
            sim.http_url + "/api/v1/patrons/999999", headers={"Authorization": sim.basic_auth}
        ) as r:
            assert r.status == 404
    patron = (await sim.all_patrons())[0]
    assert await sim.rest(f"/api/v1/patrons/{patron['patron_id']}") == patron
    for field in (
        "patron_id",
        "cardnumber",
        "surname",
        "firstname",
        "category_id",
        "expiry_date",
        "restricted",
        "account_balance",
        "checkouts_limit",
    ):
        assert field in patron
    items = await sim.all_items()
    assert len(items) == 500
    assert await sim.rest("/api/v1/items", external_id=items[7]["external_id"]) == [items[7]]


async def test_who_has_this_item_now(sim: Sim) -> None:
    item, holder = await sim.take_item_on_loan()
    [checkout] = await sim.rest("/api/v1/checkouts", item_id=str(item["item_id"]))
    assert checkout["cardnumber"] == holder
    assert (await sim.rest(f"/api/v1/patrons/{checkout['patron_id']}"))["cardnumber"] == holder
    assert await sim.rest("/api/v1/checkouts", external_id=item["external_id"]) == [checkout]


async def test_seeded_library_looks_real(sim: Sim) -> None:
    patrons, items, checkouts = await sim.all_patrons(), await sim.all_items(), await sim.all_checkouts()
    today = datetime.now(UTC).date().isoformat()
    assert {p["category_id"] for p in patrons} >= {"ADULT", "CHILD", "STUDENT"}
    assert any(p["restricted"] for p in patrons)
    assert any(p["expiry_date"] < today for p in patrons)
    assert any(p["account_balance"] > 0 for p in patrons)
    assert any(any(ord(ch) > 127 for ch in p["surname"] + p["firstname"]) for p in patrons)
    assert all(p["cardnumber"].isdigit() and len(p["cardnumber"]) == 14 for p in patrons)
    assert {i["item_type_id"] for i in items} >= {"BOOK", "DVD"}
    assert any(i["holds"] for i in items)
    assert checkouts and any(c["due_date"] < datetime.now(UTC).isoformat() for c in checkouts)
    rules, calendar = await rules_and_calendar(sim)
    assert rules[("ADULT", "BOOK")].loan_days > rules[("ADULT", "DVD")].loan_days
    assert 6 in calendar.closed_weekdays and calendar.holidays
    assert all(
        calendar.is_open(parse_timestamp(c["due_date"].replace("+00:00", "")).date()) for c in checkouts
    )


# --- control ----------------------------------------------------------------------------------------------


async def test_offline_stops_every_protocol_but_control(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    reader, writer = await asyncio.open_connection(sim.sip2_host, sim.sip2_port)
    writer.write(sip2.encode(sip2.login(sim.user, sim.password, seq=0)))
    assert sip2.decode(await reader.readuntil(b"\r")).fixed["ok"] == "1"
    assert await sim.set_state(online=False) == {"online": False, "latency_ms": 0, "failure_rate": 0.0}
    assert await closed_by_peer(reader)  # the open SIP2 connection is closed
    writer.close()
    status, _ = await koha(sim, action="issue", cardnumber=patron["cardnumber"], barcode=item["external_id"])
    assert status == 503
    async with aiohttp.ClientSession() as session:
        async with session.get(
            sim.http_url + "/api/v1/patrons", headers={"Authorization": sim.basic_auth}
        ) as r:
            assert r.status == 503
    reader, writer = await asyncio.open_connection(sim.sip2_host, sim.sip2_port)
    writer.write(sip2.encode(sip2.login(sim.user, sim.password, seq=0)))
    assert await closed_by_peer(reader)
    writer.close()
    assert (await sim.state())["online"] is False
    assert await sim.loan_of(item["external_id"]) is None  # /sim/* still answers
    await sim.set_state(online=True)
    assert await koha(sim, action="issue", cardnumber=patron["cardnumber"], barcode=item["external_id"]) == (
        200,
        "Success.",
    )


async def test_latency_slows_every_request(sim: Sim) -> None:
    await sim.set_state(latency_ms=300)
    started = time.monotonic()
    assert (await koha(sim, action="return", barcode="NO-SUCH-ITEM"))[1] == "Item not found."
    assert time.monotonic() - started >= 0.3
    assert (await sim.state())["latency_ms"] == 300  # control answers too (it is never slowed)


async def test_injected_failures_happen_before_applying(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    before = len(await sim.ledger())
    await sim.set_state(failure_rate=1.0)
    status, _ = await koha(sim, action="issue", cardnumber=patron["cardnumber"], barcode=item["external_id"])
    assert status == 500
    reader, writer = await asyncio.open_connection(sim.sip2_host, sim.sip2_port)
    writer.write(sip2.encode(sip2.login(sim.user, sim.password, seq=0)))
    assert await closed_by_peer(reader)  # dropped
    writer.close()
    assert len(await sim.ledger()) == before
    assert await sim.loan_of(item["external_id"]) is None
    # Half the requests fail; exactly the ones answered are in the ledger.
    await sim.set_state(failure_rate=0.5)
    answered = 0
    for _ in range(40):
        status, text = await koha(sim, action="return", barcode="NO-SUCH-ITEM")
        assert (status, text) in (
            (500, "Internal Server Error (injected failure)."),
            (200, "Item not found."),
        )
        answered += status == 200
    assert 0 < answered < 40
    assert len(await sim.ledger()) == before + answered


def test_failures_are_deterministic_from_the_seed() -> None:
    def pattern(seed: int) -> list[bool]:
        state = SimState(seed=seed)
        state.update({"failure_rate": 0.5})
        return [state.draw_failure() for _ in range(64)]

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert not any(SimState(seed=7).draw_failure() for _ in range(64))  # rate 0 never fails


async def test_bad_state_is_refused_and_changes_nothing(sim: Sim) -> None:
    await sim.set_state(latency_ms=5)
    async with aiohttp.ClientSession() as session:
        for body in (
            {"online": "yes"},
            {"latency_ms": -1},
            {"failure_rate": 2},
            {"colour": "red"},
            {"latency_ms": 10, "failure_rate": "x"},
            [1, 2],
        ):
            async with session.post(sim.http_url + "/sim/state", json=body) as r:
                assert r.status == 400
        async with session.post(sim.http_url + "/sim/state", data=b"{not json") as r:
            assert r.status == 400
    assert await sim.state() == {"online": True, "latency_ms": 5, "failure_rate": 0.0}


# --- SIP2 -------------------------------------------------------------------------------------------------


class SipClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.seq = reader, writer, 0

    @classmethod
    async def connect(cls, sim: Sim, login: bool = True) -> SipClient:
        client = cls(*await asyncio.open_connection(sim.sip2_host, sim.sip2_port))
        if login:
            assert (await client.send(sip2.login(sim.user, sim.password))).fixed["ok"] == "1"
        return client

    async def send(self, msg: Message) -> Message:
        msg.seq = self.seq
        self.seq = (self.seq + 1) % 10
        reply = sip2.decode(await self.raw(sip2.encode(msg)))
        assert reply.seq == msg.seq
        return reply

    async def raw(self, data: bytes) -> bytes:
        self.writer.write(data)
        await self.writer.drain()
        return await asyncio.wait_for(self.reader.readuntil(b"\r"), 10)

    async def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def sip(sim: Sim) -> AsyncIterator[SipClient]:
    client = await SipClient.connect(sim)
    yield client
    await client.close()


async def test_sip2_login_is_required_and_checked(sim: Sim) -> None:
    client = await SipClient.connect(sim, login=False)
    reply = await client.send(sip2.login(sim.user, "wrong"))
    assert (reply.code, reply.fixed["ok"]) == ("94", "0")
    client.writer.write(sip2.encode(sip2.sc_status(seq=5)))
    assert await closed_by_peer(client.reader)  # anything but a login first: connection closed
    await client.close()
    client = await SipClient.connect(sim)
    reply = await client.send(sip2.sc_status())
    assert reply.code == "98" and reply.fixed["online_status"] == "Y" and reply.get("BX")
    await client.close()


async def test_sip2_offline_checkout_counts_from_the_transaction_date(sim: Sim, sip: SipClient) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=10)
    reply = await sip.send(
        sip2.checkout("MAIN", patron["cardnumber"], item["external_id"], when, no_block=True)
    )
    assert reply.code == "12" and reply.fixed["ok"] == "1"
    rules, calendar = await rules_and_calendar(sim)
    expected = due_date(when, rules[(patron["category_id"], item["item_type_id"])], calendar)
    assert sip2.parse_date(reply.get("AH") or "") == expected
    assert (await sim.loan_of(item["external_id"]))["due"] == expected.isoformat()
    [checkout] = await sim.rest("/api/v1/checkouts", item_id=str(item["item_id"]))
    assert checkout["checkout_date"] == when.isoformat()
    entry = (await sim.ledger())[-1]
    assert (entry["protocol"], entry["action"], entry["timestamp"], entry["outcome"]) == (
        "sip2",
        "checkout",
        stamp(when),
        "Success.",
    )


async def test_sip2_no_block_decides_whether_blocks_apply(sim: Sim, sip: SipClient) -> None:
    blocked, item = await sim.take_blocked_patron(), await sim.take_available_item()
    now = datetime.now(UTC)
    reply = await sip.send(
        sip2.checkout("MAIN", blocked["cardnumber"], item["external_id"], now, no_block=False)
    )
    assert reply.fixed["ok"] == "0" and reply.get("AF")
    assert (await sim.ledger())[-1]["outcome"] == reply.get("AF")
    assert await sim.loan_of(item["external_id"]) is None
    reply = await sip.send(
        sip2.checkout("MAIN", blocked["cardnumber"], item["external_id"], now, no_block=True)
    )
    assert reply.fixed["ok"] == "1"
    assert (await sim.loan_of(item["external_id"]))["cardnumber"] == blocked["cardnumber"]
    reply = await sip.send(sip2.checkout("MAIN", "00000000000000", item["external_id"], now))
    assert reply.fixed["ok"] == "0" and reply.get("AF") == "Patron not found."


async def test_sip2_checkin(sim: Sim, sip: SipClient) -> None:
    available = await sim.take_available_item()
    reply = await sip.send(sip2.checkin("MAIN", available["external_id"], datetime.now(UTC)))
    assert (reply.code, reply.fixed["ok"]) == ("10", "0")
    assert reply.get("AF") == "Item not checked out."
    item, holder = await sim.take_item_on_loan()
    returned = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=5)
    reply = await sip.send(sip2.checkin("MAIN", item["external_id"], returned))
    assert reply.fixed["ok"] == "1" and reply.get("AA") == holder
    assert await sim.loan_of(item["external_id"]) is None
    entry = (await sim.ledger())[-1]
    assert (entry["action"], entry["timestamp"], entry["cardnumber"]) == ("checkin", stamp(returned), holder)
    held, _ = await sim.take_item_with_hold(on_loan=True)
    reply = await sip.send(sip2.checkin("MAIN", held["external_id"], datetime.now(UTC)))
    assert reply.fixed["alert"] == "Y" and reply.get("CV") == "01"
    assert reply.get("CY") == held["holds"][0]["cardnumber"]


async def test_sip2_renew_extends_the_due_date(sim: Sim, sip: SipClient) -> None:
    item, holder = await sim.take_item_on_loan()
    before = (await sim.loan_of(item["external_id"]))["due"]
    reply = await sip.send(sip2.renew("MAIN", holder, item["external_id"], datetime.now(UTC)))
    assert (reply.code, reply.fixed["ok"], reply.fixed["renewal_ok"]) == ("30", "1", "Y")
    after = (await sim.loan_of(item["external_id"]))["due"]
    assert after > before
    assert sip2.parse_date(reply.get("AH") or "").isoformat() == after
    other = await sim.take_patron()
    reply = await sip.send(sip2.renew("MAIN", other["cardnumber"], item["external_id"], datetime.now(UTC)))
    assert reply.fixed["ok"] == "0" and reply.get("AF") == "Item not checked out to this patron."


async def test_sip2_fee_paid_and_patron_information(sim: Sim, sip: SipClient) -> None:
    patron = await sim.take_patron_with_fines()
    balance = Decimal(str(patron["account_balance"]))
    now = datetime.now(UTC)
    info = await sip.send(sip2.patron_information("MAIN", patron["cardnumber"], now))
    assert info.code == "64" and info.get("BL") == "Y"
    assert info.get("AE") == f"{patron['firstname']} {patron['surname']}"
    assert Decimal(info.get("BV") or "") == balance
    reply = await sip.send(
        sip2.fee_paid("MAIN", patron["cardnumber"], Decimal("1.00"), now, transaction_id="t-1")
    )
    assert (reply.code, reply.fixed["payment_accepted"], reply.get("BK")) == ("38", "Y", "t-1")
    info = await sip.send(sip2.patron_information("MAIN", patron["cardnumber"], now))
    assert Decimal(info.get("BV") or "") == balance - 1
    reply = await sip.send(sip2.fee_paid("MAIN", "00000000000000", Decimal("1.00"), now))
    assert reply.fixed["payment_accepted"] == "N" and reply.get("AF") == "Patron not found."
    unknown = await sip.send(sip2.patron_information("MAIN", "00000000000000", now))
    assert unknown.get("BL") == "N"


async def test_sip2_item_information(sim: Sim, sip: SipClient) -> None:
    now = datetime.now(UTC)
    item, holder = await sim.take_item_on_loan()
    reply = await sip.send(sip2.item_information("MAIN", item["external_id"], now))
    assert reply.fixed["circulation_status"] == sip2.CIRC_CHARGED and reply.get("AA") == holder
    assert reply.get("AJ") == item["title"] and reply.get("AH")
    available = await sim.take_available_item()
    reply = await sip.send(sip2.item_information("MAIN", available["external_id"], now))
    assert reply.fixed["circulation_status"] == sip2.CIRC_AVAILABLE and reply.get("AA") is None
    reply = await sip.send(sip2.item_information("MAIN", "NO-SUCH-ITEM", now))
    assert reply.fixed["circulation_status"] == sip2.CIRC_OTHER and reply.get("AF") == "Item not found."


async def test_sip2_bad_checksum_asks_for_a_resend(sim: Sim, sip: SipClient) -> None:
    good = sip2.encode(sip2.sc_status(seq=sip.seq))
    broken = good[:-3] + (b"0" if good[-3:-2] != b"0" else b"1") + good[-2:]
    assert sip2.decode(await sip.raw(broken)).code == "96"
    assert sip2.decode(await sip.raw(good)).code == "98"  # the same connection carries on
    assert sip2.decode(await sip.raw(b"97\r")).code == "98"  # 97: the last answer again


async def test_sip2_request_with_a_bad_date_is_refused_and_the_connection_carries_on(
    sim: Sim, sip: SipClient
) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    msg = sip2.checkout("MAIN", patron["cardnumber"], item["external_id"], datetime.now(UTC))
    msg.fixed["transaction_date"] = "20241399    999999"  # the right length, but no date: the handler refuses it
    assert sip2.decode(await sip.raw(sip2.encode(msg))).code == "96"  # rolled back (this once crashed)
    assert await sim.loan_of(item["external_id"]) is None
    assert (await sip.send(sip2.sc_status())).code == "98"


async def test_sip2_garbage_never_stops_the_server(sim: Sim) -> None:
    client = await SipClient.connect(sim)
    for junk in (b"\x00\xff\xfe garbage |||\r", b"12 not a request\r", b"11YY\r"):
        assert sip2.decode(await client.raw(junk)).code == "96"
    client.writer.write(b"\x13" * 70000)  # a frame longer than any SIP2 message: the server hangs up
    await client.writer.drain()
    assert await closed_by_peer(client.reader)
    await client.close()
    other = await SipClient.connect(sim)
    assert (await other.send(sip2.sc_status())).code == "98"
    await other.close()


# --- process and seeding ----------------------------------------------------------------------------


async def test_staff_password_from_the_environment_and_clean_exit(tmp_path: Path) -> None:
    async with running_simulator(tmp_path, patrons=20, items=30, password="s3cret-test") as other:
        assert (other.user, other.password) == ("bridge", "s3cret-test")
        assert len(await other.all_patrons()) == 20
        process = other.process
    assert process is not None and process.returncode == 0


def test_seeding_is_deterministic(tmp_path: Path) -> None:
    def dump(path: Path, seed: int) -> list[tuple]:
        lib = Library.open(path, SeedSpec(patrons=300, items=400, seed=seed, today=date(2025, 6, 1)))
        rows = [
            tuple(r)
            for table in ("patrons", "items", "checkouts", "holds")
            for r in lib.db.execute(f"SELECT * FROM {table} ORDER BY 1")
        ]
        lib.close()
        return rows

    first = dump(tmp_path / "a", 5)
    assert first == dump(tmp_path / "b", 5)
    assert first != dump(tmp_path / "c", 6)
    # Reopening keeps the state instead of reseeding.
    lib = Library.open(tmp_path / "a", SeedSpec(patrons=300, items=400, seed=5))
    lib.record("koha", "checkout", None, None, None, None, "Success.")
    lib.close()
    lib = Library.open(tmp_path / "a", SeedSpec(patrons=300, items=400, seed=5))
    assert len(lib.ledger()) == 1
    lib.close()


def test_due_dates_skip_closed_days() -> None:
    calendar = Calendar(frozenset({6}), frozenset({date(2025, 12, 25)}))
    # Thursday 2025-12-04 + 21 days = Thursday 2025-12-25, a holiday: due Friday the 26th at 23:59 UTC.
    assert due_date(datetime(2025, 12, 4, 10, tzinfo=UTC), LoanRule(21, 1), calendar) == datetime(
        2025, 12, 26, 23, 59, tzinfo=UTC
    )
    # Monday 2025-12-01 + 6 = Sunday the 7th, closed: Monday the 8th.
    assert due_date(datetime(2025, 12, 1, 10, tzinfo=UTC), LoanRule(6, 0), calendar).date() == date(
        2025, 12, 8
    )


async def test_wait_until_is_bounded() -> None:
    assert await wait_until(lambda: 3) == 3
    with pytest.raises(TimeoutError):
        await wait_until(lambda: False, within=0.05)
