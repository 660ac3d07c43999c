"""Four enrolled desks on a virtual LAN (network namespaces joined by a bridge), each a real node started
with no --peer at all: they find each other by mDNS on their LAN address and converge; a desk whose link
is cut keeps taking scans and catches up when it comes back; a LAN split in two heals."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path

import pytest

from tests.lan import VirtualLan, stop, virtual_lan
from tests.procs import TEST_PASSWORD, TEST_USER, add_user
from tests.provision import provision

pytestmark = pytest.mark.multiprocess

lan = virtual_lan(4)
CLIENT = str(Path(__file__).resolve().parent / "lan_client.py")
API = "http://127.0.0.1:8080/api/v1"  # each desk's API on the loopback of its own namespace
N = 4


class LanCluster:
    def __init__(self, lan: VirtualLan, root: Path) -> None:
        self.lan, self.root = lan, root
        self.procs: dict[int, asyncio.subprocess.Process] = {}

    async def start(self, i: int) -> None:
        data = self.root / f"desk-{i}"
        add_user(data, TEST_USER, TEST_PASSWORD, "admin")
        provision(data, f"Desk {i}")
        address = self.lan.address(i)
        argv = [sys.executable, "-m", "node.cli", "run", "--data", str(data), "--desk", f"Desk {i}",
                "--port", "8080", "--peer-host", address, "--peer-port", "9000", "--interface", address,
                "--log-level", "WARNING"]
        proc = await self.lan.spawn(i, argv, stderr=asyncio.subprocess.DEVNULL)
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while not json.loads(await proc.stdout.readline() or b'{"ready": false, "eof": true}').get("ready"):
                if proc.returncode is not None:
                    raise RuntimeError(f"desk {i} exited")
        self.procs[i] = proc

    async def api(self, i: int, method: str, path: str, body: object | None = None) -> dict:
        argv = [sys.executable, CLIENT, method, f"{API}{path}"] + ([json.dumps(body)] if body is not None else [])
        code, out, err = await self.lan.run(i, argv, limit_s=30)
        assert code == 0, err
        return json.loads(out)

    async def scan(self, i: int, item: str, patron: str = "23000001") -> str:
        answer = await self.api(i, "POST", "/checkouts", {"patron": patron, "item": item})
        assert "event" in answer, answer
        return answer["event"]["id"]

    async def events(self, i: int) -> set[str]:
        page = await self.api(i, "GET", "/events?after=0&limit=10000")
        return {e["id"] for e in page["events"]}

    async def wait(self, predicate, what: str, within: float = 90.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(AssertionError, json.JSONDecodeError, TimeoutError):
                if await predicate():
                    return
            await asyncio.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}")

    async def converged(self, expected: set[str]) -> bool:
        sets = [await self.events(i) for i in range(1, N + 1)]
        return all(s == expected for s in sets)

    async def stop(self) -> None:
        for proc in self.procs.values():
            await stop(proc)


async def test_desks_find_each_other_converge_and_heal(lan: VirtualLan, tmp_path: Path) -> None:
    cluster = LanCluster(lan, tmp_path)
    try:
        await asyncio.gather(*(cluster.start(i) for i in range(1, N + 1)))

        async def meshed() -> bool:
            for i in range(1, N + 1):
                status = await cluster.api(i, "GET", "/status")
                if sum(p["connected"] for p in status["peers"]) < N - 1:
                    return False
            return True

        await cluster.wait(meshed, "four desks linked by mDNS alone")
        scans = {await cluster.scan(i, f"A{i}") for i in range(1, N + 1)}
        await cluster.wait(lambda: cluster.converged(scans), "first convergence")

        # desk 4's cable is pulled: it keeps lending, so do the others; then it is plugged back in
        await lan.cut(4)
        scans |= {await cluster.scan(4, f"CUT{k}") for k in range(5)}
        scans |= {await cluster.scan(1, f"ON{k}") for k in range(5)}
        assert not (await cluster.events(1)) >= scans  # really cut: desk 1 lacks desk 4's scans
        await lan.restore(4)
        await cluster.wait(lambda: cluster.converged(scans), "desk 4 caught up")

        # the LAN splits in two; both halves lend; it heals
        await lan.split([1, 2], [3, 4])
        scans |= {await cluster.scan(2, f"LEFT{k}") for k in range(3)}
        scans |= {await cluster.scan(3, f"RIGHT{k}") for k in range(3)}
        await lan.heal()
        await cluster.wait(lambda: cluster.converged(scans), "the split LAN healed")
        loans = [await cluster.api(i, "GET", "/loans") for i in range(1, N + 1)]
        items = [sorted(x["item"] for x in body["loans"]) for body in loans]
        assert items[0] == items[1] == items[2] == items[3] and len(items[0]) == len(scans)
    finally:
        await cluster.stop()
