"""The scans a desk makes: checkout, checkin, renewal, payment, in-house use, offline registration.

Each answers `201 {event, warnings}` once the event is durable. Warnings that staff must see before
lending (the item is on loan to someone else) refuse the scan with 409 `needs_override` unless the
request says `override: true`: the deliberate override the desk screen asks for. Requests are read
through the declared schemas (schemas.py); the desk's own limits (DeskLimits) are checked after.
Once an event is durable the answer is 201, whatever happens after: never an error about a recorded scan.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time
from typing import Any

from aiohttp import web

from node.api.auth import STAFF
from node.api.errors import ApiError, barcode_or_400
from node.api.keys import CONFIG, DUE_DATES, LIVE, LOG, VIEWS, WARNINGS
from node.api.schemas import (
    CheckinRequest,
    CheckoutRequest,
    InHouseUseRequest,
    PaymentRequest,
    RegistrationRequest,
    RenewalRequest,
    read_json,
)
from node.crdt.bounds import BoundsError, DeskLimits, check_money
from node.crdt.event import EventError
from node.eventlog import wall_ms
from node.scan_warnings import ScanWarning
from node.storage.gate import StorageFailure

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


def _limits(request: web.Request) -> DeskLimits:
    return request.app[CONFIG].limits


def _barcode(request: web.Request, value: str, what: str) -> str:
    return barcode_or_400(value, what, _limits(request))


def _due_ms(request: web.Request, value: int | str | None, patron: str | None, item: str,
            renewal: bool = False) -> int:
    """A due date given as ms, an ISO date (end of that day, desk time) or an ISO date-time, inside the
    desk's window (so that it is inside the log's bounds too); none given: the ILS's loan rules and calendar
    (node/due_dates.py)."""
    now = wall_ms()
    if value is None:
        return request.app[DUE_DATES].default(patron, item, now, renewal=renewal)
    due: int | None = value if isinstance(value, int) else None
    if isinstance(value, str):
        try:
            if len(value) == 10:
                local = datetime.combine(date.fromisoformat(value), time(23, 59, 59)).astimezone()
                due = int(local.timestamp() * 1000)
            else:
                moment = datetime.fromisoformat(value)
                if moment.tzinfo is None:
                    moment = moment.astimezone()
                due = int(moment.astimezone(UTC).timestamp() * 1000)
        except (ValueError, OverflowError, OSError):
            due = None
    if due is None:
        raise ApiError(400, "bad_due", "due must be a date (YYYY-MM-DD), an ISO date-time, or milliseconds")
    try:
        _limits(request).check_due(due, now)
    except BoundsError as e:
        raise ApiError(400, "bad_due", str(e)) from None
    return due


async def record(request: web.Request, kind: str, body: dict[str, Any], warnings: list[ScanWarning]
                 ) -> web.Response:
    try:
        event = await request.app[LOG].append(kind, body, request[STAFF])
    except EventError as e:
        raise ApiError(400, "bad_request", str(e)) from None
    except StorageFailure as e:
        raise ApiError(503, "storage_failure", f"this desk cannot save scans: {e}") from None
    try:
        shown = request.app[VIEWS].event_json(event)
    except Exception:  # the scan is on disk: say so, with what is certain
        log.exception("showing recorded event %s", event.id)
        shown = {"id": event.id, "node": event.node, "seq": event.seq, "hlc": event.hlc.to_wire(),
                 "at": event.at, "kind": event.kind, "body": {}, "staff": event.staff}
    return web.json_response({"event": shown, "warnings": warnings}, status=201)


@routes.post("/api/v1/checkouts")
async def checkout(request: web.Request) -> web.Response:
    body = await read_json(request, CheckoutRequest)
    patron, item = _barcode(request, body.patron, "patron barcode"), _barcode(request, body.item, "item barcode")
    due = _due_ms(request, body.due, patron, item)
    override = body.override
    live = await request.app[LIVE].checkout(patron, item)  # only for what the snapshot lacks, bounded
    warnings = request.app[WARNINGS].checkout(patron, item, live)
    blocking = [w for w in warnings if w.get("blocking") == "yes"]
    if blocking and not override:
        raise ApiError(409, "needs_override", blocking[0]["message"], warnings=warnings)
    event_body: dict[str, Any] = {"patron": patron, "item": item, "due": due}
    if override and blocking:
        event_body["override"] = True
    return await record(request, "checkout", event_body, warnings)


@routes.post("/api/v1/checkins")
async def checkin(request: web.Request) -> web.Response:
    body = await read_json(request, CheckinRequest)
    item = _barcode(request, body.item, "item barcode")
    return await record(request, "checkin", {"item": item}, request.app[WARNINGS].checkin(item))


@routes.post("/api/v1/renewals")
async def renewal(request: web.Request) -> web.Response:
    body = await read_json(request, RenewalRequest)
    item = _barcode(request, body.item, "item barcode")
    patron = _barcode(request, body.patron, "patron barcode") if body.patron else None
    due = _due_ms(request, body.due, patron or request.app[VIEWS].borrower(item), item, renewal=True)
    event_body: dict[str, Any] = {"item": item, "due": due}
    if patron:
        event_body["patron"] = patron
    return await record(request, "renew", event_body, request.app[WARNINGS].renewal(item))


@routes.post("/api/v1/payments")
async def payment(request: web.Request) -> web.Response:
    body = await read_json(request, PaymentRequest)
    patron = _barcode(request, body.patron, "patron barcode")
    amount = body.amount if isinstance(body.amount, str) else f"{body.amount:.2f}"
    try:
        check_money(amount, _limits(request).max_payment)
    except BoundsError as e:
        raise ApiError(400, "bad_amount", str(e)) from None
    return await record(request, "payment", {"patron": patron, "amount": amount}, [])


@routes.post("/api/v1/in-house-uses")
async def in_house_use(request: web.Request) -> web.Response:
    body = await read_json(request, InHouseUseRequest)
    return await record(request, "in_house_use", {"item": _barcode(request, body.item, "item barcode")}, [])


@routes.post("/api/v1/registrations")
async def registration(request: web.Request) -> web.Response:
    body = await read_json(request, RegistrationRequest)
    patron = _barcode(request, body.patron, "patron barcode")
    name = body.name
    if not name.strip():
        raise ApiError(400, "bad_name", "name must be 1-200 printable characters")
    warnings = request.app[WARNINGS].registration(patron)
    return await record(request, "patron_register", {"patron": patron, "name": name.strip()}, warnings)
