"""Three real `circmesh run` processes on loopback. Every peer link runs through a relay owned by the test,
so the test can cut the network between desks for real."""

from __future__ import annotations

import asyncio
import json
from itertools import combinations
from pathlib import Path

import aiohttp
import pytest

from tests.procs import DeskProcess, Relay, get_json, post_json, wait_for

pytestmark = pytest.mark.multiprocess


class Cluster:
    def __init__(self, root: Path, names: list[str]) -> None:
        self.root, self.names = root, names
        self.desks: dict[str, DeskProcess] = {}
        self.relays: dict[frozenset[str], Relay] = {}

    async def start(self) -> None:
        # Ports first, so that relays can point at peer ports before the desks start.
        placeholders = {n: DeskProcess(self.root / n, n, []) for n in self.names}
        for a, b in combinations(self.names, 2):
            relay = Relay(placeholders[b].peer_port)
            await relay.start()
            self.relays[frozenset((a, b))] = relay
        for n in self.names:
            desk = placeholders[n]
            desk.peers = [self.relays[frozenset((n, b))].address for b in self.names
                          if b != n and self.names.index(b) > self.names.index(n)]
            self.desks[n] = desk
        await asyncio.gather(*(d.start() for d in self.desks.values()))

    def relay(self, a: str, b: str) -> Relay:
        return self.relays[frozenset((a, b))]

    async def stop(self) -> None:
        await asyncio.gather(*(d.stop() for d in self.desks.values()))
        for r in self.relays.values():
            await r.close()


@pytest.fixture
async def cluster(tmp_path: Path):
    c = Cluster(tmp_path, ["A", "B", "C"])
    await c.start()
    try:
        yield c
    finally:
        await c.stop()


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def connected(session, desk: DeskProcess, n: int) -> bool:
    status = await get_json(session, f"{desk.url}/api/v1/status")
    return sum(p["connected"] for p in status["peers"]) >= n


async def event_ids(session, desk: DeskProcess) -> set[str]:
    ids: set[str] = set()
    cursor = 0
    while True:
        page = await get_json(session, f"{desk.url}/api/v1/events?after={cursor}&limit=5000")
        ids.update(e["id"] for e in page["events"])
        if page["next"] == cursor:
            return ids
        cursor = page["next"]


async def test_checkout_at_one_desk_reaches_the_others_loans_and_live_feed(cluster, session) -> None:
    a, b, c = (cluster.desks[n] for n in "ABC")
    for d in (a, b, c):
        await wait_for(lambda d=d: connected(session, d, 2), what=f"{d.desk} linked")
    feeds = [await session.ws_connect(f"{d.url}/api/v1/live", headers=d.headers) for d in (b, c)]
    status, created = await post_json(session, f"{a.url}/api/v1/checkouts", {"patron": "23000001", "item": "39001"})
    assert status == 201
    event_id = created["event"]["id"]
    for feed in feeds:
        async with asyncio.timeout(10):
            while True:
                msg = json.loads((await feed.receive()).data)
                if msg["event"]["id"] == event_id:
                    break
        assert msg["event"]["desk"] == "A" and msg["event"]["body"]["item"] == "39001" and not msg["local"]
        await feed.close()
    for d in (b, c):
        loans = await get_json(session, f"{d.url}/api/v1/loans?patron=23000001")
        assert [(x["item"], x["desk"]) for x in loans["loans"]] == [("39001", "A")]
        patron = await get_json(session, f"{d.url}/api/v1/patrons/23000001")
        assert [x["item"] for x in patron["loans"]] == ["39001"]


async def test_kill9_a_desk_keep_scanning_restart_and_nothing_acknowledged_is_missing(cluster, session) -> None:
    a, b, c = (cluster.desks[n] for n in "ABC")
    for d in (a, b, c):
        await wait_for(lambda d=d: connected(session, d, 2), what=f"{d.desk} linked")
    acked: set[str] = set()
    for i in range(10):
        status, body = await post_json(session, f"{b.url}/api/v1/checkouts", {"patron": "P-B", "item": f"B{i}"})
        assert status == 201
        acked.add(body["event"]["id"])
    await b.kill9()
    for i in range(25):
        for d in (a, c):
            status, body = await post_json(session, f"{d.url}/api/v1/checkouts",
                                           {"patron": f"P-{d.desk}", "item": f"{d.desk}{i}"})
            assert status == 201
            acked.add(body["event"]["id"])
    status, body = await post_json(session, f"{a.url}/api/v1/checkins", {"item": "B3"})
    assert status == 201
    acked.add(body["event"]["id"])
    await b.start()  # same data directory, same ports

    async def converged() -> bool:
        sets = [await event_ids(session, d) for d in (a, b, c)]
        return all(s >= acked for s in sets) and sets[0] == sets[1] == sets[2]

    await wait_for(converged, within=60, what="convergence after restart")
    states = [await get_json(session, f"{d.url}/api/v1/loans") for d in (a, b, c)]
    keyed = [sorted((x["item"], x["patron"]) for x in s["loans"]) for s in states]
    assert keyed[0] == keyed[1] == keyed[2] and len(keyed[0]) == 10 - 1 + 50


