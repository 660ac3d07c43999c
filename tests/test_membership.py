"""Joining a cluster on loopback with real processes: `circmesh init`, a one-time code, `circmesh join`,
desks that find each other by mDNS alone (127.0.0.1 only), and every refusal counted in /status while
the desks keep serving: another CA's certificate, plain TCP, random bytes after the handshake, a revoked
desk, a foreign or spoofed mDNS record."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp
import msgpack
import pytest
from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from node.crdt.document import LogDocument
from node.crdt.records import make_record, record_key
from node.discovery import frames
from node.discovery.mdns import SERVICE_TYPE, instance_name, record_properties
from node.trust.ca import create_ca, issue_node_certificate, load_ca
from node.trust.certs import cert_pem, load_cert_pem
from node.trust.tlsctx import client_context
from tests.factories import DUE, SimDesk, identity
from tests.procs import TEST_PASSWORD, TEST_USER, DeskProcess, get_json, post_json, wait_for

pytestmark = pytest.mark.multiprocess


async def circmesh(*argv: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    env = os.environ | {"CIRCMESH_USER": TEST_USER, "CIRCMESH_PASSWORD": TEST_PASSWORD}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node.cli", *argv, env=env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate(stdin)
    return proc.returncode or 0, out.decode(), err.decode()


class EnrolledDesk(DeskProcess):
    """A desk made a member the way staff do it (init or join), found by mDNS on 127.0.0.1 only."""

    def __init__(self, data: Path, desk: str) -> None:
        super().__init__(data, desk, [])
        self.mdns = True


async def linked(session, desk, n: int) -> bool:
    status = await get_json(session, f"{desk.url}/api/v1/status")
    return sum(p["connected"] for p in status["peers"]) >= n


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def two_desks(tmp_path: Path, session):
    """Front desk created the cluster; Returns joined it with a one-time code typed from the admin's screen."""
    admin = EnrolledDesk(tmp_path / "front", "Front desk")
    code, out, err = await circmesh("init", "--data", str(admin.data), "--desk", admin.desk,
                                    "--cluster-name", "Town library")
    assert code == 0, err
    await admin.start()
    joiner = EnrolledDesk(tmp_path / "returns", "Returns")
    try:
        code, out, err = await circmesh("admit", "--desk-url", admin.url)
        assert code == 0, err
        one_time = out.split("code for a new desk: ")[1].split()[0]
        wrong = await circmesh("join", "--data", str(joiner.data), "--desk", joiner.desk,
                               "--admin", admin.peer_address, "--code", "AAAA-AAAA")
        assert wrong[0] == 1 and "code" in wrong[2].lower()
        code, out, err = await circmesh("join", "--data", str(joiner.data), "--desk", joiner.desk,
                                        "--admin", admin.peer_address, "--code", one_time)
        assert code == 0, err
        assert "joined cluster" in out
        again = await circmesh("join", "--data", str(tmp_path / "third"), "--desk", "Third",
                               "--admin", admin.peer_address, "--code", one_time)
        assert again[0] == 1  # a code works once
        await joiner.start()
        for d in (admin, joiner):  # no --peer anywhere: mDNS on 127.0.0.1 found them
            await wait_for(lambda d=d: linked(session, d, 1), within=30, what=f"{d.desk} found its peer")
        yield admin, joiner
    finally:
        await joiner.stop()
        await admin.stop()


async def test_joined_desks_find_each_other_by_mdns_and_replicate(two_desks, session) -> None:
    admin, joiner = two_desks
    status, _ = await post_json(session, f"{admin.url}/api/v1/checkouts", {"patron": "23001", "item": "39001"})
    assert status == 201

    async def arrived() -> bool:
        loans = await get_json(session, f"{joiner.url}/api/v1/loans?item=39001")
        return bool(loans["loans"])

    await wait_for(arrived, what="the loan at the joined desk")
    desks = await get_json(session, f"{admin.url}/api/v1/desks")
    assert {(d["desk"], d["role"]) for d in desks["desks"]} == {("Front desk", "admin"), ("Returns", "desk")}
    status = await get_json(session, f"{joiner.url}/api/v1/status")
    assert status["cluster"]["name"] == "Town library"

    async def found_by_mdns() -> bool:
        # the link may have come in from the other desk before this desk's own browser saw that desk
        return (await get_json(session, f"{joiner.url}/api/v1/status"))["discovery"]["found"] >= 1

    await wait_for(found_by_mdns, within=30, what="the joined desk's own mDNS browser finding the admin desk")


