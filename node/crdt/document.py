"""The replicated document on Automerge: every call to the automerge binding lives here.

Entries sit directly in the root map (event id -> signed event bytes, "n:<node>" -> node record).
A nested `events` map would have to be created once by a shared genesis change, or two desks that start
apart would each create their own and one desk's events would vanish behind the other's map; the root map
exists identically in every document. Values are opaque signed bytes: a peer can only add an entry,
and what it added is checked (see verify.py) before it is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from automerge import _automerge as am
from automerge.core import ROOT, ScalarType

# The binding exposes patches only through their Debug text; the format is fixed by the pinned version.
_PATCH = re.compile(
    r'^Patch \{ obj: (?P<obj>Root|Id\([^)]*\)), path: \[.*?\], action: (?P<action>\w+) \{ '
    r'(?:key: "(?P<key>[^"\\]*)"|prop: Map\("(?P<prop>[^"\\]*)"\))'
)


# One peer's sync progress, opaque outside this module (links hold one each).
SyncState = am.SyncState


class DocumentError(ValueError):
    pass


@dataclass(frozen=True)
class Touched:
    """What a received sync message changed."""

    keys: tuple[str, ...]  # root keys written, deleted or put in conflict, in patch order, deduplicated
    problems: tuple[str, ...]  # changes that are not root-map entries at all


class LogDocument:
    def __init__(self, actor_id: bytes, saved: bytes | None = None) -> None:
        self._actor = actor_id
        self._doc = am.Document.load(saved) if saved else am.Document(actor_id)
        self._doc.set_actor(actor_id)

    def heads(self) -> list[bytes]:
        return self._doc.get_heads()

    def put(self, entries: dict[str, bytes]) -> list[bytes]:
        """One local change holding `entries`; returns its change bytes, to be persisted."""
        before = self._doc.get_heads()
        with self._doc.transaction() as tx:
            for key, value in entries.items():
                tx.put(ROOT, key, ScalarType.Bytes, value)
        return [c.bytes for c in self._doc.get_changes(before)]

    def value(self, key: str) -> bytes | None:
        got = self._doc.get(ROOT, key)
        if got is None:
            return None
        value, _ = got
        if not isinstance(value, tuple) or value[0] != ScalarType.Bytes:
            return None
        # The stubs say a Bytes scalar comes back as bytes; this binding gives a list of ints.
        raw: object = value[1]
        if isinstance(raw, bytes):
            return raw
        if isinstance(raw, list):
            return bytes(raw)
        return None

    def keys(self) -> list[str]:
        return self._doc.keys(ROOT)

    def new_sync_state(self) -> SyncState:
        return am.SyncState()

    def generate_sync(self, state: SyncState) -> bytes | None:
        message = self._doc.generate_sync_message(state)
        return None if message is None else message.encode()

    def receive_sync(self, state: SyncState, data: bytes) -> tuple[list[bytes], Touched]:
        """Applies a peer's sync message. Returns the heads before it (for rollback) and what it touched."""
        try:
            message = am.Message.decode(data)
        except Exception as e:  # the binding raises its own error types on garbage
            raise DocumentError(f"not an Automerge sync message ({type(e).__name__})") from None
        before = self._doc.get_heads()
        try:
            self._doc.receive_sync_message(state, message)
        except Exception as e:
            raise DocumentError(f"sync message refused by Automerge ({e})") from None
        after = self._doc.get_heads()
        if sorted(after) == sorted(before):
            return before, Touched((), ())
        keys: dict[str, None] = {}
        problems: list[str] = []
        for patch in self._doc.diff(before, after):
            text = repr(patch)
            m = _PATCH.match(text)
            if m is None:
                problems.append(f"unrecognised change: {text[:120]}")
            elif m["obj"] != "Root":
                problems.append(f"{m['action']} inside a nested object")
            else:
                keys[m["key"] if m["key"] is not None else m["prop"]] = None
        return before, Touched(tuple(keys), tuple(problems))

    def changes_since(self, heads: list[bytes]) -> list[bytes]:
        return [c.bytes for c in self._doc.get_changes(heads)]

    def rollback(self, heads: list[bytes]) -> None:
        """Forgets everything after `heads`: how a refused sync message is undone."""
        self._doc = self._doc.fork(heads)
        self._doc.set_actor(self._actor)

    def save(self) -> bytes:
        return self._doc.save()
