"""The peer-link wire format: one msgpack map per binary WebSocket message.

hello {t, v, node, desk, wall}  — first frame each way; these fields stay in every protocol version, so a
                                  peer of another version is told apart from garbage (the link machine
                                  refuses it as `wrong_version`)
sync  {t, m}                    — an Automerge sync message
tip   {t, vector, wall, bridge?} — what the sender holds ({node: highest seq}), for lag and clock offset;
                                  a bridge adds its state (term, ILS reachable, uploading) for the cluster bar
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from node.trust.identity import is_node_id

PROTOCOL_VERSION = 1
MAX_FRAME = 64 * 1024 * 1024


class FrameError(ValueError):
    pass


@dataclass(frozen=True)
class Hello:
    node: str
    desk: str
    wall: int
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Sync:
    message: bytes


@dataclass(frozen=True)
class Tip:
    vector: dict[str, int]
    wall: int
    bridge: dict[str, Any] | None = None


BRIDGE_FIELDS = {"node": str, "desk": str, "term": int, "reachable": bool, "last_probe": int, "uploading": bool,
                 "problem": str}
OPTIONAL_BRIDGE_FIELDS = {"last_probe", "problem"}


Frame = Hello | Sync | Tip


def encode(frame: Frame) -> bytes:
    if isinstance(frame, Hello):
        obj: dict[str, Any] = {"t": "hello", "v": frame.version, "node": frame.node, "desk": frame.desk,
                               "wall": frame.wall}
    elif isinstance(frame, Sync):
        obj = {"t": "sync", "m": frame.message}
    else:
        obj = {"t": "tip", "vector": frame.vector, "wall": frame.wall}
        if frame.bridge is not None:
            obj["bridge"] = frame.bridge
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
        return Hello(node, desk, _int(obj.get("wall")), version)
    if kind == "sync":
        message = obj.get("m")
        if not isinstance(message, bytes):
            raise FrameError("sync frame carries no bytes")
        return Sync(message)
    if kind == "tip":
        vector = obj.get("vector")
        if not isinstance(vector, dict) or len(vector) > 10_000 or not all(
            is_node_id(k) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in vector.items()
        ):
            raise FrameError("tip has no valid vector")
        return Tip(vector, _int(obj.get("wall")), _bridge(obj.get("bridge")))
    raise FrameError(f"unknown frame type {kind!r}")


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