async def test_refusals_are_counted_and_the_desk_keeps_serving(two_desks, session, tmp_path: Path) -> None:
    admin, _ = two_desks
    port = admin.peer_port
    # 1. a node whose certificate comes from another CA (it trusts ours, so it is this desk that refuses)
    stranger = identity()
    foreign_ca = create_ca("Another library")
    cert = issue_node_certificate(foreign_ca, stranger.key.public_key(), stranger.node_id, "Stranger", "desk")
    ours = load_cert_pem((admin.data / "ca.pem").read_bytes())
    ctx = client_context(stranger.key, cert, ours, tmp_path / "stranger-tls")
    with pytest.raises((aiohttp.ClientError, OSError)):
        await session.ws_connect(f"wss://127.0.0.1:{port}/peer", ssl=ctx)
    # 2. a plain TCP client sending random bytes
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(os.urandom(300))
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    writer.close()
    # 3. a member gone bad (a genuine certificate from this cluster's CA, which lives on the admin desk)
    ca = load_ca(admin.data / "ca")
    member = identity()
    member_cert = issue_node_certificate(ca, member.key.public_key(), member.node_id, "Rogue", "desk")
    member_ctx = client_context(member.key, member_cert, ca.cert, tmp_path / "member-tls")
    url = f"wss://127.0.0.1:{port}/peer"
    #    a. random bytes after the handshake
    ws = await session.ws_connect(url, ssl=member_ctx)
    await ws.send_bytes(os.urandom(200))
    await _closed(ws)
    #    b. a hello naming another node than its certificate does
    ws = await session.ws_connect(url, ssl=member_ctx)
    await ws.send_bytes(frames.encode(frames.Hello(stranger.node_id, "Rogue", 0)))
    await _closed(ws)
    #    c. its own name, but events signed with another key
    ws = await session.ws_connect(url, ssl=member_ctx)
    await ws.send_bytes(frames.encode(frames.Hello(member.node_id, "Rogue", 0)))
    other = SimDesk()  # another key, writing in the member's name
    forged = other.write("checkout", patron="P1", item="FORGED", due=DUE)
    obj = msgpack.unpackb(forged.encode())
    obj.update(node=member.node_id, id=f"{member.node_id}:1")
    doc = LogDocument(member.actor_id)
    record = make_record(member.node_id, member.public_key_raw, "Rogue", 1, member.sign, cert_pem(member_cert))
    doc.put({record_key(member.node_id): record.encode(), f"{member.node_id}:1": msgpack.packb(obj)})
    await _converse_until_closed(ws, doc)

    async def all_counted() -> dict | None:
        r = (await get_json(session, f"{admin.url}/api/v1/status"))["refusals"]
        wanted = ("link_tls_untrusted_certificate", "link_tls_wrong_protocol", "garbage", "impostor", "bad_signature")
        return r if all(r.get(k, 0) >= 1 for k in wanted) else None

    await wait_for(all_counted, within=20, what="every refusal counted in /status")
    loans = await get_json(session, f"{admin.url}/api/v1/loans?item=FORGED")
    assert loans["loans"] == []
    status, _ = await post_json(session, f"{admin.url}/api/v1/checkins", {"item": "still-serving"})
    assert status == 201


async def _converse_until_closed(ws, doc: LogDocument) -> None:
    """Runs Automerge's sync conversation with the desk until the desk hangs up (bounded)."""
    state = doc.new_sync_state()
    async with asyncio.timeout(15):
        while True:
            while (message := doc.generate_sync(state)) is not None:
                await ws.send_bytes(frames.encode(frames.Sync(message)))
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return
            frame = frames.decode(msg.data)
            if isinstance(frame, frames.Sync):
                doc.receive_sync(state, frame.message)


