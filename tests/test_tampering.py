"""A hostile peer on the peer port: garbage, frames out of order, an altered copy of another desk's event,
an unsigned event, an event from an unknown key, a snapshot chunk with wrong bytes or not asked for. Each is
refused, counted in /status, changes nothing, and the node keeps serving desks and honest peers."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgpack
import pytest
from automerge.core import ROOT, ScalarType

from node.crdt.document import LogDocument
from node.desk import DeskNode
from node.discovery import frames
from node.snapshot.chunks import Cutter
from node.snapshot.rows import Patron
from node.trust.ca import issue_node_certificate
from node.trust.certs import cert_pem
from node.trust.tlsctx import client_context
from tests.factories import DUE, SimDesk, identity
from tests.procs import TEST_PASSWORD, TEST_USER, sign_in, wait_for
from tests.provision import test_ca


async def api(session: aiohttp.ClientSession, node: DeskNode, method: str, path: str, **kw: Any) -> Any:
    async with session.request(method, f"http://127.0.0.1:{node.port}/api/v1{path}", **kw) as r:
        return r.status, await r.json()


class HostilePeer:
    """Speaks the peer protocol honestly enough to get a copy of the log, then misbehaves."""

    def __init__(self, session: aiohttp.ClientSession, node: DeskNode) -> None:
        self.session, self.node = session, node
        self.ident = identity()
        self.doc = LogDocument(self.ident.actor_id)
        self.state = self.doc.new_sync_state()
        # A member of the cluster gone bad: its certificate is genuine, so TLS lets it in.
        root = Path(node.config.data_dir).parent
        ca = test_ca(root)
        cert = issue_node_certificate(ca, self.ident.key.public_key(), self.ident.node_id, "intruder", "desk")
        self.cert_pem = cert_pem(cert)
        self.ssl = client_context(self.ident.key, cert, ca.cert, root / f"tls-{self.ident.node_id[:8]}")

    async def connect(self) -> None:
        self.ws = await self.session.ws_connect(f"wss://127.0.0.1:{self.node.peer_port}/peer", ssl=self.ssl)
        await self.ws.send_bytes(frames.encode(frames.Hello(self.ident.node_id, "intruder", 0)))
        hello = frames.decode((await self.ws.receive(timeout=10)).data)
        assert isinstance(hello, frames.Hello) and hello.node == self.node.node_id

    async def pull(self) -> None:
        """Syncs until the node has nothing more to send (bounded)."""
        for _ in range(50):
            our = self.doc.generate_sync(self.state)
            if our is not None:
                await self.ws.send_bytes(frames.encode(frames.Sync(our)))
            try:
                msg = await self.ws.receive(timeout=0.5)
            except TimeoutError:
                if our is None:
                    return
                continue
            frame = frames.decode(msg.data)
            if isinstance(frame, frames.Sync):
                self.doc.receive_sync(self.state, frame.message)
        raise AssertionError("pull did not settle")

    def put(self, key: str, value: bytes) -> None:
        with self.doc._doc.transaction() as tx:
            tx.put(ROOT, key, ScalarType.Bytes, value)

    async def push_and_expect_drop(self) -> None:
        """Goes on with the conversation until the node hangs up: on a loaded machine `pull` can return
        before the node's last answer, and Automerge then holds the new changes back until it has it."""
        message = self.doc.generate_sync(self.state)
        assert message is not None
        await self.ws.send_bytes(frames.encode(frames.Sync(message)))
        async with asyncio.timeout(10):
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    return
                frame = frames.decode(msg.data)
                if isinstance(frame, frames.Sync):
                    self.doc.receive_sync(self.state, frame.message)
                    while (ours := self.doc.generate_sync(self.state)) is not None:
                        await self.ws.send_bytes(frames.encode(frames.Sync(ours)))

    async def expect_drop(self) -> None:
        async with asyncio.timeout(10):
            while True:
                msg = await self.ws.receive()
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                    return


@pytest.fixture
async def session(desk):
    """A client signed in to the desk (bearer token): the peer port needs none, the desk API does."""
    async with aiohttp.ClientSession() as s:
        token = await sign_in(s, f"http://127.0.0.1:{desk.port}", TEST_USER, TEST_PASSWORD)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
        yield s


