"""What a desk can look up: loans, patrons, items, the ordered log, conflicts, this node's status."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api.errors import ApiError, barcode_or_400
from node.api.keys import NODE

routes = web.RouteTableDef()
PAGE_MAX = 10_000


def _query_barcode(request: web.Request, key: str) -> str | None:
    value = request.query.get(key)
    return None if value is None else barcode_or_400(value, key)


def _int_param(request: web.Request, key: str, default: int, maximum: int) -> int:
    value = request.query.get(key)
    if value is None:
        return default
    if not value.isdigit() or int(value) > maximum:
        raise ApiError(400, "bad_parameter", f"{key} must be a whole number from 0 to {maximum}")
    return int(value)


@routes.get("/api/v1/loans")
async def loans(request: web.Request) -> web.Response:
    node = request.app[NODE]
    patron, item = _query_barcode(request, "patron"), _query_barcode(request, "item")
    state = node.log.state
    found = [loan for loan in state.loans.values()
             if (patron is None or loan.patron == patron) and (item is None or loan.item == item)]
    return web.json_response({"loans": [node.loan_json(loan) for loan in found]})


def _path_barcode(request: web.Request, what: str) -> str:
    return barcode_or_400(request.match_info["barcode"], what)


@routes.get("/api/v1/patrons/{barcode}")
async def patron(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].patron_json(_path_barcode(request, "patron barcode")))


@routes.get("/api/v1/patrons")
async def patron_search(request: web.Request) -> web.Response:
    node = request.app[NODE]
    q = request.query.get("q", "").strip().casefold()
    if not q or len(q) > 100:
        raise ApiError(400, "bad_query", "q must be 1-100 characters of a patron's name")
    state = node.log.state
    hits = []
    for barcode, event_id in state.registrations.items():
        name = node.log.events[event_id].body["name"]
        if q in name.casefold():
            hits.append({"barcode": barcode, "name": name, "source": "registered offline"})
    return web.json_response({"patrons": hits[:50]})


@routes.get("/api/v1/items/{barcode}")
async def item(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].item_json(_path_barcode(request, "item barcode")))


@routes.get("/api/v1/events")
async def events(request: web.Request) -> web.Response:
    """Events that arrived after the cursor (a local arrival position, so a late event from a healed
    partition is never skipped), sorted in causal order; `next` is the cursor for the following call."""
    node = request.app[NODE]
    after = _int_param(request, "after", 0, 1 << 62)
    limit = _int_param(request, "limit", 1000, PAGE_MAX)
    page = node.log.arrivals[after:after + limit]
    ordered = sorted(page, key=lambda a: node.log.ordered_log.key_of(a.event.id))
    body: dict[str, Any] = {
        "events": [node.event_json(a.event) for a in ordered],
        "next": page[-1].pos if page else after,
        "total": len(node.log.arrivals),
    }
    return web.json_response(body)


@routes.get("/api/v1/conflicts")
async def conflicts(request: web.Request) -> web.Response:
    node = request.app[NODE]
    return web.json_response({"conflicts": [node.conflict_json(c) for c in node.log.state.open_conflicts()]})


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE].status())


@routes.get("/api/v1/outcomes")
async def outcomes(request: web.Request) -> web.Response:
    """The ILS's answer to every uploaded event (the upload report), newest first."""
    node = request.app[NODE]
    wanted = request.query.get("status")
    if wanted not in (None, "", "applied", "refused", "pending"):
        raise ApiError(400, "bad_parameter", "status must be applied, refused or pending")
    q = request.query.get("q", "").strip().casefold()[:100]
    limit = _int_param(request, "limit", 1000, PAGE_MAX)
    rows = node.outcome_rows()
    found = [r for r in rows if (not wanted or r["status"] == wanted)
             and (not q or any(q in str(r.get(k) or "").casefold() for k in ("patron", "item", "message", "desk")))]
    return web.json_response({"outcomes": found[:limit], "total": len(found)})
