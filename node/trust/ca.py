"""The cluster's certificate authority: created once by `circmesh init`, it admits every other node.

The CA key is Ed25519 like the node keys, so one algorithm covers event signatures, certificates and
TLS. It lives only on the node where the cluster was created (an admin desk); the CA certificate is
public and every node holds a copy, which is how nodes that never met can still trust each other.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.trust.certs import (
    CLUSTER_URN,
    NODE_URN,
    ROLES,
    Role,
    TrustError,
    check_desk_name,
    cluster_id_of,
    desk_urn,
    load_cert_pem,
)
from node.trust.identity import node_id_for

CA_VALIDITY = dt.timedelta(days=20 * 365 + 5)
NODE_VALIDITY = dt.timedelta(days=5 * 365 + 1)
# Certificates start an hour in the past so a desk whose clock lags a little still accepts a fresh one.
CLOCK_SLACK = dt.timedelta(hours=1)
CA_KEY_FILE = "ca-key.pem"
CA_CERT_FILE = "ca-cert.pem"


@dataclass(frozen=True)
class CertificateAuthority:
    key: Ed25519PrivateKey
    cert: x509.Certificate
    cluster_id: str
    cluster_name: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _check_cluster_name(cluster_name: str) -> str:
    if not isinstance(cluster_name, str) or not cluster_name.strip() or len(cluster_name) > 64:
        raise TrustError("the cluster name must be 1 to 64 characters")
    if not cluster_name.isprintable():
        raise TrustError("the cluster name holds control characters")
    return cluster_name


def create_ca(
    cluster_name: str, *, cluster_id: str | None = None, now: dt.datetime | None = None
) -> CertificateAuthority:
    """A new cluster: a fresh Ed25519 CA key, a self-signed CA certificate, a random cluster id."""
    _check_cluster_name(cluster_name)
    cluster_id = cluster_id or secrets.token_hex(16)
    key = Ed25519PrivateKey.generate()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"circmesh CA {cluster_id}"),
        ]
    )
    start = (now or _now()) - CLOCK_SLACK
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(CLUSTER_URN + cluster_id)]),
            critical=False,
        )
        .sign(key, None)
    )
    cluster_id_of(cert)  # refuses a malformed cluster id given by the caller
    return CertificateAuthority(key=key, cert=cert, cluster_id=cluster_id, cluster_name=cluster_name)


def issue_node_certificate(
    ca: CertificateAuthority,
    node_public_key: Ed25519PublicKey,
    node_id: str,
    desk_name: str,
    role: Role,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    """Certifies a node's own Ed25519 key as member `node_id` of the cluster, for TLS both ways.

    Explicit validity dates are for tests and for re-issuing; by default about five years from now.
    """
    if not isinstance(node_public_key, Ed25519PublicKey):
        raise TrustError("a node key must be Ed25519")
    if node_id != node_id_for(node_public_key):
        raise TrustError("the node id does not match the node's key")
    if role not in ROLES:
        raise TrustError(f"unknown role {role!r}")
    check_desk_name(desk_name)
    start = not_before or (_now() - CLOCK_SLACK)
    end = not_after or (start + NODE_VALIDITY)
    ca_public = ca.key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(node_public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(NODE_URN + node_id),
                    x509.UniformResourceIdentifier(CLUSTER_URN + ca.cluster_id),
                    x509.UniformResourceIdentifier(desk_urn(desk_name)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(node_public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_public), critical=False)
        .sign(ca.key, None)
    )


def write_private_file(path: Path, data: bytes) -> None:
    """Atomically writes a secret with mode 0600 from the first byte (never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_public_file(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_ca(ca: CertificateAuthority, directory: Path, *, passphrase: bytes | None = None) -> None:
    """Key as PKCS#8 PEM (0600, encrypted when a passphrase is given), certificate as PEM."""
    directory.mkdir(parents=True, exist_ok=True)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    key_pem = ca.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    write_private_file(directory / CA_KEY_FILE, key_pem)
    _write_public_file(directory / CA_CERT_FILE, ca.cert.public_bytes(serialization.Encoding.PEM))


def load_ca_certificate(directory: Path) -> x509.Certificate:
    """The public half only: what every node (not just the admin holding the key) keeps."""
    cert = load_cert_pem((directory / CA_CERT_FILE).read_bytes())
    cluster_id_of(cert)
    return cert


def load_ca(directory: Path, *, passphrase: bytes | None = None) -> CertificateAuthority:
    cert = load_ca_certificate(directory)
    key_path = directory / CA_KEY_FILE
    if key_path.stat().st_mode & 0o077:
        raise TrustError(f"{CA_KEY_FILE} is readable by other users; it must be mode 0600")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=passphrase)
    except (ValueError, TypeError) as exc:
        raise TrustError(f"cannot read {CA_KEY_FILE}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TrustError(f"{CA_KEY_FILE} does not hold an Ed25519 key")
    if key.public_key() != cert.public_key():
        raise TrustError(f"{CA_KEY_FILE} does not belong to {CA_CERT_FILE}")
    names = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    cluster_name = str(names[0].value) if names else ""
    return CertificateAuthority(key=key, cert=cert, cluster_id=cluster_id_of(cert), cluster_name=cluster_name)


def ca_cert_from_pem(pem: str | bytes) -> x509.Certificate:
    cert = load_cert_pem(pem)
    cluster_id_of(cert)
    return cert
