"""`circmesh demo`: a whole cluster of desks on 127.0.0.1, each a real `circmesh run` process."""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DESK_NAMES = ["Front desk", "Children's desk", "Returns", "Study room", "Mobile library", "Annex",
              "Reading room", "Music", "Local history"]
READY_TIMEOUT = 60.0
CHILD_STOP_TIMEOUT = 10.0  # a desk stops within 5 s, or cuts its own stop short at 8 s; then it is killed
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PATRON_PATTERN = "^23"  # the demo library's cards are 23…, its items 39…


def demo_users() -> list[dict[str, str]]:
    """A staff and an admin sign-in with fresh passwords for this run (printed, and in demo.json)."""
    def password() -> str:
        return "-".join(secrets.token_hex(2) for _ in range(3))

    return [{"name": "desk", "password": password(), "role": "staff"},
            {"name": "admin", "password": password(), "role": "admin"}]


def enrol_desk(data: Path, i: int, desk: str) -> None:
    """Desk 1 creates the demo cluster (it holds the CA, as after `circmesh init`); the other desks are
    admitted with its CA directly, as `circmesh join` with a one-time code would leave them."""
    from node.cluster import CLUSTER_FILE, admit_locally, init_cluster
    from node.trust.ca import load_ca
    from node.trust.identity import load_or_create_identity

    data_dir = data / f"desk-{i}"
    if (data_dir / CLUSTER_FILE).exists():
        return
    identity = load_or_create_identity(data_dir)
    if i == 1:
        init_cluster(data_dir, identity, desk, "Demo library")
    else:
        admit_locally(load_ca(data / "desk-1" / "ca"), data_dir, identity, desk, "desk")


def prepare_desk(data_dir: Path, users: list[dict[str, str]]) -> None:
    """The demo's sign-ins and desk settings, written before the desk starts."""
    from node.api.users import UserStore

    store = UserStore(data_dir)
    for user in users:
        store.add(user["name"], user["password"], user["role"])
    (data_dir / "ui.json").write_text(json.dumps({"patron_pattern": PATRON_PATTERN}) + "\n")


