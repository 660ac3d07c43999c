"""Both ILS adapters against the simulator over real sockets: every kind, every failure path."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from node.ilsbridge.adapters import (
    Credentials,
    CredentialsError,
    IlsAdapter,
    IlsUnavailable,
    SnapshotUnsupported,
    load_credentials,
    make_adapter,
)
from node.ilsbridge.adapters.koha import KohaAdapter, split_name
from node.ilsbridge.operation import Operation, Outcome
from node.snapshot.rows import item_from_koha, patron_from_koha
from tests.ilssim import Sim, start_simulator, wait_until

pytestmark = pytest.mark.usefixtures("sim_reset")  # `sim` (one per module) is in conftest.py


def creds(sim: Sim, password: str | None = None) -> Credentials:
    return Credentials(sim.user, password or sim.password)


@pytest.fixture(params=["koha", "sip2"])
async def adapter(request: pytest.FixtureRequest, sim: Sim) -> AsyncIterator[IlsAdapter]:
    url = sim.koha_url if request.param == "koha" else sim.sip2_url + "?institution=MAIN&timeout=5"
    a = make_adapter(url, creds(sim))
    try:
        yield a
    finally:
        await a.close()


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- both adapters -------------------------------------------------------------------------------------


async def test_apply_each_kind(sim: Sim, adapter: IlsAdapter) -> None:
    assert isinstance(adapter, IlsAdapter)
    patron, item = await sim.take_patron(), await sim.take_available_item()
    fined = await sim.take_patron_with_fines()
    when = now() - timedelta(days=2)
    before = len(await sim.ledger())

    out = await adapter.apply(
        Operation("checkout", when, item=item["external_id"], patron=patron["cardnumber"])
    )
    assert out.status == "applied", out
    assert (await sim.loan_of(item["external_id"]))["cardnumber"] == patron["cardnumber"]
    assert await adapter.current_loan(item["external_id"]) == patron["cardnumber"]
    due_before = (await sim.loan_of(item["external_id"]))["due"]

    out = await adapter.apply(Operation("renew", when + timedelta(hours=1), item=item["external_id"]))
    assert out.status == "applied", out
    assert (await sim.loan_of(item["external_id"]))["due"] >= due_before

    out = await adapter.apply(Operation("checkin", when + timedelta(hours=2), item=item["external_id"]))
    assert out.status == "applied", out
    assert await sim.loan_of(item["external_id"]) is None
    assert await adapter.current_loan(item["external_id"]) is None

    out = await adapter.apply(Operation("payment", when, patron=fined["cardnumber"], amount=Decimal("0.10")))
    assert out.status == "applied", out
    [after] = await sim.rest("/api/v1/patrons", cardnumber=fined["cardnumber"])
    assert Decimal(str(after["account_balance"])) == Decimal(str(fined["account_balance"])) - Decimal("0.10")

    entries = (await sim.ledger())[before:]
    assert [(e["action"], e["outcome"]) for e in entries] == [
        ("checkout", "Success."),
        ("renew" if "sip2" in entries[1]["protocol"] else "checkout", "Success."),
        ("checkin", "Success."),
        ("payment", "Success."),
    ]
    assert entries[0]["timestamp"] == when.strftime("%Y-%m-%d %H:%M:%S")  # recorded at the desk's time

    out = await adapter.apply(Operation("in_house_use", when, item=item["external_id"]))
    assert (out.status, out.code) == ("refused", "unsupported")
    assert len(await sim.ledger()) == before + 4


async def test_refusals_are_refused_outcomes(sim: Sim, adapter: IlsAdapter) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    koha = isinstance(adapter, KohaAdapter)
    cases = [
        (
            Operation("checkout", now(), item=item["external_id"], patron="00000000000000"),
            "Borrower not found." if koha else "Patron not found.",
        ),
        (
            Operation("checkout", now(), item="NO-SUCH-ITEM", patron=patron["cardnumber"]),
            "Barcode not found." if koha else "Item not found.",
        ),
        (Operation("checkin", now(), item="NO-SUCH-ITEM"), "Item not found."),
        (
            Operation("checkin", now(), item=item["external_id"]),
            "Item not issued." if koha else "Item not checked out.",
        ),
        (
            Operation("payment", now(), patron="00000000000000", amount=Decimal(1)),
            "Borrower not found." if koha else "Patron not found.",
        ),
    ]
    for op, message in cases:
        assert await adapter.apply(op) == Outcome("refused", message, _code(adapter, message)), op
    out = await adapter.apply(Operation("checkout", now(), item=item["external_id"]))
    assert (out.status, out.code) == ("refused", "invalid")


def _code(adapter: IlsAdapter, message: str) -> str:
    if not isinstance(adapter, KohaAdapter):
        return "refused"
    return {
        "Borrower not found.": "patron_not_found",
        "Barcode not found.": "item_not_found",
        "Item not found.": "item_not_found",
        "Item not issued.": "not_issued",
    }[message]


async def test_live_look_ups_read_as_a_snapshot_row(sim: Sim, adapter: IlsAdapter) -> None:
    """What a desk asks at scan time of a card or item its snapshot lacks (SIP2 63/17, Koha REST)."""
    blocked, good = await sim.take_blocked_patron(), await sim.take_patron()
    lent, borrower = await sim.take_item_on_loan()
    shelf = await sim.take_available_item()
    p = patron_from_koha(await adapter.patron_info(blocked["cardnumber"]))
    assert p is not None and p.barcode == blocked["cardnumber"] and p.block, p
    assert blocked["surname"] in p.name
    g = patron_from_koha(await adapter.patron_info(good["cardnumber"]))
    assert g is not None and g.block is None and g.limit and g.limit > 0, g
    assert await adapter.patron_info("00000000000000") is None
    row, holder = await adapter.item_info(lent["external_id"])
    assert item_from_koha(row).title == lent["title"] and holder == borrower
    row, holder = await adapter.item_info(shelf["external_id"])
    assert item_from_koha(row).barcode == shelf["external_id"] and holder is None
    assert await adapter.item_info("NO-SUCH-ITEM") == (None, None)
    await sim.set_state(online=False)
    with pytest.raises(IlsUnavailable):
        await adapter.patron_info(good["cardnumber"])


async def test_probe_follows_the_ils(sim: Sim, adapter: IlsAdapter) -> None:
    assert await adapter.probe() is True
    await sim.set_state(online=False)
    assert await adapter.probe() is False
    await sim.set_state(online=True)
    assert await adapter.probe() is True


async def test_offline_is_transient_and_recovers(sim: Sim, adapter: IlsAdapter) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    op = Operation("checkout", now(), item=item["external_id"], patron=patron["cardnumber"])
    assert await adapter.probe()  # pooled connections / session exist before the outage
    await sim.set_state(online=False)
    out = await adapter.apply(op)
    assert out.status == "transient", out
    with pytest.raises(IlsUnavailable):
        await adapter.current_loan(item["external_id"])
    await sim.set_state(online=True)
    assert (await adapter.apply(op)).status == "applied"
    assert [e["barcode"] for e in await sim.ledger()].count(item["external_id"]) == 1


async def test_injected_failure_is_transient_and_applies_nothing(sim: Sim, adapter: IlsAdapter) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    before = len(await sim.ledger())
    await sim.set_state(failure_rate=1.0)
    out = await adapter.apply(
        Operation("checkout", now(), item=item["external_id"], patron=patron["cardnumber"])
    )
    assert out.status == "transient", out
    assert len(await sim.ledger()) == before


async def test_concurrent_requests(sim: Sim, adapter: IlsAdapter) -> None:
    patron = await sim.take_patron()
    items = [await sim.take_available_item() for _ in range(8)]
    await sim.set_state(latency_ms=50)
    ops = [Operation("checkout", now(), item=i["external_id"], patron=patron["cardnumber"]) for i in items]
    outcomes = await asyncio.gather(*(adapter.apply(op) for op in ops))
    assert [o.status for o in outcomes] == ["applied"] * len(ops)
    loans = {loan["barcode"]: loan["cardnumber"] for loan in await sim.loans()}
    assert all(loans[i["external_id"]] == patron["cardnumber"] for i in items)


async def test_timeout_is_transient_and_reconciliation_sees_the_truth(sim: Sim) -> None:
    patron = await sim.take_patron()
    for url in (sim.koha_url + "?timeout=0.3", sim.sip2_url + "?institution=MAIN&timeout=0.3"):
        item = await sim.take_available_item()
        adapter = make_adapter(url, creds(sim))
        try:
            # Log in first (a refused operation costs nothing), so that the slow request is the operation.
            assert (await adapter.apply(Operation("checkin", now(), item="NO-SUCH-ITEM"))).status == "refused"
            await sim.set_state(latency_ms=1000)
            out = await adapter.apply(
                Operation("checkout", now(), item=item["external_id"], patron=patron["cardnumber"])
            )
            assert (out.status, out.code) == ("transient", "timeout"), out
            # The ILS may still have done it: this is why a new bridge asks before resending.
            await sim.set_state(latency_ms=0)
            await wait_until(lambda b=item["external_id"]: sim.loan_of(b))
            assert await adapter.current_loan(item["external_id"]) == patron["cardnumber"]
        finally:
            await adapter.close()


async def test_wrong_password_is_a_transient_auth_failure(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    before = len(await sim.ledger())
    for url in (sim.koha_url, sim.sip2_url):
        adapter = make_adapter(url, creds(sim, password="wrong"))
        try:
            out = await adapter.apply(
                Operation("checkout", now(), item=item["external_id"], patron=patron["cardnumber"])
            )
            assert (out.status, out.code) == ("transient", "auth"), out
        finally:
            await adapter.close()
    assert len(await sim.ledger()) == before


async def test_unreachable_ils(sim: Sim) -> None:
    port = free_port()
    for url in (f"koha+http://127.0.0.1:{port}", f"sip2://127.0.0.1:{port}"):
        adapter = make_adapter(url, creds(sim))
        try:
            assert await adapter.probe() is False
            out = await adapter.apply(Operation("checkin", now(), item="39000000000001"))
            assert (out.status, out.code) == ("transient", "unreachable"), out
        finally:
            await adapter.close()


async def test_adapters_reconnect_after_the_ils_restarts(tmp_path: Path) -> None:
    first = start_simulator(tmp_path)
    try:
        koha = make_adapter(first.koha_url, creds(first))
        sip = make_adapter(first.sip2_url, creds(first))
        patron, item = await first.take_patron(), await first.take_available_item()
        other = await first.take_available_item()
        assert (
            await koha.apply(
                Operation("checkout", now(), item=item["external_id"], patron=patron["cardnumber"])
            )
        ).status == "applied"
        assert await sip.probe()
        assert isinstance(koha, KohaAdapter) and koha.login_mode == "csrf"
    finally:
        first.stop()
    http_port = int(first.http_url.rsplit(":", 1)[1])
    second = start_simulator(
        tmp_path, extra_args=("--http-port", str(http_port), "--sip-port", str(first.sip2_port))
    )
    try:
        # Same library on disk, new process: the old Koha session and SIP2 connection are gone.
        assert await second.loan_of(item["external_id"]) is not None
        out = await koha.apply(Operation("checkin", now(), item=item["external_id"]))
        assert out.status == "applied", out
        out = await sip.apply(
            Operation("checkout", now(), item=other["external_id"], patron=patron["cardnumber"])
        )
        assert out.status == "applied", out
        assert [e["barcode"] for e in await second.ledger()].count(item["external_id"]) == 2
    finally:
        await koha.close()
        await sip.close()
        second.stop()


# --- Koha specifics ----------------------------------------------------------------------------------------


async def test_koha_pending_mode_and_branchcode(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    adapter = make_adapter(sim.koha_url + "?pending=true&branchcode=MAIN", creds(sim))
    try:
        out = await adapter.apply(
            Operation("checkout", now(), item=item["external_id"], patron=patron["cardnumber"])
        )
        assert out == Outcome("applied", "Added.")
    finally:
        await adapter.close()
    assert await sim.loan_of(item["external_id"]) is None
    [queued] = [p for p in await sim.pending() if p["barcode"] == item["external_id"]]
    assert (queued["action"], queued["branchcode"]) == ("issue", "MAIN")


async def test_koha_creates_a_patron_registered_at_a_desk_once(sim: Sim) -> None:
    """The bridge sends a desk's registration through REST; a resend (a bridge restarted before it recorded
    the answer) finds the patron there instead of creating it twice; another patron's card is refused."""
    adapter = make_adapter(sim.koha_url + "?branchcode=MAIN&category=ADULT", creds(sim))
    try:
        before = len(await sim.ledger())
        op = Operation("patron_register", now(), patron="T-0001-0042", details=(("name", "Nováková, Eva"),))
        out = await adapter.apply(op)
        assert out.status == "applied" and "Patron created" in out.message, out
        [made] = await sim.rest("/api/v1/patrons", cardnumber="T-0001-0042")
        assert (made["surname"], made["firstname"], made["category_id"]) == ("Nováková", "Eva", "ADULT")
        again = await adapter.apply(op)
        assert again.status == "applied" and "already" in again.message, again
        clash = await adapter.apply(replace(op, details=(("name", "Svoboda, Petr"),)))
        assert (clash.status, clash.code) == ("refused", "card_in_use"), clash
        assert [(e["action"], e["cardnumber"]) for e in (await sim.ledger())[before:]] == [
            ("register", "T-0001-0042")]  # created once
        out = await adapter.apply(Operation("checkout", now(), item=(await sim.take_available_item())["external_id"],
                                            patron="T-0001-0042"))
        assert out.status == "applied", out  # the new card borrows at the ILS
    finally:
        await adapter.close()
    plain = make_adapter(sim.koha_url, creds(sim))  # no category: the bridge says so, nothing is created
    try:
        out = await plain.apply(Operation("patron_register", now(), patron="T-0001-0043",
                                          details=(("name", "Dvořák, Jan"),)))
        assert (out.status, out.code) == ("refused", "unsupported") and "category=" in out.message, out
        assert await sim.rest("/api/v1/patrons", cardnumber="T-0001-0043") == []
    finally:
        await plain.close()


