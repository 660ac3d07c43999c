"""Mutual TLS 1.3 contexts for peer links: both ends show a node certificate from the cluster CA.

Peers are found by mDNS and addressed by IP, so hostnames mean nothing here: hostname checking is off
and a peer is identified by the node id in its certificate. OpenSSL checks the chain during the
handshake; `peer_node_id` must then be called on every new connection, because only it checks what
OpenSSL cannot know: the node id bound to the key, the cluster id, and the revocation list, which
changes while the node runs (a context, once built, keeps trusting a node revoked later).

Ed25519 certificates work with TLS 1.3 in OpenSSL 1.1.1 and later (RFC 8446 signature scheme
ed25519), so the node's event-signing key is also its TLS key and no second key pair is needed.
"""

from __future__ import annotations

import contextlib
import secrets
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.trust.ca import write_private_file
from node.trust.certs import NodeCertInfo, TrustError, cert_pem, verify_node_certificate


def _load_chain(ctx: ssl.SSLContext, node_key: Ed25519PrivateKey, node_cert: x509.Certificate,
                key_dir: Path) -> None:
    """ssl takes keys only from files: the key is written encrypted under a one-off password, 0600,
    loaded, and removed at once, so no usable copy of the key is left behind by this step."""
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_bytes(32)
    tag = secrets.token_hex(6)
    key_path = key_dir / f"tls-key-{tag}.pem"
    cert_path = key_dir / f"tls-cert-{tag}.pem"
    key_pem = node_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    try:
        write_private_file(key_path, key_pem)
        write_private_file(cert_path, cert_pem(node_cert).encode("ascii"))
        ctx.load_cert_chain(cert_path, key_path, password=password)
    finally:
        with contextlib.suppress(FileNotFoundError):
            key_path.unlink()
        with contextlib.suppress(FileNotFoundError):
            cert_path.unlink()


def _mutual(protocol: int, node_key: Ed25519PrivateKey, node_cert: x509.Certificate,
            ca_cert: x509.Certificate, key_dir: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    # Trust only the cluster CA: the system's public roots must never admit a peer.
    ctx.load_verify_locations(cadata=cert_pem(ca_cert))
    _load_chain(ctx, node_key, node_cert, key_dir)
    return ctx


def server_context(node_key: Ed25519PrivateKey, node_cert: x509.Certificate, ca_cert: x509.Certificate,
                   key_dir: Path) -> ssl.SSLContext:
    """For the side that accepts peer links; refuses clients without a certificate from the CA."""
    return _mutual(ssl.PROTOCOL_TLS_SERVER, node_key, node_cert, ca_cert, key_dir)


def client_context(node_key: Ed25519PrivateKey, node_cert: x509.Certificate, ca_cert: x509.Certificate,
                   key_dir: Path) -> ssl.SSLContext:
    """For the side that dials a peer; refuses servers without a certificate from the CA."""
    return _mutual(ssl.PROTOCOL_TLS_CLIENT, node_key, node_cert, ca_cert, key_dir)


def peer_node_id(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, ca_cert: x509.Certificate,
                 revoked: set[str] | frozenset[str]) -> NodeCertInfo:
    """The authoritative check of a connected peer; close the connection if this raises TrustError.

    With asyncio streams: `writer.get_extra_info("ssl_object")`; with aiohttp:
    `request.transport.get_extra_info("ssl_object")` or the client response's connection.
    """
    if ssl_object is None:
        raise TrustError("the connection is not TLS")
    if ssl_object.version() != "TLSv1.3":
        raise TrustError(f"the connection uses {ssl_object.version()}, not TLS 1.3")
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise TrustError("the peer presented no certificate")
    return verify_node_certificate(x509.load_der_x509_certificate(der), ca_cert, revoked)
