"""Loan rules and the opening calendar: when is an item due. Pure functions, no I/O.

Koha computes a daily loan's due date as the checkout day plus the loan period, moved forward to the next
day the library is open, at 23:59. The simulator does the same, so that due dates land on an open day.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

DUE_TIME = time(23, 59, 0)
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class LoanRule:
    """One cell of the category × item type table (Koha: issuelength, renewalsallowed)."""

    loan_days: int
    renewals_allowed: int


@dataclass(frozen=True)
class Calendar:
    """Weekdays (Monday = 0) the library is always closed, and its holidays."""

    closed_weekdays: frozenset[int]
    holidays: frozenset[date]

    def is_open(self, day: date) -> bool:
        return day.weekday() not in self.closed_weekdays and day not in self.holidays

    def next_open(self, day: date) -> date:
        for _ in range(366):
            if self.is_open(day):
                return day
            day += timedelta(days=1)
        raise ValueError("the calendar has no open day within a year")


def due_date(start: datetime, rule: LoanRule, calendar: Calendar) -> datetime:
    """Due date (UTC) of a loan that starts at `start` under `rule`."""
    day = as_utc(start).date() + timedelta(days=rule.loan_days)
    return datetime.combine(calendar.next_open(day), DUE_TIME, tzinfo=UTC)


def default_holidays(years: Collection[int]) -> frozenset[date]:
    """Fixed public holidays the seeded library closes on."""
    days = set()
    for year in years:
        for month, dom in ((1, 1), (5, 1), (7, 14), (11, 11), (12, 24), (12, 25), (12, 26), (12, 31)):
            days.add(date(year, month, dom))
    return frozenset(days)


def as_utc(when: datetime) -> datetime:
    """Naive datetimes are read as UTC: the simulator keeps every clock in UTC."""
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def format_timestamp(when: datetime) -> str:
    """Koha's `YYYY-MM-DD HH:MM:SS` in UTC (what the offline service and the database use)."""
    return as_utc(when).strftime(TIMESTAMP_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Koha's offline-service timestamp (UTC). Accepts a `T` separator and a missing seconds part."""
    text = text.strip().replace("T", " ")
    for fmt in (TIMESTAMP_FORMAT, "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"bad timestamp {text!r}")


def rfc3339(when: datetime | None) -> str | None:
    """The REST API's date-time form."""
    return None if when is None else as_utc(when).isoformat(timespec="seconds")
