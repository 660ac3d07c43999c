"""mDNS discovery on 127.0.0.1: real zeroconf instances (one per node, as in production) in this process."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

from node.discovery.mdns import (
    FOREIGN_CLUSTER,
    MALFORMED,
    OWN,
    SERVICE_TYPE,
    UNSUPPORTED_VERSION,
    WRONG_ADDRESS,
    Advertiser,
    Discovery,
    Ignored,
    Peer,
    check_record,
    cluster_hash,
    instance_name,
    parse_networks,
    record_properties,
)

LOOPBACK = ["127.0.0.1"]
REPO = Path(__file__).resolve().parent.parent


async def wait_until(condition: Callable[[], bool], what: str, limit_s: float = 15.0) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {limit_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_node_id() -> str:
    return secrets.token_hex(16)


class Seen:
    """What one node's callbacks were told, in order."""

    def __init__(self) -> None:
        self.found: list[Peer] = []
        self.lost: list[str] = []

    async def on_found(self, peer: Peer) -> None:
        self.found.append(peer)

    async def on_lost(self, node_id: str) -> None:
        self.lost.append(node_id)

    def ids_found(self) -> set[str]:
        return {p.node_id for p in self.found}


class Node:
    def __init__(self, cluster: str, *, desk: str | None = None, **options: object) -> None:
        self.seen = Seen()
        self.node_id = new_node_id()
        self.port = free_port()
        self.desk = desk
        self.discovery = Discovery(
            node_id=self.node_id,
            cluster_id=cluster,
            port=self.port,
            desk=desk,
            on_found=self.seen.on_found,
            on_lost=self.seen.on_lost,
            interfaces=LOOPBACK,
            allowed_networks=["127.0.0.0/8"],
            **options,  # type: ignore[arg-type]
        )


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., object]]:
    """Start Discovery nodes (together); every one is stopped at the end, whatever happens."""
    running: list[Node] = []

    async def start(*nodes: Node) -> None:
        running.extend(nodes)
        await asyncio.gather(*(n.discovery.start() for n in nodes))

    yield start
    await asyncio.gather(*(n.discovery.stop() for n in running), return_exceptions=True)


async def test_members_find_exactly_each_other_and_see_changes(started) -> None:
    cluster_x, cluster_y = f"x-{secrets.token_hex(8)}", f"y-{secrets.token_hex(8)}"
    xs = [Node(cluster_x, desk=f"Desk {i}") for i in range(3)]
    y = Node(cluster_y)
    await started(*xs, y)

    def settled() -> bool:
        return all(len(x.discovery.peers) == 2 for x in xs) and all(
            x.discovery.counters["ignored_foreign_cluster"] >= 1 for x in xs
        )

    await wait_until(settled, "each X node to see the two others and to have rejected Y")
    await wait_until(lambda: y.discovery.counters["ignored_foreign_cluster"] >= 3, "Y to reject all of X")
    for x in xs:
        others = {o.node_id: o for o in xs if o is not x}
        assert set(x.discovery.peers) == set(others)
        assert x.seen.ids_found() == set(others), "found only the others: not itself, not Y"
        for node_id, peer in x.discovery.peers.items():
            assert peer == Peer(node_id, "127.0.0.1", others[node_id].port, others[node_id].desk)
        assert x.discovery.ignored[instance_name(x.node_id)] == OWN
        assert x.discovery.ignored[instance_name(y.node_id)] == FOREIGN_CLUSTER
        assert x.seen.lost == []
    assert y.seen.found == [] and y.discovery.peers == {}
    assert {instance_name(x.node_id) for x in xs} <= {
        name for name, reason in y.discovery.ignored.items() if reason == FOREIGN_CLUSTER
    }

    # A new port is announced and reported again.
    moved, watcher = xs[1], xs[0]
    new_port = free_port()
    await moved.discovery.update(port=new_port)
    await wait_until(
        lambda: watcher.discovery.peers.get(moved.node_id, Peer("", "", 0)).port == new_port,
        "the new port to be reported",
    )
    assert watcher.seen.found[-1] == Peer(moved.node_id, "127.0.0.1", new_port, moved.desk)

    # A node that stops says goodbye and is reported lost by both others.
    gone = xs[2]
    await gone.discovery.stop()
    await wait_until(lambda: all(gone.node_id in x.seen.lost for x in xs[:2]), "the stopped node to be reported lost")
    for x in xs[:2]:
        assert set(x.discovery.peers) == {o.node_id for o in xs[:2] if o is not x}
        assert x.seen.lost == [gone.node_id]
        assert x.discovery.counters["lost"] == 1
    assert y.seen.found == [] and y.seen.lost == []


