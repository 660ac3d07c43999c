"""The conflict rules: what the merged log shows that cannot simply be applied to the ILS.

Ids are built from event ids only, so every node that holds the same events names the same conflicts.
`needs_admin` separates what an admin must settle before upload from warnings that were already shown
at the desk (and deliberately overridden there) or that the ILS will answer harmlessly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# two desks lent one item to two patrons, neither seeing the other
CONCURRENT_CHECKOUT = "concurrent_checkout"
LENT_WHILE_ON_LOAN = "lent_while_on_loan"  # a desk lent an item it could see was on loan to someone else
CHECKIN_NOT_ON_LOAN = "checkin_not_on_loan"  # Koha: "Item not issued."
RENEW_NOT_ON_LOAN = "renew_not_on_loan"
DUPLICATE_REGISTRATION = "duplicate_registration"
REGISTRATION_REFUSED = "registration_refused"  # the ILS would not create the patron: their loans are held
# two admins answered one conflict differently, neither seeing the other's answer: until one answer is
# chosen, neither takes effect and the conflict stays open (`about` names it)
RESOLUTIONS_DISAGREE = "resolutions_disagree"
# an event that verifies (its desk signed it) but whose meaning this desk cannot read: kept, never applied
UNREADABLE_EVENT = "unreadable_event"
CLOCK_AHEAD = "clock_ahead"  # a desk's clock reads later than its peers' by more than the drift bound (clocks.py)


@dataclass(frozen=True)
class Conflict:
    id: str
    kind: str
    item: str | None
    patrons: tuple[str, ...]
    events: tuple[str, ...]  # in causal order
    needs_admin: bool
    about: str | None = None  # the conflict that a disagreement is about
    reason: str | None = None  # why an event is unreadable
    node: str | None = None  # clock_ahead: the desk whose clock is ahead…
    offset_ms: int | None = None  # …and by how much at least, as the log shows it

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind,
            "item": self.item,
            "patrons": list(self.patrons),
            "events": list(self.events),
            "needs_admin": self.needs_admin,
            "about": self.about,
            "reason": self.reason,
        }
        if self.node is not None:
            out["node"] = self.node
            out["offset_ms"] = self.offset_ms
        return out


def conflict_id(kind: str, events: tuple[str, ...]) -> str:
    return f"{kind}/{'+'.join(events)}"


def events_of(conflict: str) -> tuple[str, ...]:
    """The events a conflict id names (ids are built from them, so any desk can read them back)."""
    _kind, _, events = conflict.partition("/")
    return tuple(e for e in events.split("+") if e)


def make_conflict(
    kind: str, *, item: str | None, patrons: tuple[str, ...], events: tuple[str, ...], needs_admin: bool,
    about: str | None = None, reason: str | None = None,
) -> Conflict:
    return Conflict(conflict_id(kind, events), kind, item, patrons, events, needs_admin, about, reason)
