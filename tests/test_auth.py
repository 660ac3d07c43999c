"""Staff sign-in: the argon2 user store and `circmesh user`, sessions that expire, CSRF on cookie sessions,
bearer tokens for scripts, slowing sign-in down after five bad passwords, admin-only conflict settlement,
and the web UI's files served with a strict policy. Real desk, real HTTP on loopback."""

from __future__ import annotations

import json
import os
import stat
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.api.sessions import SessionStore, SignInThrottle
from node.api.users import UserError, UserStore, normal_name
from tests.procs import TEST_PASSWORD, TEST_USER, add_user

REPO = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- the user store and the command


def test_user_store_hashes_with_argon2_in_a_private_file(tmp_path: Path) -> None:
    store = UserStore(tmp_path)
    assert store.add("Anna", "s3cret-pass", "staff") is True
    raw = (tmp_path / "users.json").read_text()
    assert "s3cret-pass" not in raw and "$argon2id$" in raw
    assert stat.S_IMODE((tmp_path / "users.json").stat().st_mode) == 0o600
    assert store.verify("anna", "s3cret-pass").role == "staff"  # names ignore case
    assert store.verify("Anna", "wrong-pass") is None
    assert store.verify("nobody", "s3cret-pass") is None
    assert store.verify("Anna", 12345) is None  # not text: refused, not crashed
    assert store.add("ANNA", "new-pass-1", "admin") is False  # same user: password and role replaced
    assert store.verify("anna", "s3cret-pass") is None and store.verify("anna", "new-pass-1").role == "admin"
    with pytest.raises(UserError):
        store.add("bob", "x", "staff")  # too short
    with pytest.raises(UserError):
        store.add("bob", "long-enough", "boss")
    with pytest.raises(UserError):
        store.add("bo\tb", "long-enough", "staff")


def test_a_running_store_sees_users_added_by_another_process(tmp_path: Path) -> None:
    running = UserStore(tmp_path)
    assert running.verify("late", "late-pass") is None
    UserStore(tmp_path).add("late", "late-pass", "staff")
    assert running.verify("late", "late-pass") is not None
    assert UserStore(tmp_path).remove("late")
    assert running.verify("late", "late-pass") is None


def test_a_damaged_user_file_lets_no_one_in_and_does_not_crash(tmp_path: Path) -> None:
    store = UserStore(tmp_path)
    store.add("anna", "s3cret-pass", "admin")
    for damage in ("{not json", '{"users": [{"name": "anna"}]}', "[1, 2]", '{"users": [{"name": "anna", '
                   '"role": "emperor", "hash": "x"}]}'):
        (tmp_path / "users.json").write_text(damage)
        assert store.verify("anna", "s3cret-pass") is None
        assert store.get("anna") is None


@given(st.text(min_size=1, max_size=40))
def test_user_names_normalise_stably(name: str) -> None:
    try:
        key = normal_name(name)
    except UserError:
        return
    assert normal_name(key) == key


@given(st.text(alphabet=string.ascii_letters + string.digits + " .-", min_size=1, max_size=40))
def test_user_names_ignore_case(name: str) -> None:
    if not name.strip():
        return
    assert normal_name(name.upper()) == normal_name(name.lower()) == normal_name(name)


def _cli(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node.cli", "user", *args], input=stdin, text=True,
                          capture_output=True, cwd=REPO, env=env, timeout=60)


def test_circmesh_user_add_reads_the_password_from_env_or_stdin_never_a_flag(tmp_path: Path) -> None:
    data = tmp_path / "desk"
    env = {k: v for k, v in os.environ.items() if k != "CIRCMESH_PASSWORD"}
    done = _cli("add", "--data", str(data), "--name", "maria", "--role", "admin",
                env=env | {"CIRCMESH_PASSWORD": "from-the-env"})
    assert done.returncode == 0, done.stderr
    done = _cli("add", "--data", str(data), "--name", "jan", env=env, stdin="from-stdin\n")
    assert done.returncode == 0, done.stderr
    store = UserStore(data)
    assert store.verify("maria", "from-the-env").role == "admin"
    assert store.verify("jan", "from-stdin").role == "staff"
    listed = _cli("list", "--data", str(data), env=env)
    assert listed.stdout.split() == ["jan", "staff", "maria", "admin"]
    refused = _cli("add", "--data", str(data), "--name", "x", "--password", "on-the-command-line", env=env)
    assert refused.returncode != 0 and UserStore(data).get("x") is None
    short = _cli("add", "--data", str(data), "--name", "y", env=env, stdin="abc\n")
    assert short.returncode == 2 and "password" in short.stderr


