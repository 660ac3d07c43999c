"""When a loan made at the desk is due: the ILS's loan rules and opening calendar, read with the snapshot.

As Koha does for a daily loan (with its CircControl at the checkout library, and RenewalPeriodBase "now"):
the checkout day plus the loan period of the rule for the desk's library, the patron's category and the
item's type, moved forward to the next day the library is open, at 23:59 (desk
time, whatever the daylight-saving offset that day); an hourly loan is due that many hours on; a renewal
counts the rule's renewal period (else its loan period) from the day it is renewed. The most specific rule
wins: the library's before the default library's, then category and type, category, type, the default.
Rules and calendar come from Koha's `/api/v1/circulation_rules` and a calendar route (`rest.py`), read
through declared schemas: a rule that does not fit is left out, never raised on. Pure.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Any

import msgspec

DUE_TIME = time(23, 59)
ANY = "*"
MAX_RULES = 10_000


class Rule(msgspec.Struct, frozen=True, array_like=True):
    category: str  # "*": any
    item_type: str
    length: Annotated[int, msgspec.Meta(ge=0, le=3650)]
    hours: bool = False  # Koha's lengthunit "hours"
    library: str = ANY
    renewal: Annotated[int, msgspec.Meta(ge=0, le=3650)] | None = None  # Koha's renewalperiod


class Calendar(msgspec.Struct, frozen=True):
    closed_weekdays: Annotated[list[Annotated[int, msgspec.Meta(ge=0, le=6)]], msgspec.Meta(max_length=7)] = []
    holidays: Annotated[list[Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]],
                        msgspec.Meta(max_length=10_000)] = []


class LoanRules(msgspec.Struct, frozen=True):
    rules: Annotated[list[Rule], msgspec.Meta(max_length=MAX_RULES)] = []
    calendar: Calendar | None = None


class _KohaContext(msgspec.Struct):
    library_id: str | None = None
    patron_category_id: str | None = None
    item_type_id: str | None = None


class _KohaRule(msgspec.Struct):
    context: _KohaContext
    issuelength: int | None = None
    lengthunit: str = "days"
    renewalperiod: int | None = None


def rules_from_koha(rules: Any, calendar: Any) -> LoanRules:
    """The rule sets and calendar as the ILS gave them (None: it gave none); never raises."""
    out: list[Rule] = []
    for row in rules if isinstance(rules, list) else []:
        try:
            r = msgspec.convert(row, _KohaRule)
            if r.issuelength is None or not 0 <= r.issuelength <= 3650 or r.lengthunit not in ("days", "hours"):
                continue
            renewal = r.renewalperiod if r.renewalperiod is not None and 0 <= r.renewalperiod <= 3650 else None
            out.append(Rule(r.context.patron_category_id or ANY, r.context.item_type_id or ANY, r.issuelength,
                            r.lengthunit == "hours", r.context.library_id or ANY, renewal))
        except (msgspec.ValidationError, TypeError, ValueError):
            continue
    try:
        cal = msgspec.convert(calendar, Calendar) if calendar is not None else None
    except (msgspec.ValidationError, TypeError, ValueError):
        cal = None
    return LoanRules(out[:MAX_RULES], cal)


def _rule(rules: LoanRules, category: str | None, item_type: str | None, library: str | None) -> Rule | None:
    best: tuple[int, Rule] | None = None
    for r in rules.rules:
        if r.category not in (ANY, category) or r.item_type not in (ANY, item_type) or r.library not in (
                ANY, library):
            continue
        rank = (r.library != ANY) * 4 + (r.category != ANY) * 2 + (r.item_type != ANY)
        if best is None or rank > best[0]:
            best = (rank, r)
    return best[1] if best else None


def next_open(calendar: Calendar | None, day: date) -> date:
    if calendar is None:
        return day
    closed, holidays = set(calendar.closed_weekdays), set(calendar.holidays)
    for _ in range(366):
        if day.weekday() not in closed and day.isoformat() not in holidays:
            return day
        day += timedelta(days=1)
    return day  # a calendar closed all year: the period's own end


def due(rules: LoanRules, category: str | None, item_type: str | None, start: datetime, *,
        library: str | None = None, renewal: bool = False) -> datetime | None:
    """When a loan that starts at `start` is due; None when no rule applies. `start` naive is desk time,
    and so is the answer (the caller makes it an instant: `astimezone()` takes that day's offset); aware,
    the answer is in its zone."""
    rule = _rule(rules, category, item_type, library)
    if rule is None:
        return None
    length = rule.renewal if renewal and rule.renewal is not None else rule.length
    if rule.hours:  # elapsed hours, across a daylight-saving change too
        if start.tzinfo is None:
            return (start.astimezone() + timedelta(hours=length)).astimezone().replace(tzinfo=None)
        return start + timedelta(hours=length)
    day = next_open(rules.calendar, start.date() + timedelta(days=length))
    return datetime.combine(day, DUE_TIME, tzinfo=start.tzinfo)