async def _lend_x1_in_both_halves(cluster, session) -> tuple[dict, dict]:
    """Desks A and C each lend item X1, to different patrons, while C is cut off; then the cut heals."""
    a, b, c = (cluster.desks[n] for n in "ABC")
    for d in (a, b, c):
        await wait_for(lambda d=d: connected(session, d, 2), what=f"{d.desk} linked")
    await _cut_off_c(cluster, session)
    s1, lent_a = await post_json(session, f"{a.url}/api/v1/checkouts", {"patron": "P-one", "item": "X1"})
    s2, lent_c = await post_json(session, f"{c.url}/api/v1/checkouts", {"patron": "P-two", "item": "X1"})
    assert s1 == s2 == 201 and lent_a["warnings"] == lent_c["warnings"] == []
    cluster.relay("A", "C").heal()
    cluster.relay("B", "C").heal()
    return lent_a, lent_c


async def _cut_off_c(cluster, session) -> None:
    """Cuts C off from A (and from B, which would otherwise carry A's events to C)."""
    cluster.relay("A", "C").cut()
    cluster.relay("B", "C").cut()
    await wait_for(lambda: _disconnected(session, cluster.desks["C"]), what="C cut off")


async def test_partition_concurrent_loans_of_one_item_become_the_same_conflict_everywhere(cluster, session) -> None:
    a, b, c = (cluster.desks[n] for n in "ABC")
    await _lend_x1_in_both_halves(cluster, session)

    async def same_conflict() -> list | None:
        found = [(await get_json(session, f"{d.url}/api/v1/conflicts"))["conflicts"] for d in (a, b, c)]
        ids = [[x["id"] for x in f] for f in found]
        return found if ids[0] and ids[0] == ids[1] == ids[2] else None

    found = await wait_for(same_conflict, within=60, what="the same conflict on every desk")
    conflict = found[0][0]
    assert conflict["kind"] == "concurrent_checkout" and conflict["item"] == "X1"
    assert set(conflict["patrons"]) == {"P-one", "P-two"} and conflict["needs_admin"]
    assert {e["desk"] for e in conflict["detail"]} == {"A", "C"}
    for d in (a, b, c):
        status = await get_json(session, f"{d.url}/api/v1/status")
        assert status["conflicts"] == 1


async def _disconnected(session, desk: DeskProcess) -> bool:
    status = await get_json(session, f"{desk.url}/api/v1/status")
    return not any(p["connected"] for p in status["peers"])


async def test_desk_survives_bad_http_input(cluster, session) -> None:
    a = cluster.desks["A"]
    cases = [
        (b"{not json", "bad_json"),
        (json.dumps({"patron": "", "item": "1"}).encode(), "missing_field"),
        (json.dumps({"patron": "P\u0007", "item": "1"}).encode(), "bad_barcode"),
        (json.dumps({"patron": "P", "item": "9" * 65}).encode(), "bad_barcode"),
        (json.dumps({"patron": "P", "item": "1", "colour": "red"}).encode(), "unknown_field"),
        (json.dumps({"patron": "P", "item": "1", "x": "y" * 70000}).encode(), "body_too_large"),
        (b"[1,2]", "bad_json"),
    ]
    for raw, code in cases:
        async with session.post(f"{a.url}/api/v1/checkouts", data=raw,
                                headers={"Content-Type": "application/json", **a.headers}) as r:
            body = await r.json()
            assert 400 <= r.status < 500 and body["error"]["code"] == code, (raw[:40], body)
    status = await get_json(session, f"{a.url}/api/v1/status")
    assert status["node"]["events"] == 0


