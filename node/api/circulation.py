"""The scans a desk makes: checkout, checkin, renewal, payment, in-house use, offline registration.

Each answers `201 {event, warnings}` once the event is durable. Warnings that staff must see before
lending (the item is on loan to someone else) refuse the scan with 409 `needs_override` unless the
request says `override: true`: the deliberate override the desk screen asks for.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from aiohttp import web

from node.api.auth import STAFF
from node.api.errors import ApiError, barcode_or_400, json_body
from node.api.keys import NODE
from node.crdt.event import EventError, parse_amount
from node.eventlog import EventLog, StorageFailure

routes = web.RouteTableDef()


def _barcode(body: dict[str, Any], key: str, what: str) -> str:
    return barcode_or_400(body.get(key), what)


def _due_ms(value: object, now_ms: int, loan_days: int) -> int:
    """A due date given as ms, an ISO date (end of that day, desk time) or an ISO date-time."""
    if value is None:
        return now_ms + loan_days * 86_400_000
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str) and len(value) <= 40:
        try:
            if len(value) == 10:
                day = date.fromisoformat(value)
                local = datetime.combine(day, time(23, 59, 59)).astimezone()
                return int(local.timestamp() * 1000)
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.astimezone()
            return int(moment.astimezone(UTC).timestamp() * 1000)
        except ValueError:
            pass
    raise ApiError(400, "bad_due", "due must be a date (YYYY-MM-DD), an ISO date-time, or milliseconds")


def _override(body: dict[str, Any]) -> bool:
    value = body.get("override", False)
    if not isinstance(value, bool):
        raise ApiError(400, "bad_override", "override must be true or false")
    return value


async def record(request: web.Request, kind: str, body: dict[str, Any], warnings: list[dict[str, str]]
                 ) -> web.Response:
    node = request.app[NODE]
    eventlog: EventLog = node.log
    try:
        event = await eventlog.append(kind, body, request[STAFF])
    except EventError as e:
        raise ApiError(400, "bad_request", str(e)) from None
    except StorageFailure as e:
        raise ApiError(503, "storage_failure", f"this desk cannot save scans: {e}") from None
    return web.json_response({"event": node.event_json(event), "warnings": warnings}, status=201)


def warning(code: str, message: str, **extra: str) -> dict[str, str]:
    return {"code": code, "message": message, **extra}


@routes.post("/api/v1/checkouts")
async def checkout(request: web.Request) -> web.Response:
    body = await json_body(request, {"patron", "item", "due", "override"}, {"patron", "item"})
    node = request.app[NODE]
    patron, item = _barcode(body, "patron", "patron barcode"), _barcode(body, "item", "item barcode")
    due = _due_ms(body.get("due"), node.now_ms(), node.loan_days)
    override = _override(body)
    warnings = node.checkout_warnings(patron, item)
    blocking = [w for w in warnings if w.get("blocking") == "yes"]
    if blocking and not override:
        raise ApiError(409, "needs_override", blocking[0]["message"], warnings=warnings)
    event_body: dict[str, Any] = {"patron": patron, "item": item, "due": due}
    if override and blocking:
        event_body["override"] = True
    return await record(request, "checkout", event_body, warnings)


@routes.post("/api/v1/checkins")
async def checkin(request: web.Request) -> web.Response:
    body = await json_body(request, {"item"}, {"item"})
    item = _barcode(body, "item", "item barcode")
    return await record(request, "checkin", {"item": item}, request.app[NODE].checkin_warnings(item))


@routes.post("/api/v1/renewals")
async def renewal(request: web.Request) -> web.Response:
    body = await json_body(request, {"item", "patron", "due"}, {"item"})
    node = request.app[NODE]
    item = _barcode(body, "item", "item barcode")
    due = _due_ms(body.get("due"), node.now_ms(), node.loan_days)
    event_body: dict[str, Any] = {"item": item, "due": due}
    if body.get("patron") is not None:
        event_body["patron"] = _barcode(body, "patron", "patron barcode")
    return await record(request, "renew", event_body, node.renewal_warnings(item))


@routes.post("/api/v1/payments")
async def payment(request: web.Request) -> web.Response:
    body = await json_body(request, {"patron", "amount"}, {"patron", "amount"})
    patron = _barcode(body, "patron", "patron barcode")
    amount = body.get("amount")
    if isinstance(amount, int | float) and not isinstance(amount, bool):
        amount = f"{amount:.2f}" if isinstance(amount, float) else str(amount)
    try:
        parse_amount(amount)
    except EventError as e:
        raise ApiError(400, "bad_amount", str(e)) from None
    return await record(request, "payment", {"patron": patron, "amount": amount}, [])


@routes.post("/api/v1/in-house-uses")
async def in_house_use(request: web.Request) -> web.Response:
    body = await json_body(request, {"item"}, {"item"})
    return await record(request, "in_house_use", {"item": _barcode(body, "item", "item barcode")}, [])


@routes.post("/api/v1/registrations")
async def registration(request: web.Request) -> web.Response:
    body = await json_body(request, {"patron", "name"}, {"patron", "name"})
    patron = _barcode(body, "patron", "patron barcode")
    name = body.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise ApiError(400, "bad_name", "name must be 1-200 printable characters")
    warnings = []
    if patron in request.app[NODE].log.state.registrations:
        warnings.append(warning("already_registered", f"patron {patron} was already registered offline"))
    return await record(request, "patron_register", {"patron": patron, "name": name.strip()}, warnings)
