"""Issue 8: nothing a desk is sent can silence it. Events that verify (signed by a real desk) but whose
meaning cannot be read, from a buggy or newer desk, are replicated, quarantined by the fold and shown to
the admins; they never make the fold, a view, an export or a peer link raise, and never stop sync.

The writing desk here is a real EventLog whose own checks are switched off (that is the bug being
simulated); every reader is the real thing."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import aiohttp
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import node.eventlog
from node.crdt.event import KINDS, Event
from node.crdt.state import fold
from node.desk import DeskNode
from node.ilsbridge import formats
from node.ilsbridge.mapping import operation_of
from tests.procs import TEST_PASSWORD, TEST_USER, sign_in
from tests.test_replication import full_sync, make_logs

AT = 1_790_000_000_000

# every value msgpack can carry, with the edges that broke desks: huge, negative, non-finite, non-UTF-8
scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.sampled_from([0, -1, 10**20 % 2**64, 2**63, 253402300800000, 1 << 53]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["1E+999999999", "1E+30", "NaN", "-0", "\ud800", "2.505", "", "\U0001F4DA", "x" * 600]),
    st.binary(max_size=20),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
fields = st.sampled_from(["patron", "item", "due", "amount", "name", "event", "reason", "conflict", "action",
                          "note", "node", "upto", "status", "message", "term", "override", "imported"])
bodies = st.one_of(st.dictionaries(fields, values, max_size=6), values)
kinds = st.one_of(st.sampled_from(KINDS), st.text(max_size=12), st.integers(), st.none())
times = st.one_of(st.just(AT), st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(), st.text(max_size=5))
odd_events = st.lists(st.tuples(kinds, bodies, times), min_size=1, max_size=6)


def _unchecked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's bug: it signs whatever it is given."""
    monkeypatch.setattr("node.crdt.event.check_body", lambda kind, body, at=None: None)


async def _write_raw(log: node.eventlog.EventLog, kind: object, body: object, at: object) -> Event | None:
    try:
        return await log.append(kind, body, "tester", at=at)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # msgpack itself cannot write it: nothing was written
        return None


def _everything_is_printable(reader: node.eventlog.EventLog) -> None:
    state = reader.state
    for event in reader.ordered():
        json.dumps(event.to_json(), allow_nan=False)
    for conflict in state.conflicts.values():
        json.dumps(conflict.to_json(), allow_nan=False)
    readable = [operation_of(e) for e in reader.ordered()
                if e.problem is None and e.kind in ("checkout", "checkin", "renew", "payment", "patron_register")
                and e.id not in state.voided]
    for fmt in formats.FORMATS:
        formats.export_report(fmt, readable, tz=None, generator="circmesh", generator_version="test")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=odd_events)
@example(batch=[(2**63, {}, AT)])  # a kind beyond SQLite's integers once failed the journal's write
def test_odd_events_replicate_are_quarantined_and_never_raise(tmp_path_factory, monkeypatch, batch) -> None:
    async def scenario() -> None:
        root = tmp_path_factory.mktemp("odd")
        writer, reader = make_logs(root, 2)
        for log in (writer, reader):
            await log.start()
        with monkeypatch.context() as m:
            _unchecked(m)
            written = [e for kind, body, at in batch if (e := await _write_raw(writer, kind, body, at))]
        good = await writer.append("checkout", {"patron": "P1", "item": "I1", "due": AT + 1}, "tester", at=AT)
        await full_sync([writer, reader])
        assert not reader.refusals, reader.refusal_log  # verified events are never refused for their body
        assert set(reader.events) == {e.id for e in [*written, good]}
        state = reader.state
        assert state.loans["I1"].patron == "P1"  # what came after the odd events still folds
        for event in written:
            held = reader.events[event.id]
            if held.problem is not None:
                assert event.id in state.quarantined
                assert f"unreadable_event/{event.id}" in state.conflicts
        # every desk holding the same events folds the same state, whatever it could not read
        assert fold(reader.ordered()).quarantined == fold(writer.ordered()).quarantined == state.quarantined
        _everything_is_printable(reader)
        for log in (writer, reader):
            await log.store.commit([])
            log.close()
        # read back from the journal at start, without checking again: the same events, meanings and state
        again = node.eventlog.EventLog(reader.identity, reader.store.path.parent, reader.desk)
        again.open()
        assert [(e.encode(), e.problem) for e in again.ordered()] == [(e.encode(), e.problem) for e in reader.ordered()]
        assert again.state.quarantined == state.quarantined
        again.close()

    asyncio.run(scenario())


