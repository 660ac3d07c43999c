"""Which desks are revoked: one fact, kept in one place, and asked for through `Revocations`.

The owner is the log core: `LogCore.revoked` (node -> the last seq accepted from it) and `revoked_by` (node -> that
revoke event), set as each readable `revoke` event is integrated, the first one for a node standing (kept
however old: the journal keeps revocations in memory at start, db.KEPT_KINDS). Why the log and not the fold or the TLS
layer: revocation decides what the log *accepts* — a revoked desk's events past `upto` are refused while a
peer's sync message is verified (`TrustPolicy.refuse_event`), before anything reaches the fold — and every
TLS handshake asks it too. Both must read it at once and cheaply; the log keeps it as events arrive, so
neither ever waits for a refold (the fold is redone from the start when an event sorts early). The fold does
not keep it again, the TLS transport asks `nodes()` on every handshake, the admin API asks whether a desk
is revoked and by which event, and the desk drops a revoked peer's link when the log has it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class RevocationSource(Protocol):
    """The owner (the log core, read through EventLog): who is revoked up to which seq, and by which event."""

    @property
    def revoked(self) -> Mapping[str, int]: ...

    @property
    def revoked_by(self) -> Mapping[str, str]: ...


class Revocations:
    def __init__(self, source: RevocationSource) -> None:
        self._source = source

    def __contains__(self, node: object) -> bool:
        return node in self._source.revoked

    def nodes(self) -> frozenset[str]:
        """Every revoked node (read on every TLS handshake)."""
        return frozenset(self._source.revoked)

    def revoked_by(self) -> dict[str, str]:
        """node -> the `revoke` event whose `upto` the log keeps: the first readable one to arrive."""
        return dict(self._source.revoked_by)
