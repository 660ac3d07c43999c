"""A Koha-style REST subset for snapshots, with HTTP Basic auth (Koha's RESTBasicAuth).

Koha's own shapes: `GET /api/v1/patrons`, `/api/v1/items`, `/api/v1/checkouts` (and `/{id}` of each),
paged with `_page` (from 1) and `_per_page` (default 20, -1 for all), the total in `X-Total-Count` and
`Link` headers with first/prev/next/last; query parameters named like a field filter on it (`cardnumber`,
`category_id`, `external_id`, `item_id`, `patron_id`), so "who has this item now" is
`GET /api/v1/checkouts?item_id=…` (or `?external_id=<barcode>`). Koha's JSON `q` is answered in the one
form a snapshot pages with, `{"patron_id": {">": n}}` (keyset paging, in id order as `_order_by=+patron_id`
asks), which costs the same for every page where `_page` skips every row before it.
`POST /api/v1/patrons` creates a patron (a desk's offline registration, sent by the bridge).
`GET /api/v1/circulation_rules` returns Koha's rule sets ({context, issuelength, lengthunit, renewalsallowed,
maxissueqty}). Field names are
Koha's: patron_id, cardnumber, surname, firstname, category_id, library_id, date_of_birth, date_enrolled,
expiry_date, email, phone, restricted, patron_card_lost, incorrect_address (Koha's "gone no address"),
account_balance and checkouts_count (embeds in Koha, always present here); item_id, biblio_id,
external_id (the barcode), callnumber, item_type_id, home_library_id, holding_library_id, location,
not_for_loan_status, lost_status, withdrawn, damaged_status, checked_out_date; checkout_id, patron_id,
item_id, external_id, library_id, checkout_date, due_date, renewals_count, last_renewed_date.

Extensions, because a desk working offline needs in one row what Koha spreads over several endpoints:
- patrons: `restriction` ({type, expiration_date, comment} of an active debarment, or null; Koha has it
  under /patrons/{id}/restrictions) and `checkouts_limit` (the category's loan limit; Koha: maxissueqty in
  /circulation_rules).
- items: `title` and `author` (Koha: the embedded biblio) and `holds`, the item's current holds in
  serving order ([{hold_id, patron_id, cardnumber, priority, status ("W" = waiting on the shelf),
  hold_date, pickup_library_id}]; Koha: /holds?item_id=).
- checkouts: `cardnumber` of the borrower (Koha: the embedded patron).
- `GET /api/v1/contrib/circmesh/calendar` (a plugin-style route): {library_id, closed_weekdays (Monday = 0),
  holidays}, so that due dates computed offline land on open days.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from node.ilsbridge.sim.koha import StaffAccount
from node.ilsbridge.sim.library import Library, now

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100_000
KINDS = ("patrons", "items", "checkouts")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_ID_FIELDS = {"patrons": "patron_id", "items": "item_id", "checkouts": "checkout_id"}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class RestApi:
    def __init__(self, library: Library, staff: StaffAccount) -> None:
        self.library = library
        self.staff = staff

    def add_routes(self, app: web.Application) -> None:
        for kind in KINDS:
            app.router.add_get(f"/api/v1/{kind}", self._lister(kind))
            app.router.add_get(f"/api/v1/{kind}/{{object_id}}", self._getter(kind))
        app.router.add_post("/api/v1/patrons", self.create_patron)
        app.router.add_get("/api/v1/circulation_rules", self.circulation_rules)
        app.router.add_get("/api/v1/contrib/circmesh/calendar", self.calendar)

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = (
                base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and self.staff.check(user, password)

    def _lister(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            if not self._authorized(request):
                return _error(401, "Authentication failure.")
            try:
                page = int(request.query.get("_page", "1"))
                per_page = int(request.query.get("_per_page", str(DEFAULT_PER_PAGE)))
            except ValueError:
                return _error(400, "_page and _per_page must be integers")
            if page < 1 or per_page == 0 or per_page < -1 or per_page > MAX_PER_PAGE:
                return _error(400, f"_page must be >= 1 and _per_page -1 or 1..{MAX_PER_PAGE}")
            filters = {k: v for k, v in request.query.items() if not k.startswith("_") and k != "q"}
            try:
                after = _after(request.query.get("q"), _ID_FIELDS[kind])
            except ValueError as e:
                return _error(400, str(e))
            order = request.query.get("_order_by", _ID_FIELDS[kind]).lstrip("+ ")
            if order != _ID_FIELDS[kind]:
                return _error(400, f"_order_by: this simulator orders {kind} by {_ID_FIELDS[kind]} only")
            total, rows = self.library.page(kind, filters, page, per_page, after)
            response = web.json_response(rows)
            response.headers["X-Total-Count"] = str(total)
            response.headers["X-Base-Total-Count"] = str(total)
            links = _links(request, page, per_page, total)
            if links:
                response.headers["Link"] = links
            return response

        return handler

    def _getter(self, kind: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            if not self._authorized(request):
                return _error(401, "Authentication failure.")
            object_id = request.match_info["object_id"]
            if not object_id.isdigit():
                return _error(400, "identifier must be an integer")
            _, rows = self.library.page(kind, {_ID_FIELDS[kind]: object_id}, 1, 1)
            if not rows:
                return _error(404, f"{kind[:-1].capitalize()} not found")
            return web.json_response(rows[0])

        return handler

    async def create_patron(self, request: web.Request) -> web.StreamResponse:
        """Koha's `POST /api/v1/patrons`: cardnumber, surname, firstname, category_id and library_id (the two
        last required); 409 when the card is another patron's already (Koha: "Given cardnumber already
        exists")."""
        if not self._authorized(request):
            return _error(401, "Authentication failure.")
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "body must be JSON")
        fields = ("cardnumber", "surname", "firstname", "category_id", "library_id")
        if not isinstance(body, dict) or not all(isinstance(body.get(f, ""), str) for f in fields):
            return _error(400, "a patron is a JSON object of text fields")
        card, surname = body.get("cardnumber", "").strip(), body.get("surname", "").strip()
        category, library = body.get("category_id", ""), body.get("library_id", "")
        if not card or len(card) > 32 or not surname or len(surname) > 100:
            return _error(400, "cardnumber (at most 32 characters) and surname are required")
        if category not in self.library.categories:
            return _error(400, f"category_id {category!r} is not a patron category")
        if library != self.library.library_id:
            return _error(400, f"library_id {library!r} is not a library")
        if self.library.patron(card) is not None:
            return web.json_response({"error": "Given cardnumber already exists", "conflict": "cardnumber"},
                                     status=409)
        try:
            patron_id = self.library.create_patron(card, surname, body.get("firstname", "").strip()[:100],
                                                   category, library, now())
        except Exception:
            self.library.rollback()
            raise
        _, rows = self.library.page("patrons", {"patron_id": str(patron_id)}, 1, 1)
        return web.json_response(rows[0], status=201)

    async def circulation_rules(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "Authentication failure.")
        return web.json_response(self.library.circulation_rules())

    async def calendar(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "Authentication failure.")
        return web.json_response(self.library.calendar_json())


def _after(q: str | None, id_field: str) -> int | None:
    """Koha's `q` (a JSON query), in the one form a snapshot uses: {"<id>": {">": n}}."""
    if q is None:
        return None
    try:
        query = json.loads(q)
        bound = query[id_field][">"]
        if set(query) != {id_field} or set(query[id_field]) != {">"} or not isinstance(bound, int):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ValueError(f'q: this simulator answers {{"{id_field}": {{">": <number>}}}} only') from None
    return int(bound)


def _links(request: web.Request, page: int, per_page: int, total: int) -> str:
    if per_page < 0:
        return ""
    last = max(1, -(-total // per_page))
    pages: dict[str, int] = {"first": 1, "last": last}
    if page > 1:
        pages["prev"] = page - 1
    if page < last:
        pages["next"] = page + 1
    parts: list[str] = []
    for rel, number in pages.items():
        url = request.url.update_query({"_page": str(number), "_per_page": str(per_page)})
        parts.append(f'<{url}>; rel="{rel}"')
    return ", ".join(parts)