def test_a_name_typed_at_the_desk_is_split_as_koha_keeps_it() -> None:
    assert split_name("Nováková, Eva") == ("Nováková", "Eva")
    assert split_name("Jan Amos Komenský") == ("Komenský", "Jan Amos")
    assert split_name("Cher") == ("Cher", "") and split_name("  ") == ("?", "") and split_name(", Eva") == ("Eva", "")


async def test_koha_before_24_05_uses_get_with_credentials(tmp_path: Path) -> None:
    old = start_simulator(tmp_path, extra_args=("--koha-before-24.05",))
    adapter = make_adapter(old.koha_url, creds(old))
    try:
        patron, item = await old.take_patron(), await old.take_available_item()
        out = await adapter.apply(
            Operation("checkout", now(), item=item["external_id"], patron=patron["cardnumber"])
        )
        assert out == Outcome("applied", "Success.")
        assert isinstance(adapter, KohaAdapter) and adapter.login_mode == "legacy"
    finally:
        await adapter.close()
        old.stop()


async def test_koha_snapshot_pages(sim: Sim) -> None:
    adapter = make_adapter(sim.koha_url, creds(sim))
    try:
        seen = []
        for page in range(1, 6):
            seen += await adapter.fetch_page("patrons", page, 50)
        assert len({p["cardnumber"] for p in seen}) == len(seen) == len(await sim.all_patrons()) >= 200
        assert await adapter.fetch_page("patrons", 9, 50) == []
        items = await adapter.fetch_page("items", 1, 10)
        assert [i["item_id"] for i in items] == list(range(1, 11))
        checkouts = await adapter.fetch_page("checkouts", 1, 1000)
        assert checkouts and all({"patron_id", "item_id", "due_date"} <= set(c) for c in checkouts)
        with pytest.raises(ValueError):
            await adapter.fetch_page("holds", 1, 10)  # type: ignore[arg-type]
    finally:
        await adapter.close()