def example_barcodes(ils: dict[str, str]) -> tuple[str | None, str | None]:
    """A real patron and a real item of the simulated library, for the printed examples."""
    import base64
    import urllib.request

    auth = base64.b64encode(f"{ils['user']}:{ils['password']}".encode()).decode()

    def first(path: str, field: str) -> str | None:
        request = urllib.request.Request(f"{ils['http']}{path}", headers={"Authorization": f"Basic {auth}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as r:  # loopback only: the demo's own simulator
                rows = json.load(r)
            return str(rows[0][field]) if rows else None
        except (OSError, ValueError, KeyError, IndexError):
            return None

    return first("/api/v1/patrons?_per_page=1&_page=3", "cardnumber"), first(
        "/api/v1/items?_per_page=1&_page=7", "external_id")


class Stopped(BaseException):
    """A stop signal reached the demo (a BaseException, like KeyboardInterrupt: no `except Exception` eats it)."""


class Children:
    """The processes the demo started, and its stop signals: SIGINT, SIGTERM or SIGHUP stop them all.

    A stop signal raises Stopped only inside `interruptible()` waits; anywhere else it is noted and acted on
    at the next one, so it never lands between starting a child and listing it, or inside stop(). The
    children run in their own process groups: a Ctrl-C in the terminal reaches the demo only, and each child
    gets exactly one SIGTERM from it (a second signal would make a desk cut its stop short). Another stop
    signal once stopping kills the children at once."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.signum: int | None = None
        self._interruptible = False
        self._stopping = False

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: object) -> None:
        if self.signum is not None or self._stopping:
            self.signum = self.signum or signum
            self.kill()  # asked again: no more waiting
            return
        self.signum = signum
        if self._interruptible:
            self._interruptible = False
            raise Stopped

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A wait that a stop signal may cut short."""
        self.check()
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False
        self.check()

    def check(self) -> None:
        if self.signum is not None:
            raise Stopped

    def spawn(self, argv: list[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, process_group=0)
        self.procs.append(proc)
        return proc

    def kill(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(OSError):
                    p.kill()

    def stop(self) -> None:
        """SIGTERM to each child, CHILD_STOP_TIMEOUT seconds for all of them to exit, then SIGKILL."""
        self._stopping = True
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
        self.kill()
        for p in self.procs:
            p.wait()


def start_process(children: Children, argv: list[str], name: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Starts a child that prints one JSON ready line on stdout; returns it and that line."""
    proc = children.spawn(argv)
    deadline = time.monotonic() + READY_TIMEOUT
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        with children.interruptible():
            line = proc.stdout.readline()
        if not line:
            break
        try:
            ready = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ready, dict) and ready.get("ready"):
            return proc, ready
    proc.kill()
    raise RuntimeError(f"{name} did not start (exit code {proc.poll()})")


def run_demo(args: argparse.Namespace) -> int:
    n = args.desks
    if not 1 <= n <= len(DESK_NAMES):
        print(f"circmesh demo: --desks must be 1-{len(DESK_NAMES)}", file=sys.stderr)
        return 2
    base: int = args.port
    data: Path = args.data
    data.mkdir(parents=True, exist_ok=True)
    children = Children()
    children.install()
    procs = children.procs
    desks = []
    users = demo_users()
    try:
        ils_argv = [sys.executable, "-m", "node.ilsbridge.sim", "--data", str(data / "ils"),
                    "--http-port", str(base), "--sip-port", str(base + 1)]
        _, ils = start_process(children, ils_argv, "the ILS simulator")
        credentials = data / "ils-credentials"
        credentials.touch(mode=0o600)
        credentials.write_text(f"user={ils['user']}\npassword={ils['password']}\n")
        for i in range(1, n + 1):
            prepare_desk(data / f"desk-{i}", users)
            enrol_desk(data, i, DESK_NAMES[i - 1])
            # mDNS on 127.0.0.1 finds the other desks; the static addresses are a second way to them
            peers = [arg for j in range(1, n + 1) if j != i for arg in ("--peer", f"127.0.0.1:{base + 50 + j}")]
            argv = [sys.executable, "-m", "node.cli", "run", "--data", str(data / f"desk-{i}"),
                    "--desk", DESK_NAMES[i - 1], "--port", str(base + 10 + i), "--peer-port", str(base + 50 + i),
                    "--interface", "127.0.0.1", "--log-level", "WARNING", *peers]
            if i == 1:  # the first desk is the bridge to the ILS; it creates patrons registered at the desks
                argv += ["--ils", f"koha+http://{ils['http']}?branchcode=MAIN&category=ADULT",
                         "--ils-credentials", str(credentials)]
            _, ready = start_process(children, argv, DESK_NAMES[i - 1])
            desks.append({"name": DESK_NAMES[i - 1], "url": ready["url"], "node": ready["node"]})
        ils_info = {"http": f"http://{ils['http']}", "sip2": ils["sip2"], "user": ils["user"],
                    "password": ils["password"]}
        demo = {"ils": ils_info, "desks": [{"name": d["name"], "url": d["url"]} for d in desks], "users": users}
        (data / "demo.json").write_text(json.dumps(demo, indent=2) + "\n")
        print(f"circmesh demo: {n} desks running (data in {data}/, details in {data / 'demo.json'})")
        for d in desks:
            print(f"  {d['name']:<16} {d['url']}/   API: {d['url']}/api/v1/status")
        print("Sign in with " + ", ".join(f"{u['name']} / {u['password']} ({u['role']})" for u in users))
        url, admin = desks[0]["url"], users[-1]
        sign_in = f"{{\"name\":\"{admin['name']}\",\"password\":\"{admin['password']}\"}}"
        print("Try:  TOKEN=$(curl -s -H 'Content-Type: application/json' "
              f"-d '{sign_in}' {url}/api/v1/session"
              " | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"token\"])')")
        print("      curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' "
              f"-d '{{\"patron\":\"23000000000003\",\"item\":\"39000000000007\"}}' {url}/api/v1/checkouts")
        with children.interruptible():
            patron, item = example_barcodes(ils_info)
        if patron and item:
            print(f"      (a patron of the demo library: {patron}; an item on the shelf: {item})")
        print(f"The ILS simulator (Koha offline service, REST, SIP2 on {ils['sip2']}) runs at {ils_info['http']};"
              f" {desks[0]['name']} is the bridge that uploads to it.")
        print("Take the ILS offline, scan, then bring it back and watch the upload:")
        for online in ("false", "true"):
            print(f"      curl -s -X POST -H 'Content-Type: application/json' -d '{{\"online\": {online}}}' "
                  f"{ils_info['http']}/sim/state")
        print("Press Ctrl-C to stop (or send SIGTERM or SIGHUP).", flush=True)
        while all(p.poll() is None for p in procs):
            with children.interruptible():
                time.sleep(0.5)
        print("circmesh demo: a desk stopped; stopping the others", file=sys.stderr)
        return 1
    except Stopped:
        print(f"\ncircmesh demo: {signal.Signals(children.signum or signal.SIGTERM).name}; stopping", flush=True)
        return 0
    finally:
        children.stop()
