"""The one seam where peer-link security lives.

`TlsTransport` (node/discovery/tls.py) is the one in use: mutual TLS 1.3 with the cluster CA, naming the
peer from its certificate. The peer table and links see only this protocol.
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