# ---- sessions and throttling (pure, with a clock)


def test_sessions_expire_when_idle_and_after_an_absolute_limit() -> None:
    clock = Clock()
    store = SessionStore(idle_s=100, absolute_s=250, clock=clock)
    issued = store.create("anna", "staff")
    assert store.get(issued.token).name == "anna"
    clock.now += 90
    assert store.get(issued.token) is not None  # touched: idle time starts again
    clock.now += 90
    assert store.get(issued.token) is not None
    clock.now += 101
    assert store.get(issued.token) is None  # idle too long
    other = store.create("anna", "staff")
    for _ in range(5):
        clock.now += 60
        store.get(other.token)
    assert store.get(other.token) is None  # 300 s > absolute limit, although never idle
    assert store.get("made-up") is None and store.get("") is None and store.get("x" * 500) is None
    third = store.create("bob", "admin")
    assert store.end(third.token) and store.get(third.token) is None
    assert third.session.csrf != third.token


def test_five_bad_passwords_in_a_row_slow_the_next_attempt_down() -> None:
    clock = Clock()
    throttle = SignInThrottle(clock=clock)
    keys = ["name:anna"]
    for _ in range(4):
        assert throttle.failed(keys) == 0
        assert throttle.wait_s(keys) == 0
    assert throttle.failed(keys) == 2.0  # the fifth
    assert throttle.wait_s(keys) == 2.0
    clock.now += 2.0
    assert throttle.wait_s(keys) == 0
    assert throttle.failed(keys) == 4.0  # and doubling
    clock.now += 4.0
    waits = [throttle.failed(keys) for _ in range(20)]
    assert waits[-1] == throttle.max_delay and waits == sorted(waits)
    throttle.succeeded(keys)
    assert throttle.wait_s(keys) == 0 and throttle.failures("name:anna") == 0
    assert throttle.wait_s(["name:someone-else"]) == 0


# ---- over HTTP, on a real desk


def url(desk: Any, path: str) -> str:
    return f"http://127.0.0.1:{desk.port}{path}"


async def sign_in(session: aiohttp.ClientSession, desk: Any, name: str, password: str) -> tuple[int, Any]:
    async with session.post(url(desk, "/api/v1/session"), json={"name": name, "password": password}) as r:
        return r.status, await r.json()


@pytest.fixture
async def browser_like(desk):
    """A client that keeps cookies like a browser (aiohttp keeps them per host)."""
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for an IP address host
    async with aiohttp.ClientSession(cookie_jar=jar) as s:
        yield s


async def test_everything_under_api_needs_a_session_but_the_ui_and_sign_in(desk) -> None:
    async with aiohttp.ClientSession() as s:
        for method, path in (("GET", "/api/v1/status"), ("GET", "/api/v1/loans"),
                             ("GET", "/api/v1/conflicts"), ("POST", "/api/v1/checkouts"),
                             ("GET", "/api/v1/events")):
            async with s.request(method, url(desk, path), json={"patron": "P", "item": "I"}) as r:
                assert r.status == 401, path
                assert (await r.json())["error"]["code"] == "signed_out"
        async with s.get(url(desk, "/api/v1/live")) as r:
            assert r.status == 401
        async with s.get(url(desk, "/api/v1/ui-config")) as r:
            config = await r.json()
            assert config["desk"] == "Front desk" and config["node"] == desk.node_id
        async with s.get(url(desk, "/")) as r:
            assert r.status == 200 and "text/html" in r.headers["Content-Type"]
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with s.get(url(desk, "/js/main.js")) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
        for bad in ("/js/../../node/api/auth.py", "/js/%2e%2e/%2e%2e/pyproject.toml", "/css/nothing.css",
                    "/i18n/../index.html"):
            async with s.get(url(desk, bad)) as r:
                assert r.status == 404, bad
        async with s.get(url(desk, "/i18n/index.json")) as r:
            codes = [lang["code"] for lang in (await r.json())["languages"]]
            assert set(codes) == {"en", "de", "cs", "zh-CN"}
    assert desk.log.seq == 0


