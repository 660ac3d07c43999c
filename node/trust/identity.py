"""A node's persistent identity: the Ed25519 key that signs its events, and the node id derived from it.

The node id is a hash of the public key, so an id can be checked against a key without trusting anyone:
membership (which keys the cluster admits) is a separate question answered by the cluster CA.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

NODE_ID_HEX = 32


def raw_public_key(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def node_id_for(public_key: Ed25519PublicKey | bytes) -> str:
    raw = public_key if isinstance(public_key, bytes) else raw_public_key(public_key)
    return hashlib.sha256(raw).hexdigest()[:NODE_ID_HEX]


_NODE_ID = re.compile(f"[0-9a-f]{{{NODE_ID_HEX}}}")


def is_node_id(value: object) -> TypeGuard[str]:
    """Checked for every key of every version vector received: a compiled pattern, not a loop per character."""
    return isinstance(value, str) and _NODE_ID.fullmatch(value) is not None


@dataclass(frozen=True)
class NodeIdentity:
    key: Ed25519PrivateKey
    node_id: str
    actor_id: bytes  # the Automerge actor id: stable per node so changes stay attributable

    @property
    def public_key_raw(self) -> bytes:
        return raw_public_key(self.key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


def load_or_create_identity(data_dir: Path) -> NodeIdentity:
    """Creates the key on first start; afterwards the same key, so the node keeps its id across restarts."""
    data_dir.mkdir(parents=True, exist_ok=True)
    key_path = data_dir / "node.key"
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{key_path.name} does not hold an Ed25519 key")
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = key_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, key_path)
    node_id = node_id_for(key.public_key())
    return NodeIdentity(key=key, node_id=node_id, actor_id=bytes.fromhex(node_id))