async def test_current_loan(sim: Sim, adapter: IlsAdapter) -> None:
    item, holder = await sim.take_item_on_loan()
    assert await adapter.current_loan(item["external_id"]) == holder
    assert await adapter.current_loan((await sim.take_available_item())["external_id"]) is None
    assert await adapter.current_loan("NO-SUCH-ITEM") is None


# --- SIP2 specifics ----------------------------------------------------------------------------------------


async def test_sip2_sends_the_desk_time_and_due_date(sim: Sim) -> None:
    patron, item = await sim.take_patron(), await sim.take_available_item()
    adapter = make_adapter(sim.sip2_url + "?institution=MAIN", creds(sim))
    try:
        when = now() - timedelta(days=4)
        promised = (now() + timedelta(days=30)).replace(hour=23, minute=59, second=0)
        out = await adapter.apply(
            Operation("checkout", when, item=item["external_id"], patron=patron["cardnumber"], due=promised)
        )
        assert out.status == "applied"
        assert (await sim.loan_of(item["external_id"]))["due"] == promised.isoformat()
        [checkout] = await sim.rest("/api/v1/checkouts", item_id=str(item["item_id"]))
        assert checkout["checkout_date"] == when.isoformat()
    finally:
        await adapter.close()


async def test_sip2_snapshots_need_a_rest_base(sim: Sim) -> None:
    plain = make_adapter(sim.sip2_url, creds(sim))
    with_rest = make_adapter(sim.sip2_url + "?rest=" + sim.http_url, creds(sim))
    try:
        with pytest.raises(SnapshotUnsupported):
            await plain.fetch_page("patrons", 1, 10)
        assert len(await with_rest.fetch_page("patrons", 1, 10)) == 10
    finally:
        await plain.close()
        await with_rest.close()


