"""3M SIP2 (2.00) messages: encode and decode, no I/O.

One codec serves both ends (the simulator's ACS and the bridge's SC), so the two can never drift apart.
A message is a two-digit code, fixed-length fields in the order the standard lists them, then variable
fields `XXvalue|`, then optionally the error-detection trailer `AY<seq>AZ<checksum>`. The checksum is the
low 16 bits of the two's complement of the byte sum of everything up to and including "AZ", written as four
upper-case hex digits. Text is UTF-8 (names like Dvořák or 王 must survive); the checksum is over the bytes.

Anything malformed raises `Sip2Error` (a `ChecksumError` when only the checksum is wrong, so that the ACS
can answer 96 "please resend" as the standard asks), never another exception type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

TERMINATOR = b"\r"
BLANK_DATE = " " * 18
DATE_FORMAT = "%Y%m%d    %H%M%S"


class Sip2Error(ValueError):
    """A SIP2 message that cannot be encoded or decoded."""


class ChecksumError(Sip2Error):
    """The message is well framed but its AZ checksum does not match: the peer should resend it."""


# Fixed-length fields of each message, in wire order: (name, length).
_DATE = 18
LAYOUTS: dict[str, tuple[tuple[str, int], ...]] = {
    "93": (("uid_algorithm", 1), ("pwd_algorithm", 1)),
    "94": (("ok", 1),),
    "99": (("status_code", 1), ("max_print_width", 3), ("protocol_version", 4)),
    "98": (
        ("online_status", 1),
        ("checkin_ok", 1),
        ("checkout_ok", 1),
        ("acs_renewal_policy", 1),
        ("status_update_ok", 1),
        ("offline_ok", 1),
        ("timeout_period", 3),
        ("retries_allowed", 3),
        ("date_time_sync", _DATE),
        ("protocol_version", 4),
    ),
    "11": (("sc_renewal_policy", 1), ("no_block", 1), ("transaction_date", _DATE), ("nb_due_date", _DATE)),
    "12": (
        ("ok", 1),
        ("renewal_ok", 1),
        ("magnetic_media", 1),
        ("desensitize", 1),
        ("transaction_date", _DATE),
    ),
    "09": (("no_block", 1), ("transaction_date", _DATE), ("return_date", _DATE)),
    "10": (
        ("ok", 1),
        ("resensitize", 1),
        ("magnetic_media", 1),
        ("alert", 1),
        ("transaction_date", _DATE),
    ),
    "29": (("third_party_allowed", 1), ("no_block", 1), ("transaction_date", _DATE), ("nb_due_date", _DATE)),
    "30": (
        ("ok", 1),
        ("renewal_ok", 1),
        ("magnetic_media", 1),
        ("desensitize", 1),
        ("transaction_date", _DATE),
    ),
    "37": (("transaction_date", _DATE), ("fee_type", 2), ("payment_type", 2), ("currency_type", 3)),
    "38": (("payment_accepted", 1), ("transaction_date", _DATE)),
    "63": (("language", 3), ("transaction_date", _DATE), ("summary", 10)),
    "64": (
        ("patron_status", 14),
        ("language", 3),
        ("transaction_date", _DATE),
        ("hold_items_count", 4),
        ("overdue_items_count", 4),
        ("charged_items_count", 4),
        ("fine_items_count", 4),
        ("recall_items_count", 4),
        ("unavailable_holds_count", 4),
    ),
    "17": (("transaction_date", _DATE),),
    "18": (
        ("circulation_status", 2),
        ("security_marker", 2),
        ("fee_type", 2),
        ("transaction_date", _DATE),
    ),
    "96": (),  # ACS asks the SC to resend its last message
    "97": (),  # SC asks the ACS to resend its last message
}

NAMES = {
    "93": "login",
    "94": "login response",
    "99": "SC status",
    "98": "ACS status",
    "11": "checkout",
    "12": "checkout response",
    "09": "checkin",
    "10": "checkin response",
    "29": "renew",
    "30": "renew response",
    "37": "fee paid",
    "38": "fee paid response",
    "63": "patron information",
    "64": "patron information response",
    "17": "item information",
    "18": "item information response",
    "96": "request SC resend",
    "97": "request ACS resend",
}

# Circulation status values of the item information response (18) that the bridge cares about.
CIRC_OTHER = "01"
CIRC_AVAILABLE = "03"
CIRC_CHARGED = "04"
CIRC_ON_HOLD_SHELF = "08"

_FIELD_ID = re.compile(r"[A-Z]{2}")
_TRAILER = re.compile(r"(?:AY([0-9]))?AZ([0-9A-F]{4})$")
_FORBIDDEN_IN_VALUE = ("|", "\r", "\n")


@dataclass
class Message:
    """One SIP2 message. `fixed` maps the layout's field names to their exact-width text; `fields` keeps
    the variable fields in order (some, like AF or AU, may repeat). `seq` is the AY sequence number: when it
    is set the message carries the AY/AZ error-detection trailer."""

    code: str
    fixed: dict[str, str] = field(default_factory=dict)
    fields: list[tuple[str, str]] = field(default_factory=list)
    seq: int | None = None

    def get(self, fid: str, default: str | None = None) -> str | None:
        for k, v in self.fields:
            if k == fid:
                return v
        return default

    def get_all(self, fid: str) -> list[str]:
        return [v for k, v in self.fields if k == fid]

    def flag(self, name: str) -> bool:
        """A fixed Y/N or 1/0 flag as a bool."""
        return self.fixed.get(name, "") in ("Y", "1")

    @property
    def name(self) -> str:
        return NAMES.get(self.code, self.code)


def checksum(data: bytes) -> str:
    """The four hex digits SIP2 puts after "AZ" for `data` (everything up to and including "AZ")."""
    return f"{(-sum(data)) & 0xFFFF:04X}"


def encode(msg: Message) -> bytes:
    """The wire form of `msg`, terminated by CR."""
    layout = LAYOUTS.get(msg.code)
    if layout is None:
        raise Sip2Error(f"unknown SIP2 message code {msg.code!r}")
    names = [n for n, _ in layout]
    if set(msg.fixed) != set(names):
        missing = sorted(set(names) - set(msg.fixed))
        extra = sorted(set(msg.fixed) - set(names))
        raise Sip2Error(f"message {msg.code}: fixed fields missing {missing} / unexpected {extra}")
    parts = [msg.code]
    for fname, width in layout:
        value = msg.fixed[fname]
        if len(value) != width:
            raise Sip2Error(
                f"message {msg.code}: fixed field {fname} must be {width} characters, got {value!r}"
            )
        if any(ch in value for ch in _FORBIDDEN_IN_VALUE):
            raise Sip2Error(f"message {msg.code}: fixed field {fname} contains a separator")
        parts.append(value)
    for fid, value in msg.fields:
        if not _FIELD_ID.fullmatch(fid) or fid in ("AY", "AZ"):
            raise Sip2Error(f"bad SIP2 field id {fid!r}")
        if any(ch in value for ch in _FORBIDDEN_IN_VALUE):
            raise Sip2Error(f"field {fid} contains a separator: {value!r}")
        parts.append(f"{fid}{value}|")
    text = "".join(parts)
    if msg.seq is None and not msg.fields and _TRAILER.search(text):
        raise Sip2Error(f"message {msg.code}: fixed fields would read as an AZ checksum trailer")
    body = text.encode("utf-8")
    if msg.seq is not None:
        if not 0 <= msg.seq <= 9:
            raise Sip2Error(f"sequence number must be 0-9, got {msg.seq}")
        body += f"AY{msg.seq}AZ".encode("ascii")
        body += checksum(body).encode("ascii")
    return body + TERMINATOR


def decode(data: bytes) -> Message:
    """Parse one message (with or without its CR/LF terminator)."""
    if not isinstance(data, bytes | bytearray):
        raise Sip2Error("SIP2 input must be bytes")
    raw = bytes(data).rstrip(b"\r\n")
    if b"\r" in raw or b"\n" in raw:
        raise Sip2Error("more than one message in one frame")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Sip2Error(f"message is not valid UTF-8: {exc}") from None
    if len(text) < 2:
        raise Sip2Error("message too short")
    seq: int | None = None
    trailer = _TRAILER.search(text)
    if trailer:
        head = text[: trailer.start()]
        checked = raw[: len(raw) - 4]  # everything up to and including "AZ"
        if checksum(checked) != trailer.group(2):
            raise ChecksumError(f"bad checksum {trailer.group(2)}, expected {checksum(checked)}")
        if trailer.group(1) is not None:
            seq = int(trailer.group(1))
        text = head
    code = text[:2]
    layout = LAYOUTS.get(code)
    if layout is None:
        raise Sip2Error(f"unknown SIP2 message code {code!r}")
    pos = 2
    fixed: dict[str, str] = {}
    for fname, width in layout:
        value = text[pos : pos + width]
        if len(value) != width:
            raise Sip2Error(f"message {code} too short for fixed field {fname}")
        if "|" in value:
            raise Sip2Error(f"message {code}: separator inside fixed field {fname}")
        fixed[fname] = value
        pos += width
    fields: list[tuple[str, str]] = []
    rest = text[pos:]
    while rest:
        fid = rest[:2]
        if not _FIELD_ID.fullmatch(fid):
            raise Sip2Error(f"message {code}: bad field id {fid!r}")
        if fid in ("AY", "AZ"):
            raise Sip2Error(f"message {code}: {fid} outside the error-detection trailer")
        end = rest.find("|", 2)
        if end < 0:  # some ACSs omit the last separator: accept the value up to the end
            fields.append((fid, rest[2:]))
            break
        fields.append((fid, rest[2:end]))
        rest = rest[end + 1 :]
    return Message(code=code, fixed=fixed, fields=fields, seq=seq)


def format_date(when: datetime | None) -> str:
    """SIP2 date `YYYYMMDDZZZZHHMMSS`; aware datetimes are sent in UTC with zone "   Z"."""
    if when is None:
        return BLANK_DATE
    if when.tzinfo is None:
        return when.strftime(DATE_FORMAT)
    utc = when.astimezone(UTC)
    return utc.strftime("%Y%m%d") + "   Z" + utc.strftime("%H%M%S")


def parse_date(value: str) -> datetime | None:
    """The datetime of a SIP2 date field (UTC-aware when zoned "Z"; naive local time when the zone is
    blank), or None for an all-blank field."""
    if len(value) != 18:
        raise Sip2Error(f"SIP2 date must be 18 characters: {value!r}")
    if not value.strip():
        return None
    day, zone, clock = value[:8], value[8:12], value[12:]
    try:
        parsed = datetime.strptime(day + clock, "%Y%m%d%H%M%S")
    except ValueError:
        raise Sip2Error(f"bad SIP2 date {value!r}") from None
    zone = zone.strip()
    if zone in ("Z", "UTC", "GMT"):
        return parsed.replace(tzinfo=UTC)
    if zone:
        raise Sip2Error(f"unsupported SIP2 time zone {zone!r} in {value!r}")
    return parsed


def parse_amount(value: str | None) -> Decimal:
    """A BV fee amount ("12.50")."""
    try:
        amount = Decimal((value or "").strip())
    except ArithmeticError:
        raise Sip2Error(f"bad fee amount {value!r}") from None
    if not amount.is_finite():
        raise Sip2Error(f"bad fee amount {value!r}")
    return amount


def yn(flag: bool) -> str:
    return "Y" if flag else "N"


# --- requests the SC (the bridge) sends -------------------------------------------------------------------


def login(user: str, password: str, location: str = "", seq: int | None = None) -> Message:
    fields = [("CN", user), ("CO", password)]
    if location:
        fields.append(("CP", location))
    return Message("93", {"uid_algorithm": "0", "pwd_algorithm": "0"}, fields, seq)


def sc_status(seq: int | None = None) -> Message:
    return Message("99", {"status_code": "0", "max_print_width": "080", "protocol_version": "2.00"}, [], seq)


def checkout(
    institution: str,
    patron: str,
    item: str,
    at: datetime,
    *,
    no_block: bool = True,
    nb_due: datetime | None = None,
    terminal_password: str = "",
    seq: int | None = None,
) -> Message:
    fixed = {
        "sc_renewal_policy": "Y",
        "no_block": yn(no_block),
        "transaction_date": format_date(at),
        "nb_due_date": format_date(nb_due),
    }
    fields = [("AO", institution), ("AA", patron), ("AB", item), ("AC", terminal_password)]
    return Message("11", fixed, fields, seq)


def checkin(
    institution: str,
    item: str,
    at: datetime,
    *,
    no_block: bool = True,
    location: str = "",
    terminal_password: str = "",
    seq: int | None = None,
) -> Message:
    fixed = {"no_block": yn(no_block), "transaction_date": format_date(at), "return_date": format_date(at)}
    fields = [("AP", location), ("AO", institution), ("AB", item), ("AC", terminal_password)]
    return Message("09", fixed, fields, seq)


def renew(
    institution: str,
    patron: str,
    item: str,
    at: datetime,
    *,
    no_block: bool = True,
    nb_due: datetime | None = None,
    terminal_password: str = "",
    seq: int | None = None,
) -> Message:
    fixed = {
        "third_party_allowed": "N",
        "no_block": yn(no_block),
        "transaction_date": format_date(at),
        "nb_due_date": format_date(nb_due),
    }
    fields = [("AO", institution), ("AA", patron), ("AB", item), ("AC", terminal_password)]
    return Message("29", fixed, fields, seq)


def fee_paid(
    institution: str,
    patron: str,
    amount: Decimal,
    at: datetime,
    *,
    currency: str = "USD",
    fee_type: str = "01",
    payment_type: str = "00",
    transaction_id: str = "",
    terminal_password: str = "",
    seq: int | None = None,
) -> Message:
    fixed = {
        "transaction_date": format_date(at),
        "fee_type": fee_type,
        "payment_type": payment_type,
        "currency_type": currency,
    }
    fields = [("BV", f"{amount:.2f}"), ("AO", institution), ("AA", patron), ("AC", terminal_password)]
    if transaction_id:
        fields.append(("BK", transaction_id))
    return Message("37", fixed, fields, seq)


def patron_information(
    institution: str, patron: str, at: datetime, *, summary: str = " " * 10, seq: int | None = None
) -> Message:
    fixed = {"language": "000", "transaction_date": format_date(at), "summary": summary}
    return Message("63", fixed, [("AO", institution), ("AA", patron), ("AC", "")], seq)


def item_information(institution: str, item: str, at: datetime, *, seq: int | None = None) -> Message:
    return Message(
        "17", {"transaction_date": format_date(at)}, [("AO", institution), ("AB", item), ("AC", "")], seq
    )


def request_resend() -> Message:
    """96: the ACS did not understand the last message (bad checksum): please send it again."""
    return Message("96")
