"""Enrolment with a one-time code: the pure protocol, the admin's store, and real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from node.trust.admissions import AdmissionStore, admit_with_code, approve_pending
from node.trust.ca import CertificateAuthority, create_ca
from node.trust.certs import fingerprint, verify_node_certificate
from node.trust.enrolment import (
    EnrolmentAnswer,
    EnrolmentError,
    JoinRequest,
    derive_code_key,
    holds_key,
    knows_code,
    make_join_request,
    new_code,
    normalise_code,
    open_answer,
)
from node.trust.enrolment_http import (
    enrolment_routes,
    request_enrolment,
    submit_join_request,
    wait_for_approval,
)
from node.trust.identity import node_id_for

ADMIN_TOKEN = "admin-secret-token"
CODE = "7KQM-2XHD"
CODE_KEY = derive_code_key(CODE)  # scrypt once for the module: it is slow on purpose
OTHER_KEY = derive_code_key("7KQM-2XHE")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return create_ca("Test cluster")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock) -> AdmissionStore:
    return AdmissionStore(clock=clock)


# --- codes -----------------------------------------------------------------------------------------


def test_codes_are_short_unambiguous_and_forgiving() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}", code)
    assert normalise_code("7kqm 2xhd") == "7KQM2XHD"
    assert normalise_code("ABCD-EFGO") == normalise_code("abcdefg0")
    assert normalise_code("1IL1-0O00") == "11110000"
    assert derive_code_key("7kqm2xhd") == CODE_KEY
    for bad in ("", "ABC", "ABCD-EFGH-J", "ABCD-EFG!", "ABCD-EFGU"):
        with pytest.raises(EnrolmentError) as err:
            normalise_code(bad)
        assert err.value.reason == "malformed"


# --- messages --------------------------------------------------------------------------------------


def test_request_proves_the_code_and_the_key() -> None:
    key = Ed25519PrivateKey.generate()
    request = make_join_request(CODE_KEY, key, "Desk 2")
    assert knows_code(request, CODE_KEY) and holds_key(request)
    assert not knows_code(request, OTHER_KEY)
    assert request.node_id == node_id_for(key.public_key())
    assert JoinRequest.from_json(json.loads(json.dumps(request.to_json()))) == request
    # A request for a key the sender does not hold: the MAC is fine, the signature is not.
    thief = make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "Desk 2", nonce=request.nonce)
    assert not holds_key(replace(thief, public_key=request.public_key))


def test_answer_round_trip(ca) -> None:
    store = AdmissionStore()
    store.add_code(CODE, CODE_KEY)
    key = Ed25519PrivateKey.generate()
    request = make_join_request(CODE_KEY, key, "Desk 3")
    answer = admit_with_code(store, ca, request)
    result = open_answer(CODE_KEY, request, EnrolmentAnswer.from_json(json.loads(json.dumps(answer.to_json()))))
    assert result.node_id == node_id_for(key.public_key())
    assert (result.cluster_id, result.desk_name, result.role) == (ca.cluster_id, "Desk 3", "desk")
    assert result.ca_fingerprint == fingerprint(ca.cert)
    assert verify_node_certificate(result.node_cert, ca.cert, set()).node_id == result.node_id


@pytest.mark.parametrize(
    "data",
    [None, [], {"v": 2}, {"v": 1}, {"v": 1, "desk_name": "x", "public_key": "!!", "nonce": "", "sig": "", "mac": ""}],
)
def test_malformed_requests_are_refused(data) -> None:
    with pytest.raises(EnrolmentError) as err:
        JoinRequest.from_json(data)
    assert err.value.reason == "malformed"


@pytest.fixture(scope="module")
def exchange(ca):
    """One genuine request and its answer, for the tampering properties."""
    store = AdmissionStore()
    store.add_code(CODE, CODE_KEY)
    request = make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "Tamper desk")
    return request, admit_with_code(store, ca, request)


def _changed(value: bytes | str, data: st.DataObject) -> bytes | str:
    """Any different value of the same type: a flipped bit, or something else altogether."""
    if isinstance(value, str):
        new = data.draw(st.one_of(
            st.text(max_size=60),
            st.integers(0, max(len(value) - 1, 0)).map(lambda i: value[:i] + chr(ord(value[i]) ^ 1) + value[i + 1:]
                                                       if value else "x"),
        ))
    else:
        new = data.draw(st.one_of(
            st.binary(max_size=70),
            st.integers(0, len(value) * 8 - 1).map(lambda b: bytes(
                c ^ (1 << (b % 8)) if i == b // 8 else c for i, c in enumerate(value))),
        ))
    if new == value:
        new = value + (b"\0" if isinstance(value, bytes) else "\0")
    return new


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(["public_key", "desk_name", "nonce", "signature", "mac"]), data=st.data())
def test_any_change_to_a_request_fails_the_mac(exchange, field, data) -> None:
    request, _ = exchange
    assert knows_code(request, CODE_KEY)
    tampered = replace(request, **{field: _changed(getattr(request, field), data)})
    assert not knows_code(tampered, CODE_KEY)


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(["node_cert", "ca_cert", "cluster_id", "mac"]), data=st.data())
def test_any_change_to_an_answer_is_rejected(exchange, field, data) -> None:
    request, answer = exchange
    assert open_answer(CODE_KEY, request, answer).desk_name == "Tamper desk"
    tampered = replace(answer, **{field: _changed(getattr(answer, field), data)})
    with pytest.raises(EnrolmentError):
        open_answer(CODE_KEY, request, tampered)


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["public_key", "nonce"]), data=st.data())
def test_an_answer_is_bound_to_its_request(exchange, field, data) -> None:
    request, answer = exchange
    other_request = replace(request, **{field: _changed(getattr(request, field), data)})
    with pytest.raises(EnrolmentError) as err:
        open_answer(CODE_KEY, other_request, answer)
    assert err.value.reason == "forged_answer"


def test_an_answer_under_another_code_is_rejected(exchange) -> None:
    request, answer = exchange
    with pytest.raises(EnrolmentError) as err:
        open_answer(OTHER_KEY, request, answer)
    assert err.value.reason == "forged_answer"


# --- the admin's store -----------------------------------------------------------------------------


def _reason(fn, *args) -> str:
    with pytest.raises(EnrolmentError) as err:
        fn(*args)
    return err.value.reason


def test_code_is_one_use(store, ca) -> None:
    store.add_code(CODE, CODE_KEY)
    first = make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "A")
    answer = admit_with_code(store, ca, first)
    assert admit_with_code(store, ca, first) == answer, "a retried request gets the same answer"
    second = make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "B")
    assert _reason(admit_with_code, store, ca, second) == "used"
    assert store.open_codes() == []


def test_code_expires(store, clock, ca) -> None:
    issued = store.add_code(CODE, CODE_KEY)
    assert issued.expires_at == clock.now + 15 * 60
    clock.now += 15 * 60 + 1
    request = make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "Late desk")
    assert _reason(admit_with_code, store, ca, request) == "expired"


def test_five_wrong_tries_burn_the_code(store, ca) -> None:
    store.add_code(CODE, CODE_KEY)
    wrong = make_join_request(OTHER_KEY, Ed25519PrivateKey.generate(), "Guesser")
    for left in (4, 3, 2, 1):
        with pytest.raises(EnrolmentError, match=f"{left} attempts left"):
            admit_with_code(store, ca, wrong)
        assert store.open_codes()[0].attempts_left == left
    assert _reason(admit_with_code, store, ca, wrong) == "wrong_code"
    assert store.open_codes() == []
    right = make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "Honest")
    assert _reason(admit_with_code, store, ca, right) == "burnt"


def test_code_carries_the_role(store, ca) -> None:
    store.add_code(CODE, CODE_KEY, role="admin")
    request = make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "Office")
    assert open_answer(CODE_KEY, request, admit_with_code(store, ca, request)).role == "admin"


def test_request_not_signed_by_its_key_is_refused(store, ca) -> None:
    store.add_code(CODE, CODE_KEY)
    good = make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "A")
    bad = replace(good, signature=bytes(64))
    assert _reason(admit_with_code, store, ca, bad) == "malformed"
    assert store.open_codes()[0].attempts_left == 5, "not counted as a guess, and nothing changed"


def test_pending_request_approved_with_the_joiners_code(store, ca) -> None:
    request = make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "New desk")
    rid = store.submit(request, "127.0.0.1")
    assert store.submit(request, "127.0.0.1") == rid
    [view] = store.pending()
    assert (view.desk_name, view.node_id) == ("New desk", request.node_id)
    assert store.status(rid) == ("pending", None)
    assert _reason(approve_pending, store, ca, rid, OTHER_KEY) == "wrong_code"
    assert store.pending()[0].attempts_left == 4
    approve_pending(store, ca, rid, CODE_KEY)
    state, answer = store.status(rid)
    assert state == "approved" and answer is not None
    assert open_answer(CODE_KEY, request, answer).desk_name == "New desk"
    assert store.pending() == []
    assert _reason(approve_pending, store, ca, rid, CODE_KEY) == "used"


def test_pending_request_burns_and_expires(store, clock, ca) -> None:
    a = store.submit(make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "A"))
    for _ in range(5):
        assert _reason(approve_pending, store, ca, a, OTHER_KEY) == "wrong_code"
    assert store.status(a) == ("burnt", None)
    assert _reason(approve_pending, store, ca, a, CODE_KEY) == "burnt"
    b = store.submit(make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "B"))
    clock.now += 15 * 60 + 1
    assert store.status(b) == ("expired", None)
    assert _reason(approve_pending, store, ca, b, CODE_KEY) == "expired"
    assert _reason(store.status, "no-such-id") == "unknown_request"


def test_pending_list_is_bounded(clock) -> None:
    store = AdmissionStore(clock=clock, max_pending=3)
    for i in range(3):
        store.submit(make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), f"D{i}"))
    assert _reason(store.submit, make_join_request(CODE_KEY, Ed25519PrivateKey.generate(), "D4")) == "busy"


# --- over real HTTP --------------------------------------------------------------------------------


async def admin_guard(request: web.Request) -> None:
    if request.headers.get("Authorization") != f"Bearer {ADMIN_TOKEN}":
        raise web.HTTPUnauthorized(text="admin sign-in needed")


@contextlib.asynccontextmanager
async def http_app(routes):
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def admin(store, ca):
    async with http_app(enrolment_routes(store, ca, admin_guard=admin_guard)) as url:
        yield url


async def admin_call(method: str, url: str, body: object | None = None, token: str = ADMIN_TOKEN):
    async with aiohttp.ClientSession() as session, session.request(
        method, url, json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        text = await resp.text()
    try:
        return resp.status, json.loads(text)
    except ValueError:
        return resp.status, text


async def test_http_enrolment_with_the_right_code(admin, store, ca) -> None:
    status, issued = await admin_call("POST", f"{admin}/enrol/codes", {})
    assert status == 201 and re.fullmatch(r"\w{4}-\w{4}", issued["code"])
    key = Ed25519PrivateKey.generate()
    host_port = admin.removeprefix("http://")
    result = await request_enrolment(host_port, issued["code"].lower(), key, "Children's desk")
    info = verify_node_certificate(result.node_cert, ca.cert, set())
    assert info.node_id == node_id_for(key.public_key()) == result.node_id
    assert info.desk_name == "Children's desk" and info.role == "desk"
    assert result.cluster_id == ca.cluster_id and result.ca_fingerprint == fingerprint(ca.cert)


async def test_http_wrong_code_is_refused_and_counted(admin, store) -> None:
    store.add_code(CODE, CODE_KEY)
    with pytest.raises(EnrolmentError, match="4 attempts left") as err:
        await request_enrolment(admin, "7KQM-2XHE", Ed25519PrivateKey.generate(), "Guess desk")
    assert err.value.reason == "wrong_code"
    assert store.open_codes()[0].attempts_left == 4


async def test_http_code_used_twice_is_refused(admin, store, ca) -> None:
    store.add_code(CODE, CODE_KEY)
    first = await request_enrolment(admin, CODE, Ed25519PrivateKey.generate(), "First")
    assert verify_node_certificate(first.node_cert, ca.cert, set()).desk_name == "First"
    with pytest.raises(EnrolmentError) as err:
        await request_enrolment(admin, CODE, Ed25519PrivateKey.generate(), "Second")
    assert err.value.reason == "used"


async def test_http_expired_code_is_refused(admin, store, clock) -> None:
    store.add_code(CODE, CODE_KEY)
    clock.now += 16 * 60
    with pytest.raises(EnrolmentError) as err:
        await request_enrolment(admin, CODE, Ed25519PrivateKey.generate(), "Slow desk")
    assert err.value.reason == "expired"


async def test_http_five_wrong_tries_burn_the_code(admin, store) -> None:
    store.add_code(CODE, CODE_KEY)
    wrong = derive_code_key("WRNG-C0DE")
    for _ in range(5):
        # Built by hand so the test does not pay scrypt five times; the wire format is the same.
        request = make_join_request(wrong, Ed25519PrivateKey.generate(), "Guesser")
        status, body = await admin_call("POST", f"{admin}/enrol/join", request.to_json(), token="")
        assert status == 403 and body["error"]["code"] == "wrong_code"
    with pytest.raises(EnrolmentError) as err:
        await request_enrolment(admin, CODE, Ed25519PrivateKey.generate(), "Honest desk")
    assert err.value.reason == "burnt"


async def test_http_refuses_malformed_bodies_and_changes_nothing(admin, store) -> None:
    store.add_code(CODE, CODE_KEY)
    async with aiohttp.ClientSession() as session:
        for body in (b"not json", b"[1,2]", b'{"v": 1}', b"{" + b" " * 20000 + b"}", b"\xff\xfe"):
            async with session.post(f"{admin}/enrol/join", data=body) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["code"] == "malformed"
        async with session.get(f"{admin}/enrol/requests/unknown?wait=abc") as resp:
            assert resp.status == 404
    assert store.open_codes()[0].attempts_left == 5


async def test_http_admin_routes_need_the_guard(admin) -> None:
    for method, path in (("POST", "/enrol/codes"), ("GET", "/enrol/pending"),
                         ("POST", "/enrol/pending/x/approve"), ("POST", "/enrol/pending/x/reject")):
        status, _ = await admin_call(method, admin + path, {}, token="wrong")
        assert status == 401, path


async def test_http_tampered_answer_is_rejected_by_the_joiner(store, ca) -> None:
    """A machine in the middle flips one byte of the admin's answer on its way back."""
    store.add_code(CODE, CODE_KEY)
    flipped: list[str] = []
    async with http_app(enrolment_routes(store, ca)) as real_admin:

        async def relay(request: web.Request) -> web.Response:
            async with aiohttp.ClientSession() as session, session.post(
                f"{real_admin}/enrol/join", data=await request.read(),
                headers={"Content-Type": "application/json"},
            ) as resp:
                answer = await resp.json()
            field = "cluster_id" if not flipped else "ca_cert"
            value = answer[field]
            i = len(value) // 2
            answer[field] = value[:i] + chr(ord(value[i]) ^ 1) + value[i + 1:]
            flipped.append(field)
            return web.json_response(answer)

        async with http_app([web.post("/enrol/join", relay)]) as middle:
            with pytest.raises(EnrolmentError) as err:
                await request_enrolment(middle, CODE, Ed25519PrivateKey.generate(), "Victim desk")
            assert err.value.reason == "forged_answer"
            store.add_code("P7QR-S9TV", derive_code_key("P7QR-S9TV"))
            with pytest.raises(EnrolmentError) as err:
                await request_enrolment(middle, "P7QR-S9TV", Ed25519PrivateKey.generate(), "Victim desk")
            assert err.value.reason == "forged_answer"
    assert flipped == ["cluster_id", "ca_cert"]


