"""What a desk can look up: loans, patrons, items, the ordered log, conflicts, this node's status."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api.errors import ApiError, barcode_or_400
from node.api.keys import LOG, STATUS, VIEWS

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
    patron, item = _query_barcode(request, "patron"), _query_barcode(request, "item")
    return web.json_response({"loans": request.app[VIEWS].loans_json(patron, item)})


def _path_barcode(request: web.Request, what: str) -> str:
    return barcode_or_400(request.match_info["barcode"], what)


@routes.get("/api/v1/patrons/{barcode}")
async def patron(request: web.Request) -> web.Response:
    return web.json_response(request.app[VIEWS].patron_json(_path_barcode(request, "patron barcode")))


@routes.get("/api/v1/patrons")
async def patron_search(request: web.Request) -> web.Response:
    q = request.query.get("q", "").strip()
    if not q or len(q) > 100:
        raise ApiError(400, "bad_query", "q must be 1-100 characters of a patron's name")
    return web.json_response({"patrons": request.app[VIEWS].patron_search(q)})


@routes.get("/api/v1/items/{barcode}")
async def item(request: web.Request) -> web.Response:
    return web.json_response(request.app[VIEWS].item_json(_path_barcode(request, "item barcode")))


@routes.get("/api/v1/events")
async def events(request: web.Request) -> web.Response:
    """Events that arrived after the cursor (a local arrival position, so a late event from a healed
    partition is never skipped), sorted in causal order; `next` is the cursor for the following call. Read
    from the journal: the whole history, once written (`total`: every event this desk holds)."""
    log, views = request.app[LOG], request.app[VIEWS]
    after = _int_param(request, "after", 0, 1 << 62)
    limit = _int_param(request, "limit", 1000, PAGE_MAX)
    page = log.page(after, limit)
    body: dict[str, Any] = {
        "events": [views.event_json(event) for _, event, _ in sorted(page, key=lambda row: row[2])],
        "next": page[-1][0] if page else after,
        "total": log.event_count,
    }
    return web.json_response(body)


@routes.get("/api/v1/conflicts")
async def conflicts(request: web.Request) -> web.Response:
    return web.json_response({"conflicts": request.app[VIEWS].open_conflicts_json()})


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATUS].report())


@routes.get("/api/v1/outcomes")
async def outcomes(request: web.Request) -> web.Response:
    """The ILS's answer to every uploaded event (the upload report), newest first."""
    wanted = request.query.get("status")
    if wanted not in (None, "", "applied", "refused", "pending"):
        raise ApiError(400, "bad_parameter", "status must be applied, refused or pending")
    q = request.query.get("q", "").strip().casefold()[:100]
    limit = _int_param(request, "limit", 1000, PAGE_MAX)
    rows = request.app[VIEWS].outcome_rows()
    found = [r for r in rows if (not wanted or r["status"] == wanted)
             and (not q or any(q in str(r.get(k) or "").casefold() for k in ("patron", "item", "message", "desk")))]
    return web.json_response({"outcomes": found[:limit], "total": len(found)})