# --- credentials and URLs ----------------------------------------------------------------------------------


def test_credentials_from_files_and_environment(tmp_path: Path) -> None:
    lines = tmp_path / "ils.conf"
    lines.write_text("# the bridge's staff account\nuser = bridge\npassword=p=ss word\n", encoding="utf-8")
    assert load_credentials(str(lines), {}) == Credentials("bridge", "p=ss word")
    as_json = tmp_path / "ils.json"
    as_json.write_text(json.dumps({"user": "bridge", "password": "Dvořák-42"}), encoding="utf-8")
    assert load_credentials(str(as_json), {"CIRCMESH_ILS_USER": "ignored"}) == Credentials(
        "bridge", "Dvořák-42"
    )
    env = {"CIRCMESH_ILS_USER": "u", "CIRCMESH_ILS_PASSWORD": "p"}
    assert load_credentials(None, env) == Credentials("u", "p")
    assert "p=ss" not in repr(load_credentials(str(lines), {}))


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        (None, {}, "CIRCMESH_ILS_USER"),
        (None, {"CIRCMESH_ILS_USER": "u"}, "password missing"),
        ("user=bridge\n", {}, "password missing"),
        ("hello\n", {}, "line 1"),
        ("{not json", {}, "not valid JSON"),
        ("[1]", {}, "JSON object"),
    ],
)
def test_missing_or_bad_credentials_say_what_is_wrong(
    tmp_path: Path, content: str | None, env: dict[str, str], message: str
) -> None:
    path = None
    if content is not None:
        path = tmp_path / "creds"
        path.write_text(content, encoding="utf-8")
    with pytest.raises(CredentialsError, match=message):
        load_credentials(str(path) if path else None, env)
    with pytest.raises(CredentialsError, match="cannot read"):
        load_credentials(str(tmp_path / "absent"), {})


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/",
        "koha+http://",
        "sip2:///x",
        "koha+http://127.0.0.1:1?timeout=soon",
        "sip2://127.0.0.1:1?rest=file:///etc",
        "sip2://127.0.0.1:99999",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        make_adapter(url, Credentials("u", "p"))