def _spoof(name_node: str, properties: dict[str, str] | bytes, *, port: int, address: str = "127.0.0.1"):
    return AsyncServiceInfo(
        SERVICE_TYPE,
        instance_name(name_node),
        port=port,
        properties=properties,
        server=f"spoof-{name_node[:12]}.local.",
        parsed_addresses=[address],
    )


async def test_bad_and_spoofed_records_are_counted_and_never_reported(started) -> None:
    cluster = f"c-{secrets.token_hex(8)}"
    watcher_seen = Seen()
    watcher = Discovery(
        node_id=new_node_id(),
        cluster_id=cluster,
        port=free_port(),
        on_found=watcher_seen.on_found,
        on_lost=watcher_seen.on_lost,
        interfaces=LOOPBACK,
        allowed_networks=["127.0.0.0/30"],
    )
    await watcher.start()
    try:
        ours = cluster_hash(cluster)
        port = free_port()
        expected: dict[str, str] = {}
        spoofs: list[AsyncServiceInfo] = []

        def add(reason: str, properties: dict[str, str] | bytes, **kw: object) -> None:
            node = new_node_id()
            props = properties(node) if callable(properties) else properties
            info = _spoof(node, props, port=kw.pop("srv_port", port), **kw)  # type: ignore[arg-type]
            spoofs.append(info)
            expected[info.name] = reason

        good = lambda **over: lambda n: {"c": ours, "n": n, "v": "1", "p": str(port), **over}  # noqa: E731
        add(MALFORMED, {"c": ours, "v": "1"})  # no node id, no port
        add(MALFORMED, lambda n: {"n": n, "v": "1", "p": str(port)})  # no cluster hash
        add(MALFORMED, good(n="g" * 32))  # not hex
        add(MALFORMED, lambda n: {"c": ours, "n": n.upper(), "v": "1", "p": str(port)})  # not lowercase
        add(MALFORMED, good(n="a" * 200))  # overlong node id
        add(MALFORMED, good(p="0"), srv_port=0)  # port 0
        add(MALFORMED, good(p="70000"))  # port out of range
        add(MALFORMED, good(p="1234"))  # TXT and SRV ports differ
        add(MALFORMED, good(d="D" * 200))  # overlong desk name
        add(MALFORMED, good(d="front\x00desk"))  # control character
        add(MALFORMED, good(c="z" * 16))  # cluster hash not hex
        add(MALFORMED, bytes([5]) + b"v=1\x00\x00" + bytes([200]) + b"c=" + ours.encode())  # truncated TXT
        add(UNSUPPORTED_VERSION, good(v="9"))
        add(FOREIGN_CLUSTER, good(c=cluster_hash("another library")))
        add(WRONG_ADDRESS, good(), address="127.0.0.9")
        impostor = AsyncServiceInfo(  # a valid record under a name that is not its node's
            SERVICE_TYPE,
            f"impostor-{secrets.token_hex(6)}.{SERVICE_TYPE}",
            port=port,
            properties=record_properties(new_node_id(), cluster, port),
            server=f"impostor-{secrets.token_hex(6)}.local.",
            parsed_addresses=["127.0.0.1"],
        )
        spoofs.append(impostor)
        expected[impostor.name] = MALFORMED

        async with AsyncZeroconf(interfaces=LOOPBACK) as rogue:
            # Well-formed neighbours published by the same rogue zeroconf: the browser still works.
            honest = {
                desk: Advertiser(
                    rogue, node_id=new_node_id(), cluster_id=cluster, port=port, addresses=["127.0.0.1"], desk=desk
                )
                for desk in ("Desk A", "Desk B")
            }
            announced = await asyncio.gather(*(rogue.async_register_service(i) for i in spoofs))
            await asyncio.gather(*announced, *(h.start() for h in honest.values()))
            a, b = honest["Desk A"], honest["Desk B"]

            await wait_until(
                lambda: (
                    all(watcher.ignored.get(name) == reason for name, reason in expected.items())
                    and {a.node_id, b.node_id} <= set(watcher.peers)
                ),
                "every bad record to be judged and the honest ones found",
            )
            assert sorted(watcher_seen.found, key=lambda p: p.desk or "") == [
                Peer(a.node_id, "127.0.0.1", port, "Desk A"),
                Peer(b.node_id, "127.0.0.1", port, "Desk B"),
            ]
            counters = watcher.counters
            for reason in (MALFORMED, UNSUPPORTED_VERSION, FOREIGN_CLUSTER, WRONG_ADDRESS):
                # At least ours; other tests on this machine may publish their own odd records.
                assert counters[f"ignored_{reason}"] >= list(expected.values()).count(reason), reason
            assert counters["callback_errors"] == 0

            # A moves to another address: reported again at the new one. B moves outside the allowed
            # networks: forgotten, not followed.
            await asyncio.gather(a.update(addresses=["127.0.0.2"]), b.update(addresses=["127.0.0.77"]))
            await wait_until(
                lambda: (
                    watcher.peers.get(a.node_id, Peer("", "", 0)).host == "127.0.0.2" and b.node_id in watcher_seen.lost
                ),
                "A's new address to be reported and B to be dropped",
            )
            assert watcher_seen.found[-1] == Peer(a.node_id, "127.0.0.2", port, "Desk A")
            assert set(watcher.peers) == {a.node_id}
            assert watcher.ignored[instance_name(b.node_id)] == WRONG_ADDRESS
            await asyncio.gather(a.stop(), b.stop())
            await wait_until(lambda: a.node_id in watcher_seen.lost, "A's goodbye")
        # Nothing was ever reported but the honest records.
        assert watcher_seen.ids_found() == {a.node_id, b.node_id}
        assert watcher.peers == {}
    finally:
        await watcher.stop()


