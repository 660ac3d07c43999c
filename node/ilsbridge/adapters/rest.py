"""Koha's REST API as the bridge uses it: snapshot pages and "who has this item now".

HTTP Basic auth (Koha's RESTBasicAuth) with the bridge's staff account. Pages are `_page`/`_per_page`.
Reconciliation follows Koha's own resources: the item by `external_id` (its barcode), its checkout by
`item_id`, the borrower's cardnumber (taken from the checkout row when the server includes it, else from
`/patrons/{patron_id}`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from node.ilsbridge.adapters.base import ID_FIELDS, SNAPSHOT_KINDS, Credentials, IlsUnavailable, SnapshotKind


class KohaRest:
    def __init__(self, base_url: str, credentials: Credentials,
                 session_factory: Callable[[], Awaitable[aiohttp.ClientSession]]) -> None:
        self.base = base_url.rstrip("/")
        token = base64.b64encode(f"{credentials.user}:{credentials.password}".encode()).decode("ascii")
        self._auth = f"Basic {token}"
        self._session_factory = session_factory

    async def get_json(self, path: str, params: dict[str, str] | None = None) -> tuple[Any, int]:
        """(decoded body, X-Total-Count or -1). IlsUnavailable for anything but a 200 with JSON."""
        session = await self._session_factory()
        try:
            async with session.get(
                f"{self.base}{path}", params=params, headers={"Authorization": self._auth}
            ) as r:
                if r.status != 200:
                    text = (await r.text(errors="replace"))[:200]
                    raise IlsUnavailable(f"GET {path}: HTTP {r.status} {text}".strip())
                body = await r.json(content_type=None)
                total = r.headers.get("X-Total-Count", "")
                return body, int(total) if total.isdigit() else -1
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise IlsUnavailable(f"GET {path}: {type(exc).__name__}: {exc}") from None

    async def fetch_page(self, kind: SnapshotKind, page: int, per_page: int) -> list[dict[str, Any]]:
        if kind not in SNAPSHOT_KINDS:
            raise ValueError(f"unknown snapshot kind {kind!r}")
        if page < 1 or per_page < 1:
            raise ValueError("page and per_page start at 1")
        body, _ = await self.get_json(f"/api/v1/{kind}", {"_page": str(page), "_per_page": str(per_page)})
        if not isinstance(body, list):
            raise IlsUnavailable(f"GET /api/v1/{kind}: expected a JSON list")
        return body

    async def fetch_after(self, kind: SnapshotKind, after: int, per_page: int) -> list[dict[str, Any]]:
        """Rows whose id is above `after`, in id order (Koha's `q` and `_order_by`): keyset paging, so each
        page costs the ILS the same, where `_page` makes it skip every row before it."""
        if kind not in SNAPSHOT_KINDS:
            raise ValueError(f"unknown snapshot kind {kind!r}")
        id_field = ID_FIELDS[kind]
        body, _ = await self.get_json(f"/api/v1/{kind}", {
            "q": json.dumps({id_field: {">": after}}), "_order_by": f"+{id_field}", "_per_page": str(per_page)})
        if not isinstance(body, list):
            raise IlsUnavailable(f"GET /api/v1/{kind}: expected a JSON list")
        return body

    async def fetch_rules(self) -> tuple[Any, Any]:
        """Koha's circulation rule sets and the opening calendar, as JSON; None for either the ILS does not
        serve (a Koha without the calendar route answers 404: due dates then ignore closed days)."""
        out: list[Any] = []
        for path in ("/api/v1/circulation_rules", "/api/v1/contrib/circmesh/calendar"):
            try:
                body, _ = await self.get_json(path)
            except IlsUnavailable as exc:
                if "HTTP 404" not in str(exc):
                    raise
                body = None
            out.append(body)
        return out[0], out[1]

    async def create_patron(self, patron: dict[str, str]) -> tuple[int, Any]:
        """Koha's `POST /api/v1/patrons`: (HTTP status, decoded body or None). IlsUnavailable when the ILS
        cannot be reached or answers something that is not JSON."""
        session = await self._session_factory()
        try:
            async with session.post(f"{self.base}/api/v1/patrons", json=patron,
                                    headers={"Authorization": self._auth}) as r:
                text = await r.text(errors="replace")
                try:
                    return r.status, json.loads(text) if text.strip() else None
                except ValueError:
                    return r.status, {"error": text[:200]}
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise IlsUnavailable(f"POST /api/v1/patrons: {type(exc).__name__}: {exc}") from None

    async def one(self, kind: str, field: str, value: str) -> dict[str, Any] | None:
        """The row whose `field` is exactly `value`, or None. Koha matches query fields by substring unless
        told otherwise (`_match=exact`), and `_` is a wildcard there: card 100 would find patron 1000."""
        found, _ = await self.get_json(f"/api/v1/{kind}", {field: value, "_match": "exact"})
        for row in found if isinstance(found, list) else []:
            if isinstance(row, dict) and row.get(field) == value:
                return row
        return None

    async def patron_named(self, cardnumber: str) -> dict[str, Any] | None:
        """The ILS's patron with this card, or None."""
        return await self.one("patrons", "cardnumber", cardnumber)

    async def current_loan(self, item_barcode: str) -> str | None:
        try:
            item = await self.one("items", "external_id", item_barcode)
            if item is None:
                return None
            checkouts, _ = await self.get_json(
                "/api/v1/checkouts", {"item_id": str(int(item["item_id"])), "_match": "exact"}
            )
            if not isinstance(checkouts, list) or not checkouts:
                return None
            checkout = checkouts[0]
            if checkout.get("cardnumber"):
                return str(checkout["cardnumber"])
            patron, _ = await self.get_json(f"/api/v1/patrons/{int(checkout['patron_id'])}")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise IlsUnavailable(
                f"unexpected REST answer while looking for {item_barcode}: {exc!r}"
            ) from None
        return str(patron["cardnumber"]) if isinstance(patron, dict) and patron.get("cardnumber") else None