def member_cert(desk: DeskNode, sim: SimDesk) -> str:
    ca = test_ca(Path(desk.config.data_dir).parent)
    return cert_pem(issue_node_certificate(ca, sim.ident.key.public_key(), sim.node, "member", "desk"))


async def _still_serving(session, desk, item: str) -> None:
    status, body = await api(session, desk, "POST", "/checkouts", json={"patron": "P7", "item": item})
    assert status == 201, body


async def test_random_bytes_and_non_protocol_frames_are_refused(desk, session) -> None:
    for payload in (os.urandom(64), msgpack.packb({"t": "sync", "m": os.urandom(200)}),
                    msgpack.packb({"t": "nonsense"}), msgpack.packb([1, 2, 3])):
        peer = HostilePeer(session, desk)
        await peer.connect()
        await peer.ws.send_bytes(payload)
        await peer.expect_drop()
    # plain HTTP on the peer port: the TLS handshake fails, the connection is closed, and it is counted
    reader, writer = await asyncio.open_connection("127.0.0.1", desk.peer_port)
    writer.write(b"GET /peer HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    writer.close()
    _, body = await api(session, desk, "GET", "/status")
    assert body["refusals"]["garbage"] >= 4
    assert body["refusals"]["link_tls_wrong_protocol"] >= 1
    assert body["node"]["events"] == 0
    await _still_serving(session, desk, "I-after-garbage")


async def test_frames_out_of_order_are_refused_by_kind(desk, session) -> None:
    """The link machine's rules over a real link: a sync before the hello, then a second hello."""
    peer = HostilePeer(session, desk)
    peer.ws = await session.ws_connect(f"wss://127.0.0.1:{desk.peer_port}/peer", ssl=peer.ssl)
    await peer.ws.send_bytes(frames.encode(frames.Sync(b"too early")))
    await peer.expect_drop()
    peer = HostilePeer(session, desk)
    await peer.connect()
    await peer.ws.send_bytes(frames.encode(frames.Hello(peer.ident.node_id, "intruder", 0)))
    await peer.expect_drop()
    _, body = await api(session, desk, "GET", "/status")
    assert body["refusals"]["no_hello"] == 1 and body["refusals"]["unexpected_hello"] == 1, body["refusals"]
    await _still_serving(session, desk, "I-after-order")


async def test_altered_copy_of_an_existing_event_is_refused(desk, session) -> None:
    peer = HostilePeer(session, desk)
    await peer.connect()

    async def linked() -> bool:  # the desk's side of the link is up: its scans go in the document
        return desk.log.links > 0

    await wait_for(linked, within=10, what="the desk's side of the link")
    status, created = await api(session, desk, "POST", "/checkouts", json={"patron": "P1", "item": "I1"})
    assert status == 201
    await peer.pull()
    event_id = created["event"]["id"]
    original = peer.doc.value(event_id)
    assert original is not None
    obj = msgpack.unpackb(original)
    obj["body"]["patron"] = "P666"  # same signature, different patron
    peer.put(event_id, msgpack.packb(obj, use_bin_type=True))
    await peer.push_and_expect_drop()
    _, loans = await api(session, desk, "GET", "/loans?item=I1")
    assert [loan["patron"] for loan in loans["loans"]] == ["P1"]
    _, body = await api(session, desk, "GET", "/status")
    assert body["refusals"]["altered_event"] == 1
    assert desk.log.doc.value(event_id) == original  # the document was rolled back too
    await _still_serving(session, desk, "I2")


async def test_unsigned_and_forged_events_are_refused(desk, session) -> None:
    impostor = SimDesk()
    victim_id = desk.node_id
    forged = impostor.write("checkout", patron="P9", item="I9", due=DUE)
    # 1: an event in the name of the desk itself, signed by someone else
    obj = msgpack.unpackb(forged.encode())
    obj.update(node=victim_id, seq=99, id=f"{victim_id}:99", prev=b"\x01" * 32)
    # 2: an event with a zeroed signature from a node that published a valid record
    honest_looking = SimDesk()
    unsigned = msgpack.unpackb(honest_looking.write("checkin", item="I9").encode())
    unsigned["sig"] = bytes(64)
    cases = [
        ({f"{victim_id}:99": msgpack.packb(obj, use_bin_type=True)}, "bad_signature"),
        ({forged.id: forged.encode()}, "unknown_node"),
        ({"n:" + honest_looking.node: honest_looking.record(cert=member_cert(desk, honest_looking)).encode(),
          f"{honest_looking.node}:1": msgpack.packb(unsigned, use_bin_type=True)}, "bad_signature"),
        # a self-signed record with no certificate from the cluster's CA: not a member
        ({"n:" + impostor.node: impostor.record().encode(), forged.id: forged.encode()}, "not_a_member"),
        ({"not-an-event": b"hello"}, "malformed"),
    ]
    for entries, counter in cases:
        peer = HostilePeer(session, desk)
        await peer.connect()
        await peer.pull()
        for key, value in entries.items():
            peer.put(key, value)
        await peer.push_and_expect_drop()
        _, body = await api(session, desk, "GET", "/status")
        assert body["refusals"].get(counter, 0) >= 1, (counter, body["refusals"])
    _, loans = await api(session, desk, "GET", "/loans?item=I9")
    assert loans["loans"] == []
    assert desk.log.doc.value(f"{victim_id}:99") is None
    await _still_serving(session, desk, "I3")


async def test_an_honest_new_peer_is_accepted(desk, session) -> None:
    peer = HostilePeer(session, desk)  # used honestly this time
    await peer.connect()
    stranger = SimDesk(ident=peer.ident)
    event = stranger.write("checkout", patron="P5", item="I5", due=DUE)
    peer.put("n:" + stranger.node, stranger.record("visitor", cert=peer.cert_pem).encode())
    peer.put(event.id, event.encode())
    await peer.pull()
    _, loans = await api(session, desk, "GET", "/loans?item=I5")
    assert loans["loans"][0]["desk"] == "visitor"


async def test_a_snapshot_chunk_with_wrong_bytes_is_refused_and_asked_again(desk, session) -> None:
    """A member serves the snapshot the desk must fetch, and sends one chunk with a bit flipped: refused and
    counted, the link stays, the chunk is asked again and the right bytes kept, and the desk switches to the
    snapshot. A chunk nobody asked for ends the link."""
    cutter = Cutter(rows_per_chunk=7)
    cutter.add("patrons", [Patron(f"23{k:04d}", f"Dvořák, Anna {k}", None, None, None, None, 0, 0, None)
                           for k in range(50)])
    read_at = int(time.time() * 1000) - 60_000  # a minute ago: within the retention
    index, data = cutter.finish(1, read_at, 50, 0, "test ILS")
    served = dict([*cutter.take(), (index, data)])
    await desk.log.append("snapshot", {"index": index, "version": 1, "ils_time": read_at, "patrons": 50,
                                       "items": 0, "source": "test ILS"}, "bridge")
    peer = HostilePeer(session, desk)
    await peer.connect()
    asked: list[str] = []
    async with asyncio.timeout(30):
        while desk.snapshot.manifest is None:
            msg = await peer.ws.receive()
            frame = frames.decode(msg.data)
            if not isinstance(frame, frames.ChunkWant):
                continue
            for name in frame.names:
                chunk = served[name]
                if not asked:  # the first chunk asked for (the index) goes wrong once
                    chunk = chunk[:-1] + bytes([chunk[-1] ^ 1])
                asked.append(name)
                await peer.ws.send_bytes(frames.encode(frames.Chunk(name, chunk)))
    assert asked[0] == index and asked.count(index) == 2 and set(asked) == set(served)
    assert desk.snapshot.manifest.index == index and desk.snapshot.patron("230049").name == "Dvořák, Anna 49"
    _, body = await api(session, desk, "GET", "/status")
    assert body["refusals"]["bad_chunk"] == 1 and body["snapshot"]["fetch"]["refused"] == 1, body["refusals"]
    assert body["peers"] and body["snapshot"]["version"] == 1  # the link stayed up
    await peer.ws.send_bytes(frames.encode(frames.Chunk(index, data)))  # nobody asked for it now
    await peer.expect_drop()
    _, body = await api(session, desk, "GET", "/status")
    assert body["refusals"]["unasked_chunk"] == 1
    await _still_serving(session, desk, "I-after-chunks")