async def test_cookie_sessions_need_the_csrf_token_bearer_tokens_do_not(desk, browser_like) -> None:
    add_user(desk.config.data_dir, "clerk", "clerk-pass-1", "staff")
    status, body = await sign_in(browser_like, desk, "Clerk", "clerk-pass-1")
    assert status == 200 and body["role"] == "staff" and body["csrf"] and body["token"]
    cookie = next(iter(browser_like.cookie_jar))
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie.value == body["token"]

    async with browser_like.get(url(desk, "/api/v1/session")) as r:
        assert (await r.json())["name"] == "clerk"
    async with browser_like.post(url(desk, "/api/v1/checkouts"), json={"patron": "P1", "item": "I1"}) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "csrf"
    async with browser_like.post(url(desk, "/api/v1/checkouts"), json={"patron": "P1", "item": "I1"},
                                 headers={"X-CSRF-Token": "not-it"}) as r:
        assert r.status == 403
    assert desk.log.seq == 0  # nothing recorded
    foreign = {"X-CSRF-Token": body["csrf"], "Origin": "http://evil.example"}
    async with browser_like.post(url(desk, "/api/v1/checkouts"), json={"patron": "P1", "item": "I1"},
                                 headers=foreign) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "cross_site"
    async with browser_like.post(url(desk, "/api/v1/checkouts"), json={"patron": "P1", "item": "I1"},
                                 headers={"X-CSRF-Token": body["csrf"]}) as r:
        created = await r.json()
        assert r.status == 201 and created["event"]["staff"] == "clerk"

    async with aiohttp.ClientSession() as script:  # a script with the token: no cookie, no CSRF token
        bearer = {"Authorization": f"Bearer {body['token']}"}
        async with script.post(url(desk, "/api/v1/checkins"), json={"item": "I1"}, headers=bearer) as r:
            assert r.status == 201
        async with script.post(url(desk, "/api/v1/checkins"), json={"item": "I1"},
                               headers={"Authorization": "Bearer forged"}) as r:
            assert r.status == 401
        # the live feed refuses a page of another site riding on the cookie
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await browser_like.ws_connect(url(desk, "/api/v1/live"), headers={"Origin": "http://evil.example"})
        ws = await script.ws_connect(url(desk, "/api/v1/live"), headers=bearer)
        await ws.close()

    async with browser_like.delete(url(desk, "/api/v1/session"), headers={"X-CSRF-Token": body["csrf"]}) as r:
        assert r.status == 200
    async with aiohttp.ClientSession() as script:
        bearer = {"Authorization": f"Bearer {body['token']}"}
        async with script.get(url(desk, "/api/v1/status"), headers=bearer) as r:
            assert r.status == 401  # signed out everywhere that session was used


async def test_a_removed_user_loses_the_session_at_the_next_request(desk) -> None:
    add_user(desk.config.data_dir, "temp", "temp-pass-1", "admin")
    async with aiohttp.ClientSession() as s:
        _, body = await sign_in(s, desk, "temp", "temp-pass-1")
        bearer = {"Authorization": f"Bearer {body['token']}"}
        async with s.get(url(desk, "/api/v1/status"), headers=bearer) as r:
            assert r.status == 200
        UserStore(desk.config.data_dir).remove("temp")
        async with s.get(url(desk, "/api/v1/status"), headers=bearer) as r:
            assert r.status == 401


async def test_bad_passwords_five_times_then_sign_in_waits(desk) -> None:
    add_user(desk.config.data_dir, "victim", "right-pass-1", "staff")
    async with aiohttp.ClientSession() as s:
        for i in range(5):
            status, body = await sign_in(s, desk, "victim", f"wrong-{i}")
            assert status == 401 and body["error"]["code"] == "bad_password"
        assert body["retry_after"] >= 2  # the fifth says how long the next must wait
        status, body = await sign_in(s, desk, "victim", "right-pass-1")  # even the right password waits
        assert status == 429 and body["error"]["code"] == "throttled" and body["retry_after"] >= 1
        # another user at the same desk is not locked out by it
        status, body = await sign_in(s, desk, TEST_USER, TEST_PASSWORD)
        assert status == 200
        # bad input is refused without a crash and without changing anything
        for raw in (b"{", b"[]", json.dumps({"name": 1, "password": 2}).encode(),
                    json.dumps({"name": "a", "password": "b", "extra": 1}).encode()):
            async with s.post(url(desk, "/api/v1/session"), data=raw,
                              headers={"Content-Type": "application/json"}) as r:
                assert r.status == 400


async def _admin_client(desk, role: str = "admin") -> tuple[aiohttp.ClientSession, dict[str, str]]:
    name = f"{role}-user"
    add_user(desk.config.data_dir, name, "role-pass-1", role)
    session = aiohttp.ClientSession()
    _, body = await sign_in(session, desk, name, "role-pass-1")
    return session, {"Authorization": f"Bearer {body['token']}"}


async def _post(s, desk, path, body, headers) -> tuple[int, Any]:
    async with s.post(url(desk, path), json=body, headers=headers) as r:
        return r.status, await r.json()


