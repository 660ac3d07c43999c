"""Node records: how a node announces its public key and desk name in the replicated document.

The node id is the hash of the key, so a record is self-certifying: any node can check it without a
directory. (Membership — which keys the cluster admits — is added by the cluster CA's certificates.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.crdt.event import pack
from node.trust.identity import is_node_id, node_id_for

RECORD_PREFIX = "n:"


class RecordError(ValueError):
    pass


@dataclass(frozen=True)
class NodeRecord:
    node: str
    key: bytes
    desk: str
    at: int
    sig: bytes
    cert: str | None = None  # PEM of the node's certificate from the cluster CA, when in a cluster

    def unsigned(self) -> dict[str, object]:
        out: dict[str, object] = {"node": self.node, "key": self.key, "desk": self.desk, "at": self.at}
        if self.cert is not None:
            out["cert"] = self.cert
        return out

    def encode(self) -> bytes:
        return pack({**self.unsigned(), "sig": self.sig})


def record_key(node_id: str) -> str:
    return RECORD_PREFIX + node_id


def make_record(node: str, key: bytes, desk: str, at: int, sign: Callable[[bytes], bytes],
                cert: str | None = None) -> NodeRecord:
    unsigned = NodeRecord(node, key, desk, at, b"", cert)
    return NodeRecord(node, key, desk, at, sign(pack(unsigned.unsigned())), cert)


def decode_record(raw: bytes, expected_node: str) -> NodeRecord:
    """Checks shape, that the key hashes to the node id, and the self-signature."""
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True, max_bin_len=256, max_str_len=4096)
    except Exception as e:
        raise RecordError(f"node record is not valid msgpack ({type(e).__name__})") from None
    if not isinstance(obj, dict) or set(obj) - {"cert"} != {"node", "key", "desk", "at", "sig"}:
        raise RecordError("node record has the wrong fields")
    node, key, desk, at, sig = obj["node"], obj["key"], obj["desk"], obj["at"], obj["sig"]
    cert = obj.get("cert")
    if cert is not None and (not isinstance(cert, str) or len(cert) > 4000):
        raise RecordError("node record's certificate must be PEM text")
    if not is_node_id(node) or node != expected_node:
        raise RecordError("node record is stored under another node's id")
    if not isinstance(key, bytes) or len(key) != 32 or node_id_for(key) != node:
        raise RecordError("node record's key does not match its node id")
    if not isinstance(desk, str) or not 0 < len(desk) <= 64 or any(ord(c) < 32 for c in desk):
        raise RecordError("desk name must be 1-64 printable characters")
    if not isinstance(at, int) or isinstance(at, bool) or at < 0 or not isinstance(sig, bytes):
        raise RecordError("node record is malformed")
    record = NodeRecord(node, key, desk, at, sig, cert)
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(sig, pack(record.unsigned()))
    except (InvalidSignature, ValueError):
        raise RecordError("node record's signature does not verify") from None
    return record