async def test_a_failing_callback_is_counted_and_the_browser_carries_on(started) -> None:
    cluster = f"c-{secrets.token_hex(8)}"
    calls: list[str] = []

    async def broken_found(peer: Peer) -> None:
        calls.append(peer.node_id)
        raise RuntimeError("a bug in the caller")

    def broken_lost(node_id: str) -> None:  # a plain function is accepted too
        calls.append(f"lost {node_id}")
        raise ValueError("another bug")

    a = Node(cluster)
    a.discovery = Discovery(
        node_id=a.node_id,
        cluster_id=cluster,
        port=a.port,
        on_found=broken_found,
        on_lost=broken_lost,
        interfaces=LOOPBACK,
    )
    b, c = Node(cluster), Node(cluster)
    await started(a, b, c)
    await wait_until(lambda: {b.node_id, c.node_id} <= set(calls), "both peers to be reported all the same")
    assert a.discovery.counters["callback_errors"] == 2
    await b.discovery.stop()
    await wait_until(lambda: f"lost {b.node_id}" in calls, "the loss to be reported all the same")
    assert a.discovery.counters["callback_errors"] == 3
    assert set(a.discovery.peers) == {c.node_id}


async def test_a_desk_that_vanishes_without_goodbye_is_forgotten(started) -> None:
    """Killed with SIGKILL: no goodbye; its address records expire and it no longer answers."""
    cluster = f"c-{secrets.token_hex(8)}"
    watcher = Node(cluster, refresh_s=0.5, resolve_timeout_s=1.0)
    await started(watcher)
    victim_id = new_node_id()
    victim = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node.discovery.mdns",
        "--cluster",
        cluster,
        "--port",
        str(free_port()),
        "--node-id",
        victim_id,
        "--interface",
        "127.0.0.1",
        "--ttl",
        "2",
        "--seconds",
        "60",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert victim.stdout is not None

        async def started_line() -> dict:
            while True:  # it may report the watcher before it has finished announcing itself
                event = json.loads(await victim.stdout.readline())
                if event["event"] == "started":
                    return event

        assert await asyncio.wait_for(started_line(), 20) == {"event": "started", "node_id": victim_id}
        await wait_until(lambda: victim_id in watcher.discovery.peers, "the desk to be found")
        # Alive, it keeps answering the re-checks past its 2 s TTL.
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            assert victim_id in watcher.discovery.peers
            await asyncio.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        await wait_until(lambda: victim_id in watcher.seen.lost, "the vanished desk to be forgotten")
        assert victim_id not in watcher.discovery.peers
        assert watcher.discovery.counters["unresolved"] >= 1
    finally:
        if victim.returncode is None:
            victim.kill()
            await victim.wait()


