"""Mutual TLS 1.3 between nodes, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.trust.ca import CertificateAuthority, create_ca, issue_node_certificate
from node.trust.certs import NodeCertInfo, TrustError, cert_pem
from node.trust.identity import node_id_for
from node.trust.tlsctx import client_context, peer_node_id, server_context

DEADLINE = 10.0


@dataclass
class Node:
    key: Ed25519PrivateKey
    node_id: str
    cert: object


def enrol(ca: CertificateAuthority, desk: str) -> Node:
    key = Ed25519PrivateKey.generate()
    node_id = node_id_for(key.public_key())
    return Node(key, node_id, issue_node_certificate(ca, key.public_key(), node_id, desk, "desk"))


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return create_ca("Test cluster")


@dataclass
class PeerServer:
    """A node's accepting side: verifies each peer, answers with the peer's node id, or hangs up."""

    ca: CertificateAuthority
    revoked: set[str]
    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            info = peer_node_id(writer.get_extra_info("ssl_object"), self.ca.cert, self.revoked)
        except TrustError as exc:
            self.refused.append(str(exc))
            writer.close()
            return
        self.accepted.append(info.node_id)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await reader.readexactly(4)
            writer.write(f"hello {info.node_id}\n".encode())
            await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def serving(ctx: ssl.SSLContext, peer: PeerServer):
    server = await asyncio.start_server(peer.handle, "127.0.0.1", 0, ssl=ctx, ssl_handshake_timeout=DEADLINE)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class Talk:
    line: bytes
    version: str | None
    server: NodeCertInfo | TrustError  # what the client's own check says about the server


async def talk(port: int, ctx: ssl.SSLContext, ca: CertificateAuthority | None = None,
               revoked: frozenset[str] = frozenset()) -> Talk:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx), DEADLINE)
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        server: NodeCertInfo | TrustError = TrustError("not checked")
        if ca is not None:
            try:
                server = peer_node_id(ssl_object, ca.cert, revoked)
            except TrustError as exc:
                server = exc
        writer.write(b"ping")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), DEADLINE)
        return Talk(line, ssl_object.version(), server)
    finally:
        writer.close()
        with contextlib.suppress(ssl.SSLError, ConnectionError):
            await writer.wait_closed()


async def assert_refused(port: int, ctx: ssl.SSLContext) -> None:
    """In TLS 1.3 a client learns that the server refused its certificate only when it next reads."""
    try:
        line = (await talk(port, ctx)).line
    except (ssl.SSLError, ConnectionError):
        return
    assert line == b"", f"the server answered a client it should have refused: {line!r}"


async def assert_serves(port: int, ca: CertificateAuthority, tmp_path, peer: PeerServer) -> None:
    """The control for each refusal: the same server still admits a proper member."""
    member = enrol(ca, "Member desk")
    line = (await talk(port, client_context(member.key, member.cert, ca.cert, tmp_path))).line
    assert line == f"hello {member.node_id}\n".encode()
    assert peer.accepted[-1] == member.node_id


@pytest.fixture
def server_node(ca) -> Node:
    return enrol(ca, "Server desk")


@pytest.fixture
def client_node(ca) -> Node:
    return enrol(ca, "Client desk")


async def test_mutual_tls13_identifies_both_ends(ca, server_node, client_node, tmp_path) -> None:
    peer = PeerServer(ca, set())
    sctx = server_context(server_node.key, server_node.cert, ca.cert, tmp_path / "s")
    cctx = client_context(client_node.key, client_node.cert, ca.cert, tmp_path / "c")
    assert sctx.minimum_version == ssl.TLSVersion.TLSv1_3 and cctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert sctx.verify_mode == ssl.CERT_REQUIRED and cctx.verify_mode == ssl.CERT_REQUIRED
    async with serving(sctx, peer) as port:
        result = await talk(port, cctx, ca)
    assert result.version == "TLSv1.3"
    assert result.line == f"hello {client_node.node_id}\n".encode()
    seen_by_client = result.server
    assert isinstance(seen_by_client, NodeCertInfo)
    assert seen_by_client.node_id == server_node.node_id
    assert seen_by_client.desk_name == "Server desk"
    assert peer.accepted == [client_node.node_id]
    # The key files ssl needed were removed once loaded.
    assert os.listdir(tmp_path / "s") == [] and os.listdir(tmp_path / "c") == []


async def test_client_from_another_ca_is_refused(ca, server_node, tmp_path) -> None:
    other_ca = create_ca("Other cluster")
    stranger = enrol(other_ca, "Stranger")
    peer = PeerServer(ca, set())
    sctx = server_context(server_node.key, server_node.cert, ca.cert, tmp_path)
    # The stranger trusts our CA, so only the server's check of the client certificate can stop it.
    cctx = client_context(stranger.key, stranger.cert, ca.cert, tmp_path)
    async with serving(sctx, peer) as port:
        await assert_refused(port, cctx)
        # Refused by OpenSSL in the handshake: the connection never reached the node's own check.
        assert peer.accepted == [] and peer.refused == []
        await assert_serves(port, ca, tmp_path, peer)


async def test_server_from_another_ca_is_refused_by_the_client(ca, client_node, tmp_path) -> None:
    other_ca = create_ca("Other cluster")
    impostor = enrol(other_ca, "Impostor")
    peer = PeerServer(other_ca, set())
    sctx = server_context(impostor.key, impostor.cert, ca.cert, tmp_path)
    cctx = client_context(client_node.key, client_node.cert, ca.cert, tmp_path)
    async with serving(sctx, peer) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            await talk(port, cctx)
    assert peer.accepted == []


async def test_client_without_certificate_is_refused(ca, server_node, tmp_path) -> None:
    peer = PeerServer(ca, set())
    sctx = server_context(server_node.key, server_node.cert, ca.cert, tmp_path)
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(cadata=cert_pem(ca.cert))
    async with serving(sctx, peer) as port:
        await assert_refused(port, bare)
        assert peer.accepted == [] and peer.refused == []
        await assert_serves(port, ca, tmp_path, peer)


async def test_garbage_is_refused_and_the_server_goes_on(ca, server_node, client_node, tmp_path) -> None:
    peer = PeerServer(ca, set())
    sctx = server_context(server_node.key, server_node.cert, ca.cert, tmp_path)
    cctx = client_context(client_node.key, client_node.cert, ca.cert, tmp_path)
    async with serving(sctx, peer) as port:
        for first in (0x00, 0x42, 0x7F):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # Random bytes, but never the start of a record OpenSSL would wait to complete: a first byte of
            # 20-24 (a TLS content type) or with its high bit set (an SSLv2-style hello) announces a length
            # of up to 32 KiB, and the server then rightly waits for the rest (seen once as a 10 s timeout).
            writer.write(bytes([first]) + os.urandom(599))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
                # The server hangs up (possibly after a TLS alert); read until it does.
                while await asyncio.wait_for(reader.read(4096), DEADLINE):
                    pass
            writer.close()
        line = (await talk(port, cctx)).line
    assert line == f"hello {client_node.node_id}\n".encode()
    assert peer.accepted == [client_node.node_id]


async def test_tls12_is_refused(ca, server_node, client_node, tmp_path) -> None:
    peer = PeerServer(ca, set())
    sctx = server_context(server_node.key, server_node.cert, ca.cert, tmp_path)
    old = client_context(client_node.key, client_node.cert, ca.cert, tmp_path)
    old.minimum_version = ssl.TLSVersion.TLSv1_2
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    async with serving(sctx, peer) as port:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await talk(port, old)
    assert peer.accepted == [] and peer.refused == []

    # And our client will not settle for a TLS 1.2 server either.
    old_server = server_context(server_node.key, server_node.cert, ca.cert, tmp_path)
    old_server.minimum_version = ssl.TLSVersion.TLSv1_2
    old_server.maximum_version = ssl.TLSVersion.TLSv1_2
    cctx = client_context(client_node.key, client_node.cert, ca.cert, tmp_path)
    async with serving(old_server, peer) as port:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await talk(port, cctx)
    assert peer.accepted == []


async def test_revoked_peer_is_refused_after_the_handshake(ca, server_node, client_node, tmp_path) -> None:
    # The context was built before the revocation: only peer_node_id can know about it.
    revoked: set[str] = set()
    peer = PeerServer(ca, revoked)
    sctx = server_context(server_node.key, server_node.cert, ca.cert, tmp_path)
    cctx = client_context(client_node.key, client_node.cert, ca.cert, tmp_path)
    async with serving(sctx, peer) as port:
        assert (await talk(port, cctx)).line.startswith(b"hello")
        revoked.add(client_node.node_id)
        await assert_refused(port, cctx)
        # The same check on the client's side: a revoked server is recognised too.
        result = await talk(port, client_context(server_node.key, server_node.cert, ca.cert, tmp_path),
                            ca, frozenset({server_node.node_id}))
        assert isinstance(result.server, TrustError) and "revoked" in str(result.server)
    assert peer.accepted == [client_node.node_id, server_node.node_id]
    assert len(peer.refused) == 1 and "revoked" in peer.refused[0]
