"""What a desk dials because of mDNS (issue 9): real desks and real zeroconf, on 127.0.0.1 only.

A desk that mDNS reports gone must stop being dialled, and one that reappears elsewhere must be dialled
there instead; otherwise a dial loop for every vanished or moved desk retries for as long as the desk runs.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from zeroconf.asyncio import AsyncZeroconf

from node.desk import DeskConfig, DeskNode
from node.discovery.mdns import Advertiser
from tests.provision import provision
from tests.test_mdns import LOOPBACK, wait_until


class Desks:
    """Real desk nodes of one cluster, finding each other by mDNS on loopback; all stopped at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: list[DeskNode] = []

    async def start(self, name: str) -> DeskNode:
        data = self.root / name
        provision(data, name)
        node = DeskNode(DeskConfig(data_dir=data, desk=name, port=0, peer_port=0, mdns=True, interfaces=LOOPBACK))
        self.running.append(node)
        await node.start()
        return node

    async def stop(self, node: DeskNode) -> None:
        self.running.remove(node)
        await node.stop()


@pytest.fixture
async def desks(tmp_path: Path) -> AsyncIterator[Desks]:
    d = Desks(tmp_path)
    try:
        yield d
    finally:
        await asyncio.gather(*(n.stop() for n in d.running), return_exceptions=True)


class Listener:
    """A loopback port that counts the connections made to it: proof that a desk really dials there.

    It speaks no TLS, so every dial fails and the desk keeps retrying, as it would for a desk that is gone.
    """

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _accept(self, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.close()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def advertiser(zc: AsyncZeroconf, desk: DeskNode, port: int, node_id: str) -> Advertiser:
    """Another desk of `desk`'s cluster, as mDNS announces it: the test decides when it comes and goes."""
    return Advertiser(zc, node_id=node_id, cluster_id=desk.membership.cluster_id, port=port,
                      addresses=LOOPBACK, desk="Elsewhere")


async def test_a_desk_gone_from_mdns_is_no_longer_dialled(desks: Desks) -> None:
    desk = await desks.start("Front desk")
    async with AsyncZeroconf(interfaces=LOOPBACK) as zc, Listener() as gone:
        other = advertiser(zc, desk, gone.port, secrets.token_hex(16))
        await other.start()
        await wait_until(lambda: gone.connections >= 1 and gone.address in desk.peers.dialling,
                         "the announced desk to be dialled")
        await other.stop()  # its goodbye: mDNS reports it lost
        await wait_until(lambda: gone.address not in desk.peers.dialling, "the vanished desk to be no longer dialled")
        assert desk.discovery is not None and desk.discovery.counters["lost"] == 1
        assert desk.peers.dialling == frozenset()


async def test_a_desk_that_moves_or_comes_back_is_dialled_where_it_is_now(desks: Desks) -> None:
    desk = await desks.start("Front desk")
    node_id = secrets.token_hex(16)
    async with AsyncZeroconf(interfaces=LOOPBACK) as zc, Listener() as old, Listener() as new, Listener() as back:
        other = advertiser(zc, desk, old.port, node_id)
        await other.start()
        await wait_until(lambda: old.connections >= 1, "the desk to be dialled at its first port")

        await other.update(port=new.port)  # the same desk, restarted on another port
        await wait_until(lambda: new.connections >= 1 and desk.peers.dialling == {new.address},
                         "the moved desk to be dialled at its new port only")

        await other.stop()
        await wait_until(lambda: desk.peers.dialling == frozenset(), "the desk to be dialled nowhere once gone")

        returned = advertiser(zc, desk, back.port, node_id)  # back again, on yet another port
        await returned.start()
        await wait_until(lambda: back.connections >= 1 and desk.peers.dialling == {back.address},
                         "the returning desk to be dialled at its new port")
        await returned.stop()


async def test_a_link_up_when_the_goodbye_comes_stays_up_and_is_not_redialled(desks: Desks) -> None:
    """A desk that stops says goodbye on mDNS while its links are still closing."""
    a, b = await asyncio.gather(desks.start("Desk A"), desks.start("Desk B"))
    # Of two links between a pair, the one dialled by the smaller node id stays (PeerTable._claim).
    watcher, gone = sorted((a, b), key=lambda n: n.node_id)
    gone_address = f"127.0.0.1:{gone.peer_port}"

    def dialled_link_up() -> bool:
        link = watcher.peers.links.get(gone.node_id)
        return link is not None and link.outbound and link.address == gone_address

    await wait_until(dialled_link_up, "the watcher's own link to the other desk")
    assert gone.discovery is not None and watcher.discovery is not None
    await gone.discovery.stop()  # the goodbye first, the link still up
    await wait_until(lambda: watcher.discovery.counters["lost"] >= 1, "the goodbye to be seen")
    assert dialled_link_up(), "forgetting an address does not cut a live link"

    await desks.stop(gone)
    await wait_until(lambda: gone_address not in watcher.peers.dialling and gone.node_id not in watcher.peers.links,
                     "the link to end and its address to be dialled no more")
