"""Mutual TLS 1.3 for peer links, with every refused handshake counted.

asyncio reports a failed server-side TLS handshake to nobody, so the peer port accepts plain TCP itself
and upgrades each connection with `loop.start_tls`: a client with a certificate from another CA, no TLS
at all (a plain TCP client, random bytes) or TLS 1.2 fails there, is counted by reason, and is closed.
A connection that completes the handshake is handed to aiohttp, which serves `/peer` (a certificate is
required: `peer_identity`) and the enrolment endpoints (no certificate yet: a joining desk has none).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Callable, Set
from pathlib import Path

from aiohttp import web

from node.cluster import Membership
from node.trust.identity import NodeIdentity
from node.trust.tlsctx import client_context, peer_node_id, server_context

log = logging.getLogger(__name__)
HANDSHAKE_TIMEOUT = 10.0


class TlsTransport:
    scheme = "wss"

    def __init__(self, identity: NodeIdentity, membership: Membership, key_dir: Path,
                 revoked: Callable[[], Set[str]]) -> None:
        """`revoked()`: the nodes revoked now, asked on every handshake (node/revocation.py)."""
        self.membership = membership
        self._revoked = revoked
        self._server = server_context(identity.key, membership.node_cert, membership.ca_cert, key_dir)
        # Enrolment requests arrive before the joining desk has a certificate; /peer insists on one.
        self._server.verify_mode = ssl.CERT_OPTIONAL
        self._client = client_context(identity.key, membership.node_cert, membership.ca_cert, key_dir)

    def server_ssl(self) -> ssl.SSLContext:
        return self._server

    def client_ssl(self) -> ssl.SSLContext:
        return self._client

    def peer_identity(self, ssl_object: ssl.SSLObject | None) -> str | None:
        """The node the peer's certificate proves; raises TrustError (no certificate, revoked…)."""
        return peer_node_id(ssl_object, self.membership.ca_cert, frozenset(self._revoked())).node_id


_UNTRUSTED = {"TLSV1_ALERT_UNKNOWN_CA", "CERTIFICATE_VERIFY_FAILED", "SSLV3_ALERT_BAD_CERTIFICATE",
              "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV13_ALERT_CERTIFICATE_REQUIRED",
              "PEER_DID_NOT_RETURN_A_CERTIFICATE"}
_WRONG_PROTOCOL = {"HTTP_REQUEST", "WRONG_VERSION_NUMBER", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE",
                   "UNKNOWN_PROTOCOL", "VERSION_TOO_LOW", "TLSV1_ALERT_PROTOCOL_VERSION", "NO_SHARED_CIPHER",
                   "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"}


def classify(exc: BaseException) -> str:
    """The counter a refused handshake goes to: a certificate the cluster does not trust, something that
    is not TLS 1.3 at all (plain TCP, HTTP, random bytes, TLS 1.2), a timeout, or anything else."""
    reason = getattr(exc, "reason", None) or ""
    if reason in _UNTRUSTED:
        return "tls_untrusted_certificate"
    if reason in _WRONG_PROTOCOL:
        return "tls_wrong_protocol"
    if isinstance(exc, TimeoutError):
        return "tls_handshake_timeout"
    if isinstance(exc, ConnectionResetError):
        return "tls_handshake_aborted"  # the client hung up: typically a desk of another cluster, not trusting us
    return "tls_handshake_failed"


class _Acceptor(asyncio.Protocol):
    def __init__(self, runner: web.AppRunner, ctx: ssl.SSLContext, counters: Counter[str]) -> None:
        self.runner, self.ctx, self.counters = runner, ctx, counters
        self.buffer: list[bytes] = []
        self.target: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.pause_reading()  # nothing may be read before TLS takes the connection over
        self.task = asyncio.get_running_loop().create_task(self._upgrade())

    async def _upgrade(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        try:
            tls = await loop.start_tls(self.transport, self, self.ctx, server_side=True,
                                       ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as e:
            self.counters[classify(e)] += 1
            log.info("peer port: TLS handshake refused: %s", e)
            self.transport.abort()
            return
        server = self.runner.server  # None once the runner is cleaned up: the desk is stopping
        if tls is None or self.lost or server is None:
            if tls is not None and server is None:
                tls.abort()
            return
        handler = server()
        tls.set_protocol(handler)
        handler.connection_made(tls)
        self.target = handler
        for chunk in self.buffer:
            handler.data_received(chunk)
        self.buffer.clear()

    # Application data that arrives with the handshake's last flight, before aiohttp takes over.
    def data_received(self, data: bytes) -> None:
        if self.target is not None:
            self.target.data_received(data)
        else:
            self.buffer.append(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.target is not None:
            self.target.connection_lost(exc)


async def serve_tls(runner: web.AppRunner, host: str, port: int, ctx: ssl.SSLContext,
                    counters: Counter[str]) -> asyncio.Server:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: _Acceptor(runner, ctx, counters), host, port)
