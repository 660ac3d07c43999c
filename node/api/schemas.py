"""The desk API's requests and answers, declared once as msgspec types.

The same declarations validate what arrives (`read_json`) and describe the API (openapi.py builds the
OpenAPI 3.1 document from them). Field types come from node/crdt/bounds.py, the bounds the log keeps, so
a request that passes here makes an event that every desk can read. What a desk accepts from its own
staff (its barcode characters, payment ceiling, due-date window) is its `DeskLimits`, checked after.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from aiohttp import web

from node.api.errors import MAX_BODY, ApiError
from node.crdt.bounds import (
    BARCODE_MAX,
    MONEY_MAX,
    TEXT_PATTERN,
    EventId,
    Millis,
    Money,
    Name,
)

# A barcode as a scanner types it: the desk trims what scanners add around it (CR, LF, spaces).
ScannedBarcode = Annotated[str, msgspec.Meta(
    min_length=1, max_length=BARCODE_MAX + 8,
    pattern=r"^\s*[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?\s*$",
    description="a barcode as the scanner typed it; spaces and line ends around it are trimmed. The desk "
                "takes printable ASCII (printable Unicode when started with --unicode-barcodes)",
    examples=["39000000000007"])]
DueIn = Annotated[
    Millis | Annotated[str, msgspec.Meta(max_length=40, pattern=r"^\d{4}-\d{2}-\d{2}([T ][0-9:.+\-Z]{2,29})?$")],
    msgspec.Meta(description="a date (YYYY-MM-DD, end of that day at the desk), an ISO date-time, or "
                             "milliseconds; default: the loan period from now")]
AmountIn = Annotated[Money | Annotated[float, msgspec.Meta(gt=0, le=float(MONEY_MAX))],
                     msgspec.Meta(description="text like \"2.50\" (or a number), at most the desk's ceiling")]
Note = Annotated[str, msgspec.Meta(max_length=500, pattern=TEXT_PATTERN)]


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class CheckoutRequest(Request):
    patron: ScannedBarcode
    item: ScannedBarcode
    due: DueIn | None = None
    override: bool = False


class CheckinRequest(Request):
    item: ScannedBarcode


class RenewalRequest(Request):
    item: ScannedBarcode
    patron: ScannedBarcode | None = None
    due: DueIn | None = None


class PaymentRequest(Request):
    patron: ScannedBarcode
    amount: AmountIn


class InHouseUseRequest(Request):
    item: ScannedBarcode


class RegistrationRequest(Request):
    patron: ScannedBarcode
    name: Name


class ResolutionRequest(Request):
    action: Literal["void", "keep", "accept_ils", "apply", "acknowledge"]
    event: EventId | None = None
    note: Note | None = None


class SignInRequest(Request):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class CodeRequest(Request):
    role: Literal["desk", "admin"] = "desk"


class ApproveRequest(Request):
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    role: Literal["desk", "admin"] = "desk"


class RevocationRequest(Request):
    reason: Note | None = None


class EmptyRequest(Request):
    pass


# ---- answers (what the OpenAPI document promises; the handlers build plain dicts of this shape)
class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorAnswer(msgspec.Struct):
    error: ErrorDetail


class EventOut(msgspec.Struct, kw_only=True):
    id: str
    node: str
    seq: int
    hlc: list[int]
    at: Any
    kind: Any
    body: dict[str, Any]
    staff: Any
    sig: str | None = None
    desk: str | None = None
    problem: str | None = None


class WarningOut(msgspec.Struct, kw_only=True):
    code: str
    message: str
    blocking: str | None = None


class ScanAnswer(msgspec.Struct):
    event: EventOut
    warnings: list[WarningOut]


class LoanOut(msgspec.Struct, kw_only=True):
    item: str
    patron: str
    due: int | None
    event: str | None
    node: str | None
    at: int | None
    desk: str | None = None


class LoansAnswer(msgspec.Struct):
    loans: list[LoanOut]


class PatronFacts(msgspec.Struct, kw_only=True):
    """What the ILS snapshot says of a patron (node/snapshot/rows.py)."""

    name: str
    category: str | None
    library: str | None
    expiry: str | None
    block: str | None
    owes: str
    loans_at_ils: int
    loan_limit: int | None


class HoldOut(msgspec.Struct, kw_only=True):
    patron: str
    waiting: bool
    pickup: str | None


class ItemFacts(msgspec.Struct, kw_only=True):
    """What the ILS snapshot says of an item."""

    title: str
    author: str | None
    callnumber: str | None
    item_type: str | None
    library: str | None
    not_for_loan: bool
    lost: bool
    withdrawn: bool
    holds: list[HoldOut]


class IlsLoanOut(msgspec.Struct, kw_only=True):
    """A loan open at the ILS when the snapshot was taken, not ended at a desk since (`item` or `patron`:
    the other side of it)."""

    item: str | None = None
    patron: str | None = None
    due: str | None


class PatronAnswer(msgspec.Struct, kw_only=True):
    barcode: str
    name: str | None
    ils: PatronFacts | None
    registered_offline: bool
    loans: list[LoanOut]
    ils_loans: list[IlsLoanOut]
    paid_offline: str
    conflicts: list[str]


class PatronHit(msgspec.Struct, kw_only=True):
    barcode: str
    name: str
    source: str
    ils: PatronFacts | None = None


class PatronSearchAnswer(msgspec.Struct):
    patrons: list[PatronHit]


class ItemAnswer(msgspec.Struct, kw_only=True):
    barcode: str
    ils: ItemFacts | None
    loan: LoanOut | None
    ils_loan: IlsLoanOut | None
    returned_by: str | None
    in_house_uses: int
    conflicts: list[str]


class EventsPage(msgspec.Struct):
    events: list[EventOut]
    next: int
    total: int


class ConflictOut(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    item: str | None
    patrons: list[str]
    events: list[str]
    needs_admin: bool
    about: str | None = None
    reason: str | None = None
    detail: list[EventOut] = []
    about_conflict: ConflictOut | None = None


class ConflictsAnswer(msgspec.Struct):
    conflicts: list[ConflictOut]


class ResolutionAnswer(msgspec.Struct):
    conflict: str
    events: list[EventOut]


class OutcomeRow(msgspec.Struct, kw_only=True):
    event: str
    kind: str
    desk: str
    at: int
    patron: str | None
    item: str | None
    amount: str | None
    status: str
    message: str


class OutcomesAnswer(msgspec.Struct):
    outcomes: list[OutcomeRow]
    total: int


class ImportLineError(msgspec.Struct):
    line: int
    reason: str
    text: str


class ImportAnswer(msgspec.Struct, kw_only=True):
    format: str | None = None
    recorded: int
    errors: list[ImportLineError] = []
    skipped: int = 0
    events: list[str] = []
    message: str | None = None


class EpochStatus(msgspec.Struct, kw_only=True):
    """Which replicated document this desk writes to: `seal` opened it (None: the first); older events
    travel in journal runs."""

    number: int
    seal: str | None
    document_events: int


class SnapshotFetch(msgspec.Struct, kw_only=True):
    """Getting the newest snapshot from the peers: `have` of `needed` chunks of `version` (its index too);
    `fetched` chunks kept from peers since the desk started (held ones are not fetched again); `refused`
    chunks whose bytes did not match their name (asked again elsewhere)."""

    state: Literal["idle", "fetching", "installing", "failed"]
    version: int | None
    have: int
    needed: int
    fetched: int
    refused: int
    last_error: str | None
    purged_at: int | None  # when this desk last deleted a snapshot past the retention (ms)


class SnapshotStatus(msgspec.Struct, kw_only=True):
    """The patron and item snapshot this desk holds (None fields: none yet), on the bridge its refresh, and
    at every desk its fetch from the peers."""

    version: int | None
    ils_time: int | None
    patrons: int
    items: int
    loans: int
    refresh: dict[str, Any] | None
    fetch: SnapshotFetch | None
    file_import: dict[str, Any] | None  # a snapshot built from files an admin gave (as `refresh`)


class StatusAnswer(msgspec.Struct, kw_only=True):
    node: dict[str, Any]
    peers: list[dict[str, Any]]
    epoch: EpochStatus
    snapshot: SnapshotStatus
    upload: dict[str, Any]
    conflicts: int
    warnings: int
    quarantined: dict[str, Any]
    refusals: dict[str, int]


class SessionAnswer(msgspec.Struct, kw_only=True):
    name: str
    role: str
    csrf: str
    idle_s: float
    absolute_s: float
    token: str | None = None


class EventAnswer(msgspec.Struct):
    event: EventOut


class CodeAnswer(msgspec.Struct, kw_only=True):
    code: str
    role: str
    expires_at: Any


# ---- reading a request
_FIELD_CODES = {"patron": "bad_barcode", "item": "bad_barcode", "amount": "bad_amount", "name": "bad_name",
                "due": "bad_due", "override": "bad_override", "note": "bad_note", "action": "bad_action",
                "event": "bad_event", "role": "bad_role", "code": "bad_request", "reason": "bad_note"}
_FIELD_WORDS = {
    "patron": "the patron barcode must be 1-64 printable characters",
    "item": "the item barcode must be 1-64 printable characters",
    "amount": 'amount must be a positive number with at most two decimals, written as text ("2.50")',
    "name": "name must be 1-200 printable characters",
    "due": "due must be a date (YYYY-MM-DD), an ISO date-time, or milliseconds, between 2000 and 2100",
    "override": "override must be true or false",
    "note": "the note must be at most 500 printable characters",
    "reason": "the reason must be at most 500 printable characters",
    "action": "action must be one of void, keep, accept_ils, apply, acknowledge",
    "event": "event must be the id of one of the conflict's events",
    "role": "role must be desk or admin",
}
_AT_FIELD = re.compile(r"at `\$\.(\w+)")
T = TypeVar("T", bound=Request)


@functools.cache
def _fields(kind: type[msgspec.Struct]) -> tuple[msgspec.structs.FieldInfo, ...]:
    """A request type's fields, read once: msgspec resolves their annotations on every call (a profile of a
    busy desk showed it)."""
    return msgspec.structs.fields(kind)


async def read_json(request: web.Request, kind: type[T]) -> T:
    """The request's JSON body as `kind`, or a 4xx that says what is wrong, in the field's own words."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "body_too_large", f"request body is larger than {MAX_BODY // 1024} KiB")
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "request body must be a JSON object")
    fields = _fields(kind)
    unknown = set(body) - {f.name for f in fields}
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(map(str, unknown)))[:200]}")
    required = {f.name for f in fields if f.required}
    missing = {k for k in required if body.get(k) in (None, "")}
    if missing:
        raise ApiError(400, "missing_field", f"missing field(s): {', '.join(sorted(missing))}")
    try:
        return msgspec.convert(body, kind, strict=True)
    except msgspec.ValidationError as e:
        found = _AT_FIELD.search(str(e))
        field = found.group(1) if found else ""
        words = _FIELD_WORDS.get(field, f"{field or 'request'}: {e}")
        raise ApiError(400, _FIELD_CODES.get(field, "bad_request"), words) from None

