"""Revoking a node: a statement signed by an admin node, carried as an event in the replicated log.

Signed by an admin node's own key rather than the CA key because the CA key sits on one desk only,
while any admin desk must be able to shut out a stolen PC, including when the CA's desk is switched
off. The statement embeds the signer's certificate, so any node can check it with nothing but the
cluster CA certificate, whichever peer relayed it and in whatever order it arrives. A revocation
cannot be undone: the node must enrol again with a new key (and so a new node id).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.trust.certs import (
    TrustError,
    cert_pem,
    cluster_id_of,
    load_cert_pem,
    verify_node_certificate,
)
from node.trust.identity import is_node_id, node_id_for

DOMAIN = b"circmesh revocation v1\n"
MAX_REASON = 200
FIELDS = ("v", "cluster", "node", "by", "by_cert", "at", "reason", "sig")


@dataclass(frozen=True)
class Revocation:
    node_id: str
    by: str
    at_ms: int
    reason: str


def _signed_bytes(statement: Mapping[str, object]) -> bytes:
    body = {k: statement[k] for k in FIELDS if k != "sig"}
    return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def make_revocation(
    admin_key: Ed25519PrivateKey,
    admin_cert: x509.Certificate,
    cluster_id: str,
    node_id: str,
    reason: str = "",
    *,
    at_ms: int | None = None,
) -> dict[str, object]:
    """A statement for the log: admin `admin_cert`'s holder revokes `node_id` from `cluster_id`."""
    if not is_node_id(node_id):
        raise TrustError("the node to revoke is not a node id")
    if len(reason) > MAX_REASON or not reason.isprintable():
        raise TrustError(f"the reason must be printable and at most {MAX_REASON} characters")
    statement: dict[str, object] = {
        "v": 1,
        "cluster": cluster_id,
        "node": node_id,
        "by": node_id_for(admin_key.public_key()),
        "by_cert": cert_pem(admin_cert),
        "at": int(time.time() * 1000) if at_ms is None else at_ms,
        "reason": reason,
    }
    statement["sig"] = base64.b64encode(admin_key.sign(_signed_bytes(statement))).decode("ascii")
    return statement


def verify_revocation(
    statement: Mapping[str, object],
    ca_cert: x509.Certificate,
    revoked: set[str] | frozenset[str] = frozenset(),
) -> Revocation:
    """Checks a revocation that arrived through the log; raises TrustError.

    `revoked` is the set of nodes already revoked when this statement was made (in log order): a
    revoked admin cannot revoke anyone any more. The signer's certificate must have been valid at the
    statement's time, so revocations stay valid after the admin's certificate expires.
    """
    if not isinstance(statement, Mapping) or set(statement) != set(FIELDS):
        raise TrustError(f"a revocation has exactly the fields {', '.join(FIELDS)}")
    v, cluster, node, by, by_cert, at, reason, sig = (statement[k] for k in FIELDS)
    if v != 1:
        raise TrustError("unknown revocation version")
    if not (isinstance(cluster, str) and isinstance(by_cert, str) and isinstance(reason, str)
            and isinstance(sig, str) and isinstance(at, int) and not isinstance(at, bool)):
        raise TrustError("a revocation field has the wrong type")
    if not is_node_id(node) or not is_node_id(by):
        raise TrustError("a revocation names a malformed node id")
    if cluster != cluster_id_of(ca_cert):
        raise TrustError("the revocation is for another cluster")
    if not 0 <= at < 2**53:
        raise TrustError("the revocation time is out of range")
    try:
        when = dt.datetime.fromtimestamp(at / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        raise TrustError("the revocation time is out of range") from None
    signer = verify_node_certificate(load_cert_pem(by_cert), ca_cert, revoked, at=when)
    if signer.node_id != by:
        raise TrustError("the revocation's signer certificate is not the signer's")
    if signer.role != "admin":
        raise TrustError(f"node {by} is not an admin and cannot revoke")
    try:
        signature = base64.b64decode(sig, validate=True)
        signer.public_key.verify(signature, _signed_bytes(statement))
    except (binascii.Error, ValueError, InvalidSignature):
        raise TrustError("the revocation's signature is not valid") from None
    return Revocation(node_id=str(node), by=str(by), at_ms=at, reason=reason)
