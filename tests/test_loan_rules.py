"""Due dates at the desk from the ILS's loan rules and calendar (node/snapshot/loanrules.py): the most
specific rule wins, closed days push the date on, an hourly loan counts hours, and whatever the ILS sends
is read or left out, never raised on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from node.snapshot.loanrules import Calendar, LoanRules, Rule, due, rules_from_koha

START = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)  # a Wednesday


def koha(category: str | None, item_type: str | None, length: int, unit: str = "days") -> dict:
    return {"context": {"library_id": "*", "patron_category_id": category, "item_type_id": item_type},
            "issuelength": length, "lengthunit": unit, "renewalsallowed": 2, "maxissueqty": 10}


def test_the_most_specific_rule_wins() -> None:
    rules = rules_from_koha([koha(None, None, 21), koha("CHILD", None, 14), koha(None, "DVD", 7),
                             koha("CHILD", "DVD", 3), koha("STAFF", "LAPTOP", 4, "hours")], None)
    days = {(c, t): (due(rules, c, t, START) - START).days for c in ("ADULT", "CHILD") for t in ("BOOK", "DVD")}
    assert days == {("ADULT", "BOOK"): 21, ("ADULT", "DVD"): 7, ("CHILD", "BOOK"): 14, ("CHILD", "DVD"): 3}
    assert due(rules, "ADULT", "BOOK", START) == datetime(2026, 12, 23, 23, 59, tzinfo=UTC)  # end of that day
    assert due(rules, "STAFF", "LAPTOP", START) == START + timedelta(hours=4)
    assert due(rules, None, None, START) == datetime(2026, 12, 23, 23, 59, tzinfo=UTC)  # unknown card and item
    assert due(LoanRules(), "ADULT", "BOOK", START) is None  # no rule at all: the desk's --loan-days


def test_the_desks_library_renewals_and_daylight_saving() -> None:
    rules = rules_from_koha([koha(None, None, 21), {**koha(None, None, 14), "renewalperiod": 7},
                             {**koha(None, None, 28), "context": {"library_id": "EAST"}}], None)
    # of two default rules the first is kept; the library's own rule wins over both
    assert (due(rules, "ADULT", "BOOK", START, library="EAST") - START).days == 28
    assert (due(rules, "ADULT", "BOOK", START, library="MAIN") - START).days == 21
    assert (due(LoanRules([Rule("*", "*", 14, renewal=7)]), "A", "B", START, renewal=True) - START).days == 7
    assert (due(LoanRules([Rule("*", "*", 14)]), "A", "B", START, renewal=True) - START).days == 14
    prague = ZoneInfo("Europe/Prague")  # summer time begins on 28 March 2027: due at 23:59 local all the same
    spring = due(LoanRules([Rule("*", "*", 21)]), "A", "B", datetime(2027, 3, 15, 10, tzinfo=prague))
    assert (spring.date().isoformat(), spring.hour, spring.minute, spring.utcoffset()) == (
        "2027-04-05", 23, 59, timedelta(hours=2))
    naive = due(LoanRules([Rule("*", "*", 21)]), "A", "B", datetime(2027, 3, 15, 10))  # desk time in, out
    assert naive == datetime(2027, 4, 5, 23, 59) and naive.tzinfo is None


def test_closed_days_push_the_due_date_to_the_next_open_day() -> None:
    calendar = {"library_id": "MAIN", "closed_weekdays": [6], "holidays": ["2026-12-24", "2026-12-25",
                                                                          "2026-12-26"]}
    rules = rules_from_koha([koha(None, None, 21), koha(None, "DVD", 4)], calendar)
    assert due(rules, "ADULT", "BOOK", START).date().isoformat() == "2026-12-23"  # a Wednesday, open
    assert due(rules, "ADULT", "DVD", START).date().isoformat() == "2026-12-07"  # Sunday 6th closed
    late = START + timedelta(days=1)  # 21 days on is Christmas Eve: closed until Sunday, closed too
    assert due(rules, "ADULT", "BOOK", late).date().isoformat() == "2026-12-28"
    shut = LoanRules([Rule("*", "*", 1)], Calendar(list(range(7)), []))
    assert due(shut, "A", "B", START).date().isoformat() == "2027-12-04"  # closed all year: not forever


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)


rule_rows = st.builds(koha, st.sampled_from([None, "ADULT", "CHILD"]), st.sampled_from([None, "BOOK", "DVD"]),
                      st.integers(-5, 4000), st.sampled_from(["days", "hours", "weeks"]))
calendars = st.fixed_dictionaries({"closed_weekdays": st.lists(st.integers(-1, 8), max_size=8),
                                   "holidays": st.lists(st.dates().map(str), max_size=5)})


@settings(max_examples=300)
@given(st.one_of(json_values, st.lists(st.one_of(rule_rows, st.dictionaries(st.sampled_from(
    ["context", "issuelength", "lengthunit"]), json_values)))), st.one_of(json_values, calendars))
def test_whatever_the_ils_sends_is_read_or_left_out(rules, calendar) -> None:
    read = rules_from_koha(rules, calendar)
    for r in read.rules:
        assert 0 <= r.length <= 3650 and r.category and r.item_type
    result = due(read, "ADULT", "BOOK", START)
    assert result is None or START <= result <= START + timedelta(days=3650 + 367)