async def test_http_request_first_approved_by_the_admin(admin, store, ca) -> None:
    key = Ed25519PrivateKey.generate()
    pending = await submit_join_request(admin, key, "Reading room")
    assert re.fullmatch(r"\w{4}-\w{4}", pending.code)

    status, listing = await admin_call("GET", f"{admin}/enrol/pending")
    assert status == 200
    [entry] = listing["requests"]
    assert entry["desk_name"] == "Reading room" and entry["node_id"] == node_id_for(key.public_key())

    approve_url = f"{admin}/enrol/pending/{pending.request_id}/approve"
    status, body = await admin_call("POST", approve_url, {"code": "WRNG-C0DE"})
    assert status == 403 and body["error"]["code"] == "wrong_code"
    status, body = await admin_call("POST", approve_url, {"code": pending.code.lower(), "role": "admin"})
    assert status == 200 and body["node_id"] == node_id_for(key.public_key())

    result = await wait_for_approval(pending, give_up_after=20)
    assert result.role == "admin" and result.desk_name == "Reading room"
    assert verify_node_certificate(result.node_cert, ca.cert, set()).node_id == result.node_id


async def test_http_request_first_long_poll_wakes_on_approval(store, ca) -> None:
    """The joiner's poll is already parked on the admin desk when the admin approves: it wakes at once
    (the poll asks to wait 25 s; the test gives it 10)."""
    polling = asyncio.Event()

    @web.middleware
    async def note_polls(request: web.Request, handler):
        if request.method == "GET" and request.path.startswith("/enrol/requests/"):
            polling.set()
        return await handler(request)

    app = web.Application(middlewares=[note_polls])
    app.add_routes(enrolment_routes(store, ca, admin_guard=admin_guard))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        host, port = runner.addresses[0][:2]
        url = f"http://{host}:{port}"
        pending = await submit_join_request(url, Ed25519PrivateKey.generate(), "Waiting desk")

        async def poll() -> dict:
            async with aiohttp.ClientSession() as session, session.get(
                f"{url}/enrol/requests/{pending.request_id}?wait=25"
            ) as resp:
                return await resp.json()

        poller = asyncio.create_task(poll())
        await asyncio.wait_for(polling.wait(), 10)
        status, _ = await admin_call("POST", f"{url}/enrol/pending/{pending.request_id}/approve",
                                     {"code": pending.code})
        assert status == 200
        body = await asyncio.wait_for(poller, 10)
        assert body["state"] == "approved"
        answer = EnrolmentAnswer.from_json(body["answer"])
        assert open_answer(pending.code_key, pending.request, answer).desk_name == "Waiting desk"
    finally:
        await runner.cleanup()


async def test_http_request_first_rejected(admin, store) -> None:
    pending = await submit_join_request(admin, Ed25519PrivateKey.generate(), "Unknown PC")
    status, _ = await admin_call("POST", f"{admin}/enrol/pending/{pending.request_id}/reject")
    assert status == 200
    with pytest.raises(EnrolmentError) as err:
        await wait_for_approval(pending, give_up_after=10)
    assert err.value.reason == "rejected"
