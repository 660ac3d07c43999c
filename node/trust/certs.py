"""Checking that a certificate belongs to an enrolled node of this cluster.

What a node certificate says (written by `ca.issue_node_certificate`, read back here):

- subject CN = the node id, subject OU = the role (`desk` or `admin`);
- subjectAltName URIs `urn:circmesh:node:<node id>`, `urn:circmesh:cluster:<cluster id>` and
  `urn:circmesh:desk:<percent-encoded desk name>`;
- the node's own Ed25519 key, so the key that signs its events is the key that is certified.

The role sits in the OU because it is a plain, standard attribute every X.509 tool shows; the desk name
goes in a URI because it is free text (any script, any length up to `MAX_DESK_NAME`) and a URI can carry
it percent-encoded without the 64-character limit of directory-name attributes.

The cluster CA certificate carries `urn:circmesh:cluster:<cluster id>` in its own subjectAltName: the
cluster id is read from there, never guessed from a name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast
from urllib.parse import quote, unquote

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.trust.identity import is_node_id, node_id_for

Role = Literal["desk", "admin"]
ROLES: tuple[str, ...] = ("desk", "admin")
MAX_DESK_NAME = 100

NODE_URN = "urn:circmesh:node:"
CLUSTER_URN = "urn:circmesh:cluster:"
DESK_URN = "urn:circmesh:desk:"


class TrustError(Exception):
    """A certificate, statement or peer that this cluster must not trust; the message says why."""


@dataclass(frozen=True)
class NodeCertInfo:
    node_id: str
    cluster_id: str
    desk_name: str
    role: Role
    public_key: Ed25519PublicKey
    not_after: dt.datetime


def is_cluster_id(value: object) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def check_desk_name(desk_name: object) -> str:
    """Desk names are shown to staff and put in certificates: printable text of a sane length only."""
    if not isinstance(desk_name, str) or not desk_name.strip():
        raise TrustError("the desk name is empty")
    if len(desk_name) > MAX_DESK_NAME:
        raise TrustError(f"the desk name is longer than {MAX_DESK_NAME} characters")
    if not desk_name.isprintable():
        raise TrustError("the desk name holds control characters")
    return desk_name


def desk_urn(desk_name: str) -> str:
    return DESK_URN + quote(desk_name, safe="")


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_cert_pem(pem: str | bytes) -> x509.Certificate:
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise TrustError(f"not a PEM certificate: {exc}") from None


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, hex: what an admin can read aloud to compare two screens."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return san.get_values_for_type(x509.UniformResourceIdentifier)


def _one_uri(uris: list[str], prefix: str, what: str) -> str:
    found = [u[len(prefix):] for u in uris if u.startswith(prefix)]
    if len(found) != 1:
        raise TrustError(f"the certificate must name exactly one {what}, it names {len(found)}")
    return found[0]


def _subject_value(cert: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> str:
    attrs = cert.subject.get_attributes_for_oid(oid)
    if len(attrs) != 1:
        raise TrustError(f"the certificate subject must hold exactly one {what}")
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def cluster_id_of(ca_cert: x509.Certificate) -> str:
    """The cluster id a CA certificate stands for; refuses anything that is not a circmesh cluster CA."""
    if not _is_ca(ca_cert):
        raise TrustError("the cluster certificate is not a CA certificate")
    cluster_id = _one_uri(_san_uris(ca_cert), CLUSTER_URN, "cluster")
    if not is_cluster_id(cluster_id):
        raise TrustError("the cluster CA names a malformed cluster id")
    return cluster_id


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def verify_node_certificate(
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    revoked: set[str] | frozenset[str],
    *,
    at: dt.datetime | None = None,
) -> NodeCertInfo:
    """Everything a node must hold true before it believes a certificate names a member of its cluster.

    `at` is the moment the certificate must be valid at (now by default). Raises TrustError.
    """
    cluster_id = cluster_id_of(ca_cert)
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise TrustError("the certificate was not issued by this cluster's CA") from None
    when = at or _now()
    if when < cert.not_valid_before_utc:
        raise TrustError(f"the certificate is not valid before {cert.not_valid_before_utc.isoformat()}")
    if when > cert.not_valid_after_utc:
        raise TrustError(f"the certificate expired at {cert.not_valid_after_utc.isoformat()}")
    if _is_ca(cert):
        raise TrustError("a CA certificate cannot stand for a node")
    key = cert.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise TrustError("the certificate does not hold an Ed25519 key")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise TrustError("the certificate has no extended key usage") from None
    if ExtendedKeyUsageOID.SERVER_AUTH not in eku or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise TrustError("the certificate is not for both TLS client and server use")

    node_id = _subject_value(cert, NameOID.COMMON_NAME, "common name")
    uris = _san_uris(cert)
    if not is_node_id(node_id) or _one_uri(uris, NODE_URN, "node") != node_id:
        raise TrustError("the certificate's node id is malformed or named inconsistently")
    if node_id != node_id_for(key):
        raise TrustError("the certificate's node id does not match its key")
    cert_cluster = _one_uri(uris, CLUSTER_URN, "cluster")
    if cert_cluster != cluster_id:
        raise TrustError(f"the certificate belongs to cluster {cert_cluster[:32]!r}, not {cluster_id!r}")
    role = _subject_value(cert, NameOID.ORGANIZATIONAL_UNIT_NAME, "role")
    if role not in ROLES:
        raise TrustError(f"unknown role {role[:20]!r}")
    try:
        desk_name = check_desk_name(unquote(_one_uri(uris, DESK_URN, "desk"), errors="strict"))
    except UnicodeDecodeError:
        raise TrustError("the certificate's desk name is not UTF-8") from None
    if node_id in revoked:
        raise TrustError(f"node {node_id} has been revoked")
    return NodeCertInfo(
        node_id=node_id,
        cluster_id=cluster_id,
        desk_name=desk_name,
        role=cast(Role, role),
        public_key=key,
        not_after=cert.not_valid_after_utc,
    )


def make_member_record(cert: x509.Certificate) -> dict[str, str]:
    """What the replicated log stores about an enrolled node: its id and its certificate.

    The certificate is the proof; the id is there so the entry can be keyed and looked up, and is
    checked against the certificate on every read.
    """
    return {"node": _subject_value(cert, NameOID.COMMON_NAME, "common name"), "cert": cert_pem(cert)}


def verify_member_record(
    record: Mapping[str, object],
    ca_cert: x509.Certificate,
    revoked: set[str] | frozenset[str],
    *,
    expected_node_id: str | None = None,
    at: dt.datetime | None = None,
) -> NodeCertInfo:
    """Checks a member record that arrived through the log, from any peer, possibly relayed.

    Any peer may write anything into the replicated document, so the record itself proves nothing: only
    the CA's signature on the certificate inside it does. Give `expected_node_id` when checking the
    signer of an event, so a record cannot be swapped for another member's.
    """
    if not isinstance(record, Mapping):
        raise TrustError("a member record must be a map")
    node = record.get("node")
    pem = record.get("cert")
    if not isinstance(node, str) or not isinstance(pem, str):
        raise TrustError("a member record needs 'node' and 'cert' strings")
    info = verify_node_certificate(load_cert_pem(pem), ca_cert, revoked, at=at)
    if info.node_id != node:
        raise TrustError("the member record's node id differs from its certificate's")
    if expected_node_id is not None and info.node_id != expected_node_id:
        raise TrustError(f"the member record is for {info.node_id}, not {expected_node_id}")
    return info