NASTY = [
    ("payment", {"patron": "23000000000003", "amount": "1E+999999999"}, AT),
    ("payment", {"patron": "23000000000003", "amount": "1E+30"}, AT),
    ("checkout", {"patron": "P", "item": "I", "due": 2**64 - 1}, AT),
    ("checkout", {"patron": "P", "item": "I", "due": 253402300800000}, AT),
    ("checkout", {"patron": b"\xff\xfe", "item": ["I"], "due": math.nan}, AT),
    ("patron_register", {"patron": "R1", "name": "Ann \udcff"}, AT),  # invalid UTF-8 on the wire
    ("checkin", {"item": "\U0001F4DA\x00"}, AT),
    ("renew", {"item": "I", "due": -(2**63)}, 2**64 - 1),
    ("applied", {"event": "x", "status": "maybe", "message": math.inf, "term": -1}, AT),
    ("resolve", {"conflict": "nope", "action": "shred"}, AT),
    ("revoke", {"node": "zz", "upto": 2**64 - 1}, AT),
    ("hold_shelf", {"item": "I", "shelf": 3}, AT),  # a kind from a newer version
    ("void", {"event": {"nested": [1, 2, {"x": b"\x00"}]}}, -1),
]


async def test_a_desk_that_wrote_unreadable_events_keeps_serving_every_view(desk: DeskNode, monkeypatch) -> None:
    """The first case of issue 8, on a real desk: after a payment of 1E+999999999 the desk answered 500 on
    /status and /loans, stopped sending to peers, and `/events` lacked the event `/status` counted."""
    with monkeypatch.context() as m:
        _unchecked(m)
        for kind, body, at in NASTY:
            assert await _write_raw(desk.log, kind, body, at) is not None
    good = await desk.log.append("checkout", {"patron": "P1", "item": "I1", "due": AT + 1}, "tester", at=AT)
    assert desk.log.gate.idle, "the fsync gate is open: sync goes on"
    base = f"http://127.0.0.1:{desk.port}"
    async with aiohttp.ClientSession() as s:
        token = await sign_in(s, base, TEST_USER, TEST_PASSWORD)
        auth = {"Authorization": f"Bearer {token}"}
        pages = ["/api/v1/status", "/api/v1/loans", "/api/v1/conflicts", "/api/v1/events?limit=100",
                 "/api/v1/outcomes", "/api/v1/patrons/23000000000003", "/api/v1/patrons/R1", "/api/v1/items/I",
                 "/api/v1/patrons?q=ann", "/api/v1/export?format=koc", "/api/v1/export?format=offcirc",
                 "/api/v1/export?format=evergreen"]
        answers = {}
        for page in pages:
            async with s.get(base + page, headers=auth) as r:
                assert r.status == 200, (page, await r.text())
                answers[page] = await r.json() if r.content_type == "application/json" else await r.read()
        status = answers["/api/v1/status"]
        assert status["node"]["events"] == len(answers["/api/v1/events?limit=100"]["events"]) == len(NASTY) + 1
        assert status["quarantined"]["count"] == len(NASTY)
        assert status["quarantined"]["recent"][0]["desk"] == "Front desk"
        unreadable = [c for c in answers["/api/v1/conflicts"]["conflicts"] if c["kind"] == "unreadable_event"]
        assert len(unreadable) == len(NASTY) and all(c["reason"] and c["detail"] for c in unreadable)
        assert [x["item"] for x in answers["/api/v1/loans"]["loans"]] == ["I1"]
        assert good.id in {e["id"] for e in answers["/api/v1/events?limit=100"]["events"]}
        # an admin puts one aside: voided, it leaves the conflict view
        first = unreadable[0]
        async with s.post(f"{base}/api/v1/conflicts/{first['id']}/resolution",
                          json={"action": "void", "event": first["events"][0]}, headers=auth) as r:
            assert r.status == 201, await r.text()
        async with s.get(base + "/api/v1/conflicts", headers=auth) as r:
            assert first["id"] not in {c["id"] for c in (await r.json())["conflicts"]}


async def test_a_restarted_desk_folds_its_unreadable_events_again(tmp_path: Path, monkeypatch) -> None:
    writer, = make_logs(tmp_path, 1)
    await writer.start()
    with monkeypatch.context() as m:
        _unchecked(m)
        for kind, body, at in NASTY:
            await _write_raw(writer, kind, body, at)
    await writer.store.commit([])
    writer.close()
    again, = make_logs(tmp_path, 1)
    assert len(again.events) == len(NASTY) and len(again.state.quarantined) == len(NASTY)
    _everything_is_printable(again)
    again.close()