# ---- the record check alone (pure) ----

CLUSTER = "main library"
NODE = "0123456789abcdef0123456789abcdef"
NETS = parse_networks(["10.231.0.0/16"])


def judge(props: dict[str, str], srv_port: int = 7000, addresses=("10.231.1.11",), name: str | None = None):
    raw = {k.encode(): v.encode() for k, v in props.items()}
    return check_record(
        name or instance_name(props.get("n", NODE)),
        raw,
        srv_port,
        list(addresses),
        cluster=cluster_hash(CLUSTER),
        own_node_id="f" * 32,
        allowed_networks=NETS,
    )


def test_record_check_accepts_what_a_node_publishes() -> None:
    props = record_properties(NODE, CLUSTER, 7000, "Front desk")
    assert props["c"] == cluster_hash(CLUSTER) and CLUSTER not in props.values()
    assert judge(props) == Peer(NODE, "10.231.1.11", 7000, "Front desk")
    # IPv4 preferred, addresses outside the allowed networks skipped.
    assert judge(props, addresses=["fe80::1", "192.0.2.1", "10.231.1.12"]).host == "10.231.1.12"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"c": cluster_hash("elsewhere")}, FOREIGN_CLUSTER),
        ({"v": "2"}, UNSUPPORTED_VERSION),
        ({"v": "one"}, MALFORMED),
        ({"n": "f" * 32}, OWN),
        ({"n": NODE[:-1]}, MALFORMED),
        ({"p": "07000"}, MALFORMED),
        ({"p": "+7000"}, MALFORMED),
        ({"d": ""}, MALFORMED),
        ({"d": "é" * 33}, MALFORMED),
    ],
)
def test_record_check_rejects(change: dict[str, str], reason: str) -> None:
    verdict = judge({**record_properties(NODE, CLUSTER, 7000), **change})
    assert isinstance(verdict, Ignored) and verdict.reason == reason


def test_record_check_rejects_unusable_addresses() -> None:
    props = record_properties(NODE, CLUSTER, 7000)
    for addresses in ([], ["0.0.0.0"], ["224.0.0.251"], ["not an address"], ["192.0.2.1"]):
        verdict = judge(props, addresses=addresses)
        assert isinstance(verdict, Ignored) and verdict.reason == WRONG_ADDRESS, addresses


@settings(max_examples=300, deadline=None)
@given(
    props=st.dictionaries(st.sampled_from([b"c", b"n", b"v", b"p", b"d", b"x"]), st.none() | st.binary()),
    srv_port=st.none() | st.integers(min_value=-1, max_value=70000),
    addresses=st.lists(st.text(max_size=40), max_size=3),
    name=st.text(max_size=80),
)
def test_record_check_never_raises(props, srv_port, addresses, name) -> None:
    verdict = check_record(
        name, props, srv_port, addresses, cluster=cluster_hash(CLUSTER), own_node_id=NODE, allowed_networks=NETS
    )
    assert isinstance(verdict, Peer | Ignored)
    if isinstance(verdict, Peer):
        assert 1 <= verdict.port <= 65535 and len(verdict.node_id) == 32


@settings(max_examples=200, deadline=None)
@given(
    node=st.text("0123456789abcdef", min_size=32, max_size=32),
    port=st.integers(1, 65535),
    desk=st.none() | st.text(min_size=1, max_size=32).filter(str.isprintable),
)
def test_what_is_published_is_accepted(node: str, port: int, desk: str | None) -> None:
    assume(node != "f" * 32)  # our own id, refused as such above
    props = record_properties(node, CLUSTER, port, desk)
    assert judge(props, srv_port=port) == Peer(node, "10.231.1.11", port, desk)
