"""This desk's membership of a cluster: the files `circmesh init` and `circmesh join` leave in its data
directory, and the policy that decides which nodes' records and events the log accepts.

Files: `cluster.json` (cluster id and name, this desk's role), `ca.pem` (the cluster CA's certificate),
`node.pem` (this desk's certificate, for its own Ed25519 key), and on the desk that created the cluster
`ca/` (the CA key, mode 0600) — the desk that can admit new desks.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from node.crdt.event import Event
from node.crdt.records import NodeRecord
from node.crdt.refusals import Refusal, Refused
from node.trust.ca import CertificateAuthority, create_ca, issue_node_certificate, load_ca, save_ca
from node.trust.certs import (
    NodeCertInfo,
    TrustError,
    cert_pem,
    load_cert_pem,
    verify_member_record,
    verify_node_certificate,
)
from node.trust.identity import NodeIdentity

CLUSTER_FILE = "cluster.json"
CA_FILE = "ca.pem"
NODE_CERT_FILE = "node.pem"
CA_DIR = "ca"


class NotEnrolled(Exception):
    """This data directory belongs to no cluster yet."""


@dataclass(frozen=True)
class Membership:
    cluster_id: str
    cluster_name: str
    role: str
    ca_cert: x509.Certificate
    node_cert: x509.Certificate
    ca: CertificateAuthority | None  # only on the desk that holds the CA key

    @property
    def node_cert_pem(self) -> str:
        return cert_pem(self.node_cert)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_membership(data_dir: Path, *, cluster_id: str, cluster_name: str, role: str,
                    ca_cert: x509.Certificate, node_cert: x509.Certificate) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    _write(data_dir / CA_FILE, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(data_dir / NODE_CERT_FILE, node_cert.public_bytes(serialization.Encoding.PEM))
    _write(data_dir / CLUSTER_FILE, json.dumps(
        {"cluster_id": cluster_id, "cluster_name": cluster_name, "role": role}, indent=2).encode() + b"\n")


def load_membership(data_dir: Path, identity: NodeIdentity) -> Membership:
    path = data_dir / CLUSTER_FILE
    if not path.exists():
        raise NotEnrolled(f"{data_dir} belongs to no cluster: run `circmesh init` on the first desk, "
                          "`circmesh join` on the others")
    try:
        meta = json.loads(path.read_text())
        ca_cert = load_cert_pem((data_dir / CA_FILE).read_bytes())
        node_cert = load_cert_pem((data_dir / NODE_CERT_FILE).read_bytes())
    except (OSError, ValueError, TrustError) as e:
        raise NotEnrolled(f"the cluster files in {data_dir} are unreadable: {e}") from None
    info = verify_node_certificate(node_cert, ca_cert, set())
    if info.node_id != identity.node_id:
        raise NotEnrolled(f"{NODE_CERT_FILE} certifies node {info.node_id}, not this desk's key")
    ca = load_ca(data_dir / CA_DIR) if (data_dir / CA_DIR).exists() else None
    return Membership(meta["cluster_id"], meta.get("cluster_name", ""), info.role, ca_cert, node_cert, ca)


def init_cluster(data_dir: Path, identity: NodeIdentity, desk: str, cluster_name: str) -> Membership:
    """The first desk: a new cluster CA, and this desk admitted as its first admin."""
    if (data_dir / CLUSTER_FILE).exists():
        raise ValueError(f"{data_dir} already belongs to a cluster")
    ca = create_ca(cluster_name)
    save_ca(ca, data_dir / CA_DIR)
    cert = issue_node_certificate(ca, identity.key.public_key(), identity.node_id, desk, "admin")
    save_membership(data_dir, cluster_id=ca.cluster_id, cluster_name=cluster_name, role="admin",
                    ca_cert=ca.cert, node_cert=cert)
    return load_membership(data_dir, identity)


def admit_locally(ca: CertificateAuthority, data_dir: Path, identity: NodeIdentity, desk: str,
                  role: str = "desk") -> Membership:
    """Admits a desk whose data directory this machine can write (provisioning, the demo, tests).
    Desks on other machines join over the network with a one-time code instead."""
    cert = issue_node_certificate(ca, identity.key.public_key(), identity.node_id, desk, role)  # type: ignore[arg-type]
    save_membership(data_dir, cluster_id=ca.cluster_id, cluster_name=ca.cluster_name, role=role,
                    ca_cert=ca.cert, node_cert=cert)
    return load_membership(data_dir, identity)


class TrustPolicy:
    """Who may write what into the log. Without a cluster (a lone desk, unit tests) every self-certifying
    node record is admitted; `ClusterPolicy` admits only nodes certified by the cluster CA."""

    def admit(self, record: NodeRecord) -> str | None:
        return None

    def refuse_event(self, event: Event, record: NodeRecord, revoked_upto: int | None) -> Refused | None:
        if revoked_upto is not None and event.seq > revoked_upto:
            return Refused(Refusal.REVOKED_NODE, f"event {event.id} was written by a revoked desk after its revocation")
        if event.kind in ("revoke", "away") and self.role_of(record) != "admin":
            return Refused(Refusal.NOT_ADMIN, f"event {event.id}: only an admin desk may revoke a desk or mark it away")
        return None

    def role_of(self, record: NodeRecord) -> str:
        return "admin"


class ClusterPolicy(TrustPolicy):
    def __init__(self, membership: Membership, now: Callable[[], dt.datetime] | None = None) -> None:
        self.membership = membership
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        self._roles: dict[str, str] = {}
        # Certificates found good, by (node, PEM): every sync message with events asks whether its signers are
        # members, and checking a certificate (parse, the CA's signature) was 6 % of a busy desk's CPU. Only
        # CA-signed certificates get in, so its size is bounded by the cluster's own; expiry is checked on use.
        self._good: dict[tuple[str, str], NodeCertInfo] = {}

    def check_record(self, record: NodeRecord) -> NodeCertInfo:
        if not record.cert:
            raise TrustError("the node record carries no certificate from this cluster's CA")
        key = (record.node, record.cert)
        info = self._good.get(key)
        now = self._now()
        if info is not None and now <= info.not_after:
            return info
        info = verify_member_record({"node": record.node, "cert": record.cert}, self.membership.ca_cert, set(),
                                    expected_node_id=record.node, at=now)  # an expired one raises here
        self._good[key] = info
        return info

    def admit(self, record: NodeRecord) -> str | None:
        try:
            info = self.check_record(record)
        except TrustError as e:
            return f"not a member of this cluster: {e}"
        self._roles[record.node] = info.role
        return None

    def role_of(self, record: NodeRecord) -> str:
        if record.node not in self._roles:
            self.admit(record)
        return self._roles.get(record.node, "desk")
