"""Patrons' personal data at rest: the desk's snapshot key, and the chunk files it seals (AES-GCM).

What it protects against: a snapshot file or chunk copied on its own (a backup of only the database, a file
sent by mistake) reads as noise, and a purge leaves the old files' blocks unreadable, because `shred`
destroys the key (32 bytes in one block: on an SSD that remaps blocks its old copy may survive; whole-disk
encryption covers that). What it does not: a desk starts unattended (a service at boot), so the key is a
file beside the node's private key (`snapshot.key`, mode 0600): whoever has the whole data directory reads
the patrons, as they could act as the desk. The key is this desk's alone; chunks travel between desks in
clear inside the mutual-TLS links and are sealed again by each desk that keeps them. Why SQLCipher for the
database and AES-GCM for the chunks: docs/architecture.md, decision log.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from node.snapshot.chunks import ChunkError, name_of
from node.trust.ca import write_private_file

KEY_FILE = "snapshot.key"
NONCE = 12


def load_or_create_key(data_dir: Path) -> bytes:
    """The desk's snapshot key; a new one (and so, unreadable old files) when there is none."""
    path = data_dir / KEY_FILE
    if path.exists():
        key = path.read_bytes()
        if len(key) == 32:
            return key
    key = secrets.token_bytes(32)
    data_dir.mkdir(parents=True, exist_ok=True)
    write_private_file(path, key)
    return key


def derive(key: bytes, purpose: str) -> bytes:
    """One key per use (the database, the chunks), so that neither cipher ever sees the other's key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(key)


def shred(data_dir: Path) -> None:
    """Overwrites the key and deletes it, durably: what it sealed can no longer be read, wherever copies of it
    lie. (A disk that remaps blocks, as SSDs do, may still hold the key's old block: whole-disk encryption is
    the answer there, not this.)"""
    path = data_dir / KEY_FILE
    try:
        with open(path, "r+b") as f:
            f.write(bytes(len(f.read())))
            f.flush()
            os.fsync(f.fileno())
    except FileNotFoundError:
        pass
    path.unlink(missing_ok=True)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ChunkFiles:
    """Chunks kept by name in a directory, each sealed with AES-GCM (nonce, then ciphertext; the name is the
    associated data, so a file renamed to another chunk's name does not open). Blocking: call from a worker
    thread. A file that does not open (cut short, damaged, another key's), or whose bytes are not the chunk its
    name says, is removed and reads as missing."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self.rekey(key)
        directory.mkdir(parents=True, exist_ok=True)

    def rekey(self, key: bytes) -> None:
        """Chunks from now on are sealed with `key` (after a purge: the old key is shredded)."""
        self._aead = AESGCM(derive(key, "circmesh snapshot chunks"))

    def _path(self, name: str) -> Path:
        return self.directory / name

    def has(self, name: str) -> bool:
        return self._path(name).exists()

    def put(self, name: str, data: bytes) -> None:
        """Keeps `data` as chunk `name`; ChunkError if the bytes are not that chunk (nothing is written)."""
        if name_of(data) != name:
            raise ChunkError(f"chunk {name[:12]}: its bytes do not hash to its name")
        nonce = secrets.token_bytes(NONCE)
        tmp = self.directory / f".{name}.{secrets.token_hex(4)}.tmp"  # two writers of one chunk never collide
        tmp.write_bytes(nonce + self._aead.encrypt(nonce, data, name.encode()))
        # No fsync: a chunk cut short by a power cut fails its tag on reading and is fetched again.
        os.replace(tmp, self._path(name))

    def get(self, name: str) -> bytes | None:
        try:
            sealed = self._path(name).read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], name.encode())
        except (InvalidTag, ValueError):
            data = None
        if data is None or name_of(data) != name:  # checked again: never served or built from wrong bytes
            self._path(name).unlink(missing_ok=True)
            return None
        return data

    def keep(self, names: set[str]) -> int:
        """Removes every chunk not named (an older snapshot's), and half-written files an hour old (younger
        ones may be a fetch's, in flight); how many went."""
        gone = 0
        stale = time.time() - 3600
        for path in self.directory.iterdir():
            if path.name in names:
                continue
            if path.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime > stale:
                        continue
            path.unlink(missing_ok=True)
            gone += 1
        return gone

    def names(self) -> set[str]:
        return {p.name for p in self.directory.iterdir() if not p.name.startswith(".")}
