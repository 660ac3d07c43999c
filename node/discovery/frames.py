"""The peer-link wire format: one msgpack map per binary WebSocket message.

hello {t, v, node, desk, wall, epoch, vector}
                                — first frame each way; t, v, node, desk and wall stay in every protocol
                                  version, so a peer of another version is told apart from garbage (the link
                                  machine refuses it as `wrong_version`)
sync  {t, m, e}                 — an Automerge sync message for the document of epoch `e` (its seal's id)
tip   {t, vector, wall, epoch, bridge?}
                                — what the sender holds ({node: highest seq}) and its epoch ([number, seal]),
                                  for catch-up, lag and clock offset; a bridge adds its state (term, ILS
                                  reachable, uploading) for the cluster bar
want  {t, ranges}               — journal runs asked for: [[node, first seq, last seq], ...]
run   {t, node, first, events, record, done}
                                — one desk's events first.. in a hash chain (raw signed bytes), with that
                                  desk's node record; `done`: nothing more comes for what was asked of it
chunks {t, names}               — snapshot chunks asked for by name (node/snapshot/chunks.py), a few at once
chunk {t, name, data}           — one of them, or data nil: the sender has not got it
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeGuard

import msgpack

from node.crdt.epochs import FIRST_TAG, EpochTag
from node.trust.identity import is_node_id

PROTOCOL_VERSION = 3  # 3: snapshot chunks
MAX_FRAME = 64 * 1024 * 1024
MAX_RANGES = 10_000
MAX_RUN_EVENTS = 20_000
MAX_CHUNK_NAMES = 16
MAX_CHUNK_DATA = 16 * 1024 * 1024


class FrameError(ValueError):
    pass


@dataclass(frozen=True)
class Hello:
    node: str
    desk: str
    wall: int
    version: int = PROTOCOL_VERSION
    epoch: EpochTag = FIRST_TAG
    vector: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Sync:
    message: bytes
    epoch: str = ""


@dataclass(frozen=True)
class Tip:
    vector: dict[str, int]
    wall: int
    bridge: dict[str, Any] | None = None
    epoch: EpochTag = FIRST_TAG


@dataclass(frozen=True)
class Want:
    ranges: list[tuple[str, int, int]]


@dataclass(frozen=True)
class Run:
    node: str
    first: int
    events: list[bytes]
    record: bytes | None = None
    done: bool = False


@dataclass(frozen=True)
class ChunkWant:
    names: list[str]


@dataclass(frozen=True)
class Chunk:
    name: str
    data: bytes | None


BRIDGE_FIELDS = {"node": str, "desk": str, "term": int, "reachable": bool, "last_probe": int, "uploading": bool,
                 "problem": str}
OPTIONAL_BRIDGE_FIELDS = {"last_probe", "problem"}


Frame = Hello | Sync | Tip | Want | Run | ChunkWant | Chunk


def encode(frame: Frame) -> bytes:
    if isinstance(frame, Hello):
        obj: dict[str, Any] = {"t": "hello", "v": frame.version, "node": frame.node, "desk": frame.desk,
                               "wall": frame.wall, "epoch": [frame.epoch.number, frame.epoch.seal],
                               "vector": frame.vector}
    elif isinstance(frame, Sync):
        obj = {"t": "sync", "m": frame.message, "e": frame.epoch}
    elif isinstance(frame, Tip):
        obj = {"t": "tip", "vector": frame.vector, "wall": frame.wall,
               "epoch": [frame.epoch.number, frame.epoch.seal]}
        if frame.bridge is not None:
            obj["bridge"] = frame.bridge
    elif isinstance(frame, Want):
        obj = {"t": "want", "ranges": [list(r) for r in frame.ranges]}
    elif isinstance(frame, ChunkWant):
        obj = {"t": "chunks", "names": frame.names}
    elif isinstance(frame, Chunk):
        obj = {"t": "chunk", "name": frame.name, "data": frame.data}
    else:
        obj = {"t": "run", "node": frame.node, "first": frame.first, "events": frame.events,
               "record": frame.record, "done": frame.done}
    packed: bytes = msgpack.packb(obj, use_bin_type=True)  # msgpack has no types: say what it returns
    return packed


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise FrameError("expected a non-negative integer")
    return value


def decode(data: object) -> Frame:
    """Never raises anything but FrameError, whatever the bytes."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_FRAME:
        raise FrameError("frame must be binary and at most 64 MiB")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:
        raise FrameError(f"frame is not msgpack ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise FrameError("frame is not a map")
    kind = obj.get("t")
    if kind == "hello":
        version = _int(obj.get("v"))  # which versions this node speaks is the link machine's decision
        node, desk = obj.get("node"), obj.get("desk")
        if not is_node_id(node) or not isinstance(desk, str) or len(desk) > 64:
            raise FrameError("hello has no valid node id or desk name")
        if version != PROTOCOL_VERSION:
            return Hello(node, desk, _int(obj.get("wall")), version)
        return Hello(node, desk, _int(obj.get("wall")), version, _epoch(obj.get("epoch")),
                     _vector(obj.get("vector"), "hello"))
    if kind == "sync":
        message, epoch = obj.get("m"), obj.get("e")
        if not isinstance(message, bytes) or not isinstance(epoch, str) or len(epoch) > 60:
            raise FrameError("sync frame carries no bytes or no epoch")
        return Sync(message, epoch)
    if kind == "tip":
        return Tip(_vector(obj.get("vector"), "tip"), _int(obj.get("wall")), _bridge(obj.get("bridge")),
                   _epoch(obj.get("epoch")))
    if kind == "want":
        ranges = obj.get("ranges")
        if not isinstance(ranges, list) or len(ranges) > MAX_RANGES:
            raise FrameError("want has no list of ranges")
        out = []
        for r in ranges:
            if not isinstance(r, list) or len(r) != 3 or not is_node_id(r[0]):
                raise FrameError("want has a bad range")
            first, last = _int(r[1]), _int(r[2])
            if not 1 <= first <= last <= 2**53:
                raise FrameError("want has an empty range")
            out.append((r[0], first, last))
        return Want(out)
    if kind == "run":
        node, events, record, done = obj.get("node"), obj.get("events"), obj.get("record"), obj.get("done")
        if not is_node_id(node) or not isinstance(done, bool):
            raise FrameError("run names no node")
        if not isinstance(events, list) or len(events) > MAX_RUN_EVENTS or not all(
                isinstance(e, bytes) for e in events):
            raise FrameError("run carries no list of events")
        if record is not None and not isinstance(record, bytes):
            raise FrameError("run carries a bad node record")
        first = _int(obj.get("first"))
        if first < 1:
            raise FrameError("run starts before the first event")
        return Run(node, first, events, record, done)
    if kind == "chunks":
        wanted = obj.get("names")
        if (not isinstance(wanted, list) or not 1 <= len(wanted) <= MAX_CHUNK_NAMES
                or not all(_is_chunk_name(n) for n in wanted)):
            raise FrameError(f"chunks must name 1 to {MAX_CHUNK_NAMES} chunks by their SHA-256")
        return ChunkWant(wanted)
    if kind == "chunk":
        name, data = obj.get("name"), obj.get("data")
        if not _is_chunk_name(name) or not (data is None or (isinstance(data, bytes) and len(data) <= MAX_CHUNK_DATA)):
            raise FrameError("chunk has no name, or data that is not bytes")
        return Chunk(name, data)
    raise FrameError(f"unknown frame type {kind!r}")


def _is_chunk_name(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _vector(vector: object, where: str) -> dict[str, int]:
    if not isinstance(vector, dict) or len(vector) > 10_000 or not all(
        is_node_id(k) and isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**53
        for k, v in vector.items()
    ):
        raise FrameError(f"{where} has no valid vector")
    return vector


def _epoch(value: object) -> EpochTag:
    if (not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], str) or len(value[1]) > 60
            or (value[1] == "") != (value[0] == 0)):
        raise FrameError("epoch must be [number, seal id]")
    return EpochTag(_int(value[0]), value[1])


def _bridge(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != set(BRIDGE_FIELDS):
        raise FrameError("tip's bridge state has the wrong fields")
    for key, kind in BRIDGE_FIELDS.items():
        v = value[key]
        if key in OPTIONAL_BRIDGE_FIELDS and v is None:
            continue
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)) or (isinstance(v, str) and len(v) > 200):
            raise FrameError(f"tip's bridge state has a bad {key}")
    if not is_node_id(value["node"]):
        raise FrameError("tip's bridge state names no node")
    return value