async def _closed(ws) -> None:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                return


async def test_a_revoked_desk_is_dropped_everywhere_and_refused(two_desks, session) -> None:
    admin, joiner = two_desks
    status, body = await post_json(session, f"{admin.url}/api/v1/desks/{joiner.node}/revocation",
                                   {"reason": "stolen laptop"})
    assert status == 201, body

    async def dropped() -> bool:
        status = await get_json(session, f"{admin.url}/api/v1/status")
        return not any(p["connected"] for p in status["peers"])

    await wait_for(dropped, within=30, what="the revoked desk dropped")
    # the revoked desk keeps scanning locally, but nothing it writes reaches the cluster any more
    status, _ = await post_json(session, f"{joiner.url}/api/v1/checkouts", {"patron": "666", "item": "X66"})
    assert status == 201

    async def refused_again() -> bool:
        status = await get_json(session, f"{admin.url}/api/v1/status")
        return status["refusals"].get("link_untrusted_peer", 0) + status["refusals"].get(
            "link_tls_untrusted_certificate", 0) >= 1

    await wait_for(refused_again, within=30, what="the revoked desk's reconnection refused")
    loans = await get_json(session, f"{admin.url}/api/v1/loans?item=X66")
    assert loans["loans"] == []
    desks = await get_json(session, f"{admin.url}/api/v1/desks")
    assert [(d["revoked"], d["revoked_by"]) for d in desks["desks"] if d["desk"] == "Returns"] == [
        (True, body["event"]["id"])]


async def test_foreign_and_spoofed_mdns_records_lead_nowhere(two_desks, session) -> None:
    admin, _ = two_desks
    status = await get_json(session, f"{admin.url}/api/v1/status")
    cluster_id = status["cluster"]["id"]
    # a TCP server that is not a circmesh node, for the spoofed record to point at
    bogus = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    bogus_port = bogus.sockets[0].getsockname()[1]
    zc = AsyncZeroconf(interfaces=["127.0.0.1"])
    infos = []
    for node_id, cluster, port in [("a" * 32, "f" * 32, 9), ("b" * 32, cluster_id, bogus_port)]:
        info = ServiceInfo(SERVICE_TYPE, instance_name(node_id), addresses=[socket.inet_aton("127.0.0.1")],
                           port=port, properties=record_properties(node_id, cluster, port))
        await zc.async_register_service(info)
        infos.append(info)
    try:
        async def counted() -> dict | None:
            s = await get_json(session, f"{admin.url}/api/v1/status")
            d = s["discovery"]
            return s if d.get("ignored_foreign_cluster", 0) >= 1 and s["refusals"].get("link_dials_failed", 0) else None

        status = await wait_for(counted, within=30, what="foreign record ignored and spoofed one failing")
        assert all(p["node"] != "b" * 32 or not p["connected"] for p in status["peers"])
    finally:
        for info in infos:
            await zc.async_unregister_service(info)
        await zc.async_close()
        bogus.close()
    status, _ = await post_json(session, f"{admin.url}/api/v1/checkins", {"item": "still-serving"})
    assert status == 201




async def test_away_lasts_until_the_desk_writes_again(two_desks, session) -> None:
    admin, joiner = two_desks

    async def away() -> bool | None:
        desks = (await get_json(session, f"{admin.url}/api/v1/desks"))["desks"]
        return next(d["away"] for d in desks if d["desk"] == "Returns")

    status, body = await post_json(session, f"{admin.url}/api/v1/desks/{joiner.node}/away", {})
    assert status == 201, body
    assert await away() is True
    status, body = await post_json(session, f"{admin.url}/api/v1/desks/{admin.node}/away", {})
    assert status == 400  # a desk cannot mark itself away
    status, _ = await post_json(session, f"{joiner.url}/api/v1/checkins", {"item": "back-again"})
    assert status == 201

    async def back() -> bool:
        return await away() is False

    await wait_for(back, what="the desk no longer away once it writes")
