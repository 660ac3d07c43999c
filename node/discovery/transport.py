"""The one seam where peer-link security lives.

Issue-2 links run plain WebSockets on loopback; mutual TLS (the cluster CA) replaces `PlainTransport`
with a transport that builds SSL contexts and names the peer from its certificate. Nothing else changes.
"""

from __future__ import annotations

import ssl
from typing import Protocol


class Transport(Protocol):
    scheme: str

    def server_ssl(self) -> ssl.SSLContext | None: ...

    def client_ssl(self) -> ssl.SSLContext | None: ...

    def peer_identity(self, ssl_object: ssl.SSLObject | None) -> str | None:
        """The node id the transport proved for this connection, or None if it proves none."""
        ...


class PlainTransport:
    scheme = "ws"

    def server_ssl(self) -> ssl.SSLContext | None:
        return None

    def client_ssl(self) -> ssl.SSLContext | None:
        return None

    def peer_identity(self, ssl_object: ssl.SSLObject | None) -> str | None:
        return None
