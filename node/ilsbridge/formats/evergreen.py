"""Evergreen's offline transaction file (`pending.xacts`): one JSON object a line, read and written.

Confirmed in the sources (project, file):

- Evergreen, `Open-ILS/web/js/ui/default/staff/offline.js` (the browser staff client's offline
  interface): the file it uploads is `JSON.stringify(xact) + '\\n'` for each pending transaction. A
  circulation transaction starts as `{timestamp: parseInt(Date.now() / 1000), type, delta: 0}` (seconds
  since 1970, UTC) and takes the fields of its form: `checkout` gets `patron_barcode`, `barcode`, or for
  a non-catalogued loan `noncat: 1`, `noncat_type`, `noncat_count`; `renew` gets `barcode` and optionally
  `patron_barcode`; both get `due_date` and `checkout_time` as `Date.toISOString()` strings (UTC,
  milliseconds, `Z`) when a due date was chosen; `in_house_use` gets `barcode` and `count` (1 by
  default); `checkin` gets `barcode` and `backdate` (a Date, so an ISO string as well). A registration is
  `{user: <the patron as a hash>, timestamp, type: 'register', delta: 0}`, the card barcode at
  `user.card.barcode`. Importing a file back into the client skips empty lines.
- Evergreen, `Open-ILS/src/offline/offline.pl` (the server side): every line is read as JSON; lines
  without a `type` are dropped; transactions are sorted on the upload's time delta + `timestamp` (the
  per-line `delta` is not used) and registrations are moved to the front. Checkout and renew pass
  `barcode`, `patron_barcode`, `due_date`, `checkout_time` and the `noncat…` fields to the circulation
  service; checkin passes `barcode` and `backdate`; in-house use `barcode` and `count` (default 1); a
  registration takes `user.card.barcode`, the `billing_address`/`mailing_address` hashes (and fails
  without either) and copies the remaining fields of `user` onto the new patron.

Import:

- `at` is `timestamp` (UTC, seconds; a float is accepted). `delta` must be a number when present and is
  otherwise unused, as on the server.
- `due_date` becomes `due`: ISO 8601; a time without an offset is read in `tz`; a date alone means the end
  of that day in `tz`. `checkout_time` and `backdate` go to `details` when they are not within the same
  second as `timestamp` (the client writes the moment of the scan there, which adds nothing).
- `in_house_use` with `count` N gives one operation with `("count", "N")` in `details` (nothing when N is
  1): one scan stays one event, and exporting it writes the same count back.
- A non-catalogued checkout has no item barcode and circmesh has no non-catalogued items: it is reported,
  not imported.
- `register` gives a `patron_register` whose `patron` is the card barcode and whose `details` are the
  scalar fields of `user` (booleans as `t`/`f`, numbers as text), sorted by name, plus the mailing address
  (or else the billing address, or else the first address) as `address.<field>`. Ids, `isnew`-style flags,
  fields starting with `_` or `$`, and the password (`passwd`) are left out.
- Fields that the reader does not use are ignored (the browser client may add its own).

Export writes the browser client's form: compact JSON in its field order, UTF-8, LF. Checkouts and
renewals carry `due_date` and `checkout_time` when the operation has a due date; check-ins always carry
`backdate`. Payments have no place in the file and are skipped and reported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from node.ilsbridge.formats.common import LineProblem, ParseResult, clean_id, quoted, run_lines, utc
from node.ilsbridge.operation import Operation, OperationKind

ITEM = "item barcode"
PATRON = "patron barcode"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_COUNT = 10_000
TYPES: dict[str, OperationKind] = {
    "checkout": "checkout",
    "renew": "renew",
    "checkin": "checkin",
    "in_house_use": "in_house_use",
    "register": "patron_register",
}
_SKIPPED_USER_FIELDS = {"id", "isnew", "ischanged", "isdeleted", "passwd"}
_RESERVED_DETAILS = _SKIPPED_USER_FIELDS | {
    "card", "cards", "addresses", "mailing_address", "billing_address", "survey_responses",
    "stat_cat_entries", "groups", "settings",
}  # fmt: skip
_SKIPPED_ADDRESS_FIELDS = {"id", "usr", "isnew", "ischanged", "isdeleted"}
_KEPT_TIMES = ("checkout_time", "backdate")


def parse(data: bytes, *, tz) -> ParseResult:
    return run_lines(data, lambda _number, text: _read_line(text, tz))


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in JSON")


def _read_line(text: str, tz) -> Operation:
    try:
        xact = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        detail = f" ({e.msg} at column {e.colno})" if isinstance(e, json.JSONDecodeError) else ""
        raise LineProblem(f"line is not valid JSON{detail}") from None
    if not isinstance(xact, dict):
        raise LineProblem(f"JSON of the wrong shape: expected an object, found {_json_kind(xact)}")
    if "type" not in xact:
        raise LineProblem("missing field 'type'")
    xact_type = xact["type"]
    if not isinstance(xact_type, str):
        raise LineProblem(f"field 'type' must be text, found {_json_kind(xact_type)}")
    if xact_type not in TYPES:
        raise LineProblem(
            f"unknown transaction type {quoted(xact_type)} "
            "(expected checkout, renew, checkin, in_house_use or register)"
        )
    at = _read_timestamp(xact)
    if "delta" in xact:
        _number(xact["delta"], "delta")
    if xact_type == "register":
        return _read_register(xact, at)
    if xact_type == "checkout" and _truthy(xact.get("noncat")):
        raise LineProblem(
            f"non-catalogued checkout (noncat_type {quoted(str(xact.get('noncat_type')))}, "
            f"count {quoted(str(xact.get('noncat_count')))}) has no item barcode; circmesh cannot record it"
        )
    item = clean_id(_text(xact, "barcode"), ITEM)
    details = _kept_times(xact, at, tz)
    if xact_type == "checkin":
        return Operation(kind="checkin", at=at, item=item, details=details)
    if xact_type == "in_house_use":
        count = _read_count(xact.get("count"))
        counted = (("count", str(count)),) if count != 1 else ()
        return Operation(kind="in_house_use", at=at, item=item, details=counted)
    patron_text = _text(xact, "patron_barcode")
    if xact_type == "checkout" or (patron_text is not None and patron_text.strip(" \t")):
        patron = clean_id(patron_text, PATRON)
    else:
        patron = None
    due = _read_when(xact.get("due_date"), "due date", tz)
    return Operation(kind=TYPES[xact_type], at=at, item=item, patron=patron, due=due, details=details)


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "true/false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _truthy(value) -> bool:
    return value not in (None, False, 0, "", "0", "f", "false")


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise LineProblem(f"{name} must be a number, found {_json_kind(value)}")
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise LineProblem(f"{name} {quoted(str(value))} is not a number") from None
    if isinstance(number, float) and not math.isfinite(number):
        raise LineProblem(f"{name} {quoted(str(value))} is not a number")
    return number


def _read_timestamp(xact: dict) -> datetime:
    if "timestamp" not in xact:
        raise LineProblem("missing field 'timestamp'")
    seconds = _number(_whole(xact["timestamp"]), "timestamp")
    try:
        return EPOCH + timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        raise LineProblem(f"timestamp {quoted(str(xact['timestamp']))} is out of range") from None


def _whole(value):
    """A whole number written as text ("1709647331") as an int; anything else unchanged."""
    if isinstance(value, str):
        digits = value.strip()
        if digits.isascii() and digits.isdigit() and len(digits) <= 20:
            return int(digits)
    return value


def _text(xact: dict, name: str) -> str | None:
    value = xact.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise LineProblem(f"field {quoted(name)} must be text, found {_json_kind(value)}")
    return value


def _read_count(value) -> int:
    if value is None or value == "":
        return 1
    value = _whole(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise LineProblem(f"count {quoted(str(value))} is not a whole number")
    if not 1 <= value <= MAX_COUNT:
        raise LineProblem(f"count {value} is out of range (1 to {MAX_COUNT})")
    return value


def _read_when(value, what: str, tz) -> datetime | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LineProblem(f"{what} must be text, found {_json_kind(value)}")
    text = value.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise LineProblem(f"{what} {quoted(text)} is not a valid date and time") from None
    try:
        if when.tzinfo is None:
            if "T" not in text and " " not in text and when.time() == datetime.min.time():
                when = when.replace(hour=23, minute=59, second=59)
            when = when.replace(tzinfo=tz)
        return utc(when)
    except (OverflowError, ValueError):
        raise LineProblem(f"{what} {quoted(text)} is out of range") from None


def _kept_times(xact: dict, at: datetime, tz) -> tuple[tuple[str, str], ...]:
    kept = []
    for name in _KEPT_TIMES:
        when = _read_when(xact.get(name), name.replace("_", " "), tz)
        if when is not None and when.replace(microsecond=0) != at.replace(microsecond=0):
            kept.append((name, _iso(when)))
    return tuple(kept)


def _read_register(xact: dict, at: datetime) -> Operation:
    user = xact.get("user")
    if not isinstance(user, dict):
        raise LineProblem("registration has no patron ('user' must be an object)")
    card = user.get("card")
    barcode = card.get("barcode") if isinstance(card, dict) else None
    if not isinstance(barcode, str) or not barcode.strip(" \t"):
        raise LineProblem("registration has no card barcode (user.card.barcode)")
    patron = clean_id(barcode, PATRON)
    details = [
        (name, _scalar(value))
        for name, value in user.items()
        if name not in _SKIPPED_USER_FIELDS and not name.startswith(("_", "$")) and _is_scalar(value)
    ]
    address = _address(user)
    if address is not None:
        details += [
            (f"address.{name}", _scalar(value))
            for name, value in address.items()
            if name not in _SKIPPED_ADDRESS_FIELDS and not name.startswith(("_", "$")) and _is_scalar(value)
        ]
    return Operation(kind="patron_register", at=at, patron=patron, details=tuple(sorted(details)))


def _address(user: dict) -> dict | None:
    for name in ("mailing_address", "billing_address"):
        if isinstance(user.get(name), dict):
            return user[name]
    addresses = user.get("addresses")
    if isinstance(addresses, list):
        for address in addresses:
            if isinstance(address, dict):
                return address
    return None


def _is_scalar(value) -> bool:
    return isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "t" if value else "f"
    return str(value)


def export_report(operations: Iterable[Operation]) -> tuple[bytes, list[tuple[Operation, str]]]:
    lines: list[bytes] = []
    skipped: list[tuple[Operation, str]] = []
    for operation in operations:
        try:
            xact = _xact(operation)
            line = json.dumps(xact, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except LineProblem as problem:
            skipped.append((operation, str(problem)))
            continue
        except UnicodeEncodeError:
            skipped.append((operation, "it holds text that cannot be written as UTF-8"))
            continue
        lines.append(line + b"\n")
    return b"".join(lines), skipped


def _xact(operation: Operation) -> dict:
    kind = operation.kind
    details = dict(operation.details)
    if kind == "patron_register":
        user = _user(operation, details)
        return {"user": user, "timestamp": _seconds(operation.at), "type": "register", "delta": 0}
    if kind == "payment":
        raise LineProblem("Evergreen's offline file has no payments")
    if kind not in ("checkout", "renew", "checkin", "in_house_use"):
        raise LineProblem(f"Evergreen's offline file cannot record {kind!r}")
    xact: dict = {"timestamp": _seconds(operation.at), "type": kind, "delta": 0}
    if kind == "checkin":
        xact["barcode"] = clean_id(operation.item, ITEM)
        xact["backdate"] = _detail_time(details, "backdate", operation.at)
        return xact
    if kind == "in_house_use":
        xact["barcode"] = clean_id(operation.item, ITEM)
        xact["count"] = _read_count(details.get("count", 1))
        return xact
    if kind == "checkout" or operation.patron is not None:
        if operation.patron is None:
            raise LineProblem("a checkout without a patron cannot be written")
        xact["patron_barcode"] = clean_id(operation.patron, PATRON)
    xact["barcode"] = clean_id(operation.item, ITEM)
    if operation.due is not None:
        xact["due_date"] = _iso(operation.due)
        xact["checkout_time"] = _detail_time(details, "checkout_time", operation.at)
    return xact


def _user(operation: Operation, details: dict[str, str]) -> dict:
    if operation.patron is None:
        raise LineProblem("a registration without a patron barcode cannot be written")
    user: dict = {"card": {"barcode": clean_id(operation.patron, PATRON)}}
    address: dict = {}
    for name, value in operation.details:
        if name.startswith("address."):
            address[name[len("address.") :]] = value
        elif name in _RESERVED_DETAILS:
            raise LineProblem(f"registration field {quoted(name)} clashes with Evergreen's own structure")
        else:
            user[name] = value
    if address:
        user["mailing_address"] = address
    return user


def _detail_time(details: dict[str, str], name: str, at: datetime) -> str:
    if name not in details:
        return _iso(at)
    when = _read_when(details[name], name.replace("_", " "), UTC)
    return _iso(when if when is not None else at)


def _seconds(at: datetime) -> int:
    since = at - EPOCH  # whole days and seconds, floored to the second: no float rounding
    return since.days * 86_400 + since.seconds


def _iso(when: datetime) -> str:
    try:
        t = utc(when)
    except (OverflowError, ValueError):
        raise LineProblem("its time is out of range") from None
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond // 1000:03d}Z"
    )


def looks_like(text: str) -> bool:
    """Whether one line of a file looks like a pending.xacts line (for guessing a file's format)."""
    if not text.lstrip().startswith("{"):
        return False
    try:
        xact = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(xact, dict) and isinstance(xact.get("type"), str) and xact["type"] in TYPES
