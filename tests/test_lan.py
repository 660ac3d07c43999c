"""The virtual LAN: desks in network namespaces that reach each other, until cut or split; mDNS across it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable

from tests.lan import PYTHON, REPO, VirtualLan, stop, virtual_lan

lan = virtual_lan(3)

# A TCP echo server: binds the address given, port 0, prints the port, echoes one line per connection.
ECHO_SERVER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen()
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    with c:
        c.settimeout(2)
        c.sendall(c.recv(100))
"""

# Connects with a short timeout; exit 0 only if the echo came back.
ECHO_CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.7) as c:
        c.sendall(b"ping")
        sys.exit(0 if c.recv(10) == b"ping" else 3)
except OSError as e:
    print(type(e).__name__, e)
    sys.exit(2)
"""


async def start_echo(lan: VirtualLan, desk: int) -> int:
    server = await lan.spawn(desk, [PYTHON, "-c", ECHO_SERVER, lan.address(desk)])
    assert server.stdout is not None
    return int(await asyncio.wait_for(server.stdout.readline(), 10))


async def reaches(lan: VirtualLan, client: int, server: int, port: int) -> bool:
    status, _, _ = await lan.run(client, [PYTHON, "-c", ECHO_CLIENT, lan.address(server), str(port)])
    return status == 0


async def eventually(check: Callable[[], Awaitable[bool]], what: str, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {limit_s} s waiting for {what}")


async def host_links() -> list[str]:
    process = await asyncio.create_subprocess_exec("ip", "-o", "link", "show", stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    return sorted(line.split(":")[1].strip() for line in out.decode().splitlines())


async def test_desks_reach_each_other_until_cut_or_split(lan: VirtualLan) -> None:
    port1 = await start_echo(lan, 1)
    port2 = await start_echo(lan, 2)

    async def matrix() -> dict[str, bool]:
        checks = {
            "2→1": reaches(lan, 2, 1, port1),
            "3→1": reaches(lan, 3, 1, port1),
            "3→2": reaches(lan, 3, 2, port2),
        }
        return dict(zip(checks, await asyncio.gather(*checks.values()), strict=True))

    everyone = {"2→1": True, "3→1": True, "3→2": True}
    await eventually(lambda: _is(matrix, everyone), "all desks to reach each other")

    await lan.cut(1)
    assert await matrix() == {"2→1": False, "3→1": False, "3→2": True}
    await lan.restore(1)
    await eventually(lambda: _is(matrix, everyone), "desk 1 to be reachable again after restore")

    await lan.split([1], [2, 3])
    assert await matrix() == {"2→1": False, "3→1": False, "3→2": True}
    await lan.heal()
    await eventually(lambda: _is(matrix, everyone), "desk 1 to be reachable again after heal")


async def _is(matrix: Callable[[], Awaitable[dict[str, bool]]], expected: dict[str, bool]) -> bool:
    return await matrix() == expected


async def test_mdns_finds_peers_across_the_bridge(lan: VirtualLan) -> None:
    cluster = f"lan-{secrets.token_hex(6)}"
    probes = {}
    for desk in (1, 2):
        probes[desk] = await lan.spawn(
            desk,
            [
                PYTHON,
                "-m",
                "node.discovery.mdns",
                "--cluster",
                cluster,
                "--port",
                "7000",
                "--interface",
                lan.address(desk),
                "--allow",
                lan.network,
                "--desk",
                f"Desk {desk}",
                "--seconds",
                "40",
            ],
            cwd=REPO,
        )
    events: dict[int, list[dict]] = {1: [], 2: []}

    async def read(desk: int) -> None:
        stream = probes[desk].stdout
        assert stream is not None
        while line := await stream.readline():
            events[desk].append(json.loads(line))

    readers = [asyncio.create_task(read(desk)) for desk in (1, 2)]

    def found(desk: int) -> list[dict]:
        return [e for e in events[desk] if e["event"] == "found"]

    def started(desk: int) -> bool:
        return any(e["event"] == "started" for e in events[desk])

    async def both_found() -> bool:
        await asyncio.sleep(0.05)
        return all(found(desk) and started(desk) for desk in (1, 2))

    await eventually(both_found, "each desk to find the other over the bridge", limit_s=20)
    node_ids = {desk: next(e["node_id"] for e in events[desk] if e["event"] == "started") for desk in (1, 2)}
    assert found(1) == [
        {"event": "found", "node_id": node_ids[2], "host": lan.address(2), "port": 7000, "desk": "Desk 2"}
    ]
    assert found(2) == [
        {"event": "found", "node_id": node_ids[1], "host": lan.address(1), "port": 7000, "desk": "Desk 1"}
    ]
    # Desk 2 stops (Ctrl-C): it says goodbye and desk 1 reports it lost.
    assert await stop(probes[2]) == 0
    await readers[1]

    async def desk1_lost_it() -> bool:
        await asyncio.sleep(0.05)
        return {"event": "lost", "node_id": node_ids[2]} in events[1]

    await eventually(desk1_lost_it, "desk 1 to see desk 2 leave")
    assert await stop(probes[1]) == 0
    await readers[0]
    counters = events[1][-1]
    assert counters["event"] == "counters" and counters["found"] == 1 and counters["lost"] == 1


async def test_down_leaves_nothing_behind_and_stale_runs_are_cleared() -> None:
    links_before = await host_links()
    first = VirtualLan()
    try:
        await first.up(2)
        assert await first.namespaces() == [f"{first.prefix}-1", f"{first.prefix}-2", f"{first.prefix}-br"]
        assert await host_links() == links_before, "the host's own interfaces are never touched"
        # A process left running in a desk, as after a crashed test run...
        sleeper = await first.spawn(1, ["sleep", "300"])
        # ...is ended, and the namespaces removed, by a new LAN with the same prefix (what the fixture
        # does before it starts).
        second = VirtualLan(prefix=first.prefix)
        await second.down()
        assert await asyncio.wait_for(sleeper.wait(), 10) is not None
        assert await second.namespaces() == []
    finally:
        await first.down()
    assert await first.namespaces() == []
    assert await host_links() == links_before
