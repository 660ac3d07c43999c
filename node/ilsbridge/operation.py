"""The neutral shape of one circulation operation as an ILS or an offline file sees it.

Events in the replicated log carry much more (signature, clock, desk); adapters and file formats only
need this, so they stay independent of the log and can be tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

OperationKind = Literal["checkout", "checkin", "renew", "payment", "in_house_use", "patron_register"]
KINDS: tuple[str, ...] = ("checkout", "checkin", "renew", "payment", "in_house_use", "patron_register")


@dataclass(frozen=True)
class Operation:
    """One thing a desk did. `at` is timezone-aware (UTC when it comes from the log)."""

    kind: OperationKind
    at: datetime
    item: str | None = None
    patron: str | None = None
    amount: Decimal | None = None
    due: datetime | None = None
    # The event id this operation comes from, when it comes from the log (for ledgers and reports).
    ref: str | None = None
    # patron_register only: the patron's name and other registration fields.
    details: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise ValueError("Operation.at must be timezone-aware")


OutcomeStatus = Literal["applied", "refused", "transient"]


@dataclass(frozen=True)
class Outcome:
    """The ILS's answer to one operation.

    applied: the ILS did it. refused: the ILS will never do it as sent (unknown patron, item not issued…):
    an outcome to show staff, not something to retry. transient: the ILS could not answer (offline, timeout,
    5xx): retry later. `message` is the ILS's own words where it has them ("Success.", "Item not issued.").
    """

    status: OutcomeStatus
    message: str
    code: str = ""