async def test_two_admins_answer_one_conflict_differently_in_a_partition(cluster, session) -> None:
    """Issue 8: "keep desk A's loan" and "keep desk C's loan", given in two halves of a partition, used to
    void both loans. Now neither answer takes effect: every desk shows the disagreement with both answers
    until an admin who has seen both settles it."""
    a, b, c = (cluster.desks[n] for n in "ABC")
    lent_a, lent_c = await _lend_x1_in_both_halves(cluster, session)

    async def conflicts_everywhere(kind: str) -> list | None:
        found = [[x for x in (await get_json(session, f"{d.url}/api/v1/conflicts"))["conflicts"] if x["kind"] == kind]
                 for d in (a, b, c)]
        return found if all(len(f) == 1 for f in found) and len({f[0]["id"] for f in found}) == 1 else None

    conflict = (await wait_for(lambda: conflicts_everywhere("concurrent_checkout"), within=60,
                               what="the double loan on every desk"))[0][0]
    await _cut_off_c(cluster, session)
    path = f"/api/v1/conflicts/{conflict['id']}/resolution"
    s1, _ = await post_json(session, a.url + path, {"action": "keep", "event": lent_a["event"]["id"]})
    s2, _ = await post_json(session, c.url + path, {"action": "keep", "event": lent_c["event"]["id"]})
    assert s1 == s2 == 201
    cluster.relay("A", "C").heal()
    cluster.relay("B", "C").heal()

    dispute = (await wait_for(lambda: conflicts_everywhere("resolutions_disagree"), within=60,
                              what="the disagreement on every desk"))[0][0]
    assert dispute["about"] == conflict["id"] and dispute["needs_admin"] and len(dispute["detail"]) == 2
    assert {e["body"]["event"] for e in dispute["detail"]} == {lent_a["event"]["id"], lent_c["event"]["id"]}
    for d in (a, b, c):
        loans = (await get_json(session, f"{d.url}/api/v1/loans?item=X1"))["loans"]
        assert len(loans) == 1, "while the admins disagree, neither answer voids a loan"
        ids = [x["id"] for x in (await get_json(session, f"{d.url}/api/v1/conflicts"))["conflicts"]]
        assert conflict["id"] in ids

    status, _ = await post_json(session, f"{b.url}/api/v1/conflicts/{dispute['id']}/resolution",
                                {"action": "keep", "event": lent_c["event"]["id"]})
    assert status == 201

    async def settled() -> bool:
        for d in (a, b, c):
            if (await get_json(session, f"{d.url}/api/v1/conflicts"))["conflicts"]:
                return False
            loans = (await get_json(session, f"{d.url}/api/v1/loans?item=X1"))["loans"]
            if [x["patron"] for x in loans] != ["P-two"]:
                return False
        return True

    await wait_for(settled, within=60, what="the third admin's answer settled on every desk")


async def test_values_out_of_bounds_are_refused_and_nothing_is_recorded(cluster, session) -> None:
    """Issue 8: each of these answered 500 after recording, or was recorded and broke exports."""
    a = cluster.desks["A"]
    cases = [
        ("/api/v1/payments", {"patron": "23000000000003", "amount": "1E+999999999"}, "bad_amount"),
        ("/api/v1/payments", {"patron": "23000000000003", "amount": "1E+30"}, "bad_amount"),
        ("/api/v1/payments", {"patron": "23000000000003", "amount": 1e30}, "bad_amount"),
        ("/api/v1/payments", {"patron": "23000000000003", "amount": "2.505"}, "bad_amount"),
        ("/api/v1/payments", {"patron": "23000000000003", "amount": "NaN"}, "bad_amount"),
        ("/api/v1/checkouts", {"patron": "P", "item": "1", "due": 100000000000000000000}, "bad_due"),
        ("/api/v1/checkouts", {"patron": "P", "item": "1", "due": "10000-01-01"}, "bad_due"),
        ("/api/v1/checkouts", {"patron": "P", "item": "1", "due": 253402300800000}, "bad_due"),
        ("/api/v1/checkouts", {"patron": "P", "item": "1", "due": -5}, "bad_due"),
        ("/api/v1/checkouts", {"patron": "P", "item": "\U0001F4DA"}, "bad_barcode"),
        ("/api/v1/registrations", {"patron": "R1", "name": "Ann \ud800"}, "bad_name"),
        ("/api/v1/renewals", {"item": "1", "due": 1.5}, "bad_due"),
    ]
    for path, body, code in cases:
        raw = json.dumps(body).encode()  # \ud800 travels as the JSON escape a careless client sends
        async with session.post(f"{a.url}{path}", data=raw,
                                headers={"Content-Type": "application/json", **a.headers}) as r:
            answer = await r.json()
            assert r.status == 400 and answer["error"]["code"] == code, (path, body, answer)
    status = await get_json(session, f"{a.url}/api/v1/status")
    assert status["node"]["events"] == 0
    s, _ = await post_json(session, f"{a.url}/api/v1/payments", {"patron": "23000000000003", "amount": "9999.99"})
    assert s == 201
    for fmt in ("koc", "offcirc", "evergreen"):
        async with session.get(f"{a.url}/api/v1/export?format={fmt}", headers=a.headers) as r:
            assert r.status == 200