async def _conflicts(s, desk, headers) -> list[dict[str, Any]]:
    async with s.get(url(desk, "/api/v1/conflicts"), headers=headers) as r:
        return (await r.json())["conflicts"]


async def test_admins_settle_conflicts_with_void_keep_accept_and_apply(desk) -> None:
    s, auth = await _admin_client(desk)
    staff_s, staff_auth = await _admin_client(desk, "staff")
    try:
        # duplicate registration (needs an admin), a double checkin, and two loans seen and overridden
        for name in ("Ann One", "Ann Two"):
            registration = {"patron": "R1", "name": name}
            assert (await _post(s, desk, "/api/v1/registrations", registration, auth))[0] == 201
        for _ in range(2):
            assert (await _post(s, desk, "/api/v1/checkins", {"item": "C1"}, auth))[0] == 201
        assert (await _post(s, desk, "/api/v1/checkouts", {"patron": "P1", "item": "L1"}, auth))[0] == 201
        status, _ = await _post(s, desk, "/api/v1/checkouts", {"patron": "P2", "item": "L1"}, auth)
        assert status == 409
        assert (await _post(s, desk, "/api/v1/checkouts", {"patron": "P2", "item": "L1", "override": True},
                            auth))[0] == 201
        assert (await _post(s, desk, "/api/v1/checkouts", {"patron": "P1", "item": "L2"}, auth))[0] == 201
        assert (await _post(s, desk, "/api/v1/checkouts", {"patron": "P3", "item": "L2", "override": True},
                            auth))[0] == 201
        found = {c["kind"] + "/" + (c["item"] or ""): c for c in await _conflicts(s, desk, auth)}
        assert set(found) == {"duplicate_registration/", "checkin_not_on_loan/C1", "lent_while_on_loan/L1",
                              "lent_while_on_loan/L2"}
        reg, twice = found["duplicate_registration/"], found["checkin_not_on_loan/C1"]
        path = "/api/v1/conflicts/{}/resolution"

        # staff may not, wrong requests change nothing
        assert (await _post(staff_s, desk, path.format(reg["id"]), {"action": "apply"}, staff_auth))[0] == 403
        assert (await _post(s, desk, path.format(reg["id"]), {"action": "shred"}, auth))[0] == 400
        stranger = {"action": "keep", "event": "x:1"}
        assert (await _post(s, desk, path.format(reg["id"]), stranger, auth))[0] == 400
        assert (await _post(s, desk, path.format(reg["id"]), {"action": "apply", "event": reg["events"][0]},
                            auth))[0] == 400
        assert (await _post(s, desk, path.format("no/such+thing"), {"action": "apply"}, auth))[0] == 404
        seq = desk.log.seq

        keep = {"action": "keep", "event": reg["events"][0], "note": "the first card is right"}
        status, body = await _post(s, desk, path.format(reg["id"]), keep, auth)
        # one answer, one event: the fold derives the void of the other registration from it
        assert status == 201 and [e["kind"] for e in body["events"]] == ["resolve"]
        assert body["events"][0]["body"] == {"conflict": reg["id"], "action": "keep", "event": reg["events"][0],
                                             "note": "the first card is right"}
        assert desk.log.state.voided.get(reg["events"][1]) == body["events"][0]["id"]
        status, body = await _post(s, desk, path.format(twice["id"]),
                                   {"action": "void", "event": twice["events"][1]}, auth)
        assert status == 201 and body["events"][0]["body"]["event"] == twice["events"][1]
        assert twice["events"][1] in desk.log.state.voided
        status, body = await _post(s, desk, path.format(found["lent_while_on_loan/L1"]["id"]),
                                   {"action": "accept_ils"}, auth)
        assert status == 201 and body["events"][0]["kind"] == "resolve"
        assert body["events"][0]["body"]["action"] == "accept_ils"
        status, body = await _post(s, desk, path.format(found["lent_while_on_loan/L2"]["id"]),
                                   {"action": "apply", "note": "both real"}, auth)
        assert status == 201 and body["events"][0]["body"] == {
            "conflict": found["lent_while_on_loan/L2"]["id"], "action": "apply", "note": "both real"}
        assert desk.log.seq == seq + 4
        assert await _conflicts(s, desk, auth) == []
        assert (await _post(s, desk, path.format(reg["id"]), {"action": "apply"}, auth))[0] == 404
        assert (await _post(s, desk, path.format(found["lent_while_on_loan/L2"]["id"]), {"action": "apply"},
                            auth))[0] == 409
    finally:
        await s.close()
        await staff_s.close()
