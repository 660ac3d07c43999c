"""Koha: operations through the offline-circulation service, snapshots and reconciliation through REST.

The offline service is what lets a loan be recorded at its original time (REST checkouts cannot backdate
and released Koha has no REST check-in). Login follows Koha 24.05+: an anonymous GET of
/cgi-bin/koha/svc/authentication gives a session cookie and a CSRF token (response header `CSRF-TOKEN`);
a POST of login_userid/login_password with them gives the logged-in session and the token every later
POST carries. A Koha that hands out no token is older: then each operation is a GET with userid/password.
The session is shared by all requests (one aiohttp connection pool, many requests in flight) and logged
in again after "Authentication failed." or a refused token, which Koha answers before doing anything, so
that one retry is safe.

Outcomes: `Success.`/`Added.` → applied; `Borrower not found.`, `Item not found.`, `Barcode not found.`,
`Item not issued.` → refused, in Koha's words; `Authentication failed.` → transient "auth"; 5xx,
timeouts, refused connections → transient. Renewals go out as an issue to the patron who has the item
(Koha's AddIssue renews in that case). Koha's offline service knows no in-house use or registration: a
registration is sent through REST (`POST /api/v1/patrons`, the desk's card as the cardnumber, the patron
category and library from the ILS URL's `category=` and `branchcode=`); a card the ILS has already is
"found applied" when the surname matches (a resend after a bridge restart), refused otherwise. In-house
uses are refused as "unsupported".
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC
from typing import Any

import aiohttp

from node.ilsbridge.adapters.base import Credentials, IlsUnavailable, SnapshotKind
from node.ilsbridge.adapters.rest import KohaRest
from node.ilsbridge.operation import Operation, Outcome

SERVICE_PATH = "/cgi-bin/koha/offline_circ/service.pl"
AUTH_PATH = "/cgi-bin/koha/svc/authentication"
SESSION_COOKIE = "CGISESSID"
CSRF_HEADER = "CSRF-TOKEN"

APPLIED = {"Success.", "Added."}
REFUSED = {
    "Borrower not found.": "patron_not_found",
    "Item not found.": "item_not_found",
    "Barcode not found.": "item_not_found",
    "Item not issued.": "not_issued",
}
AUTH_FAILED = "Authentication failed."
_STATUS = re.compile(r"<status>\s*([^<\s]*)\s*</status>")


class _AuthFailed(Exception):
    pass


class KohaAdapter:
    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        branchcode: str = "",
        category: str = "",
        pending: bool = False,
        timeout: float = 10.0,
        max_connections: int = 32,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.credentials = credentials
        self.branchcode = branchcode
        self.category = category  # the patron category of patrons registered at a desk
        self.pending = pending
        self.timeout = timeout
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._login_lock: asyncio.Lock | None = None
        self._mode: str | None = None  # "csrf" (24.05+) or "legacy" (GET with userid/password)
        self._sid: str | None = None
        self._token: str | None = None
        self.rest = KohaRest(self.base, credentials, self._http)

    @property
    def login_mode(self) -> str | None:
        """How the adapter talks to this Koha: "csrf" (24.05+ session and token), "legacy" (GET with
        userid/password), or None before the first login."""
        return self._mode

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),  # the session cookie is handled by hand
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- login ------------------------------------------------------------------------------------------

    async def _ensure_login(self) -> None:
        if self._mode is not None:
            return
        if self._login_lock is None:
            self._login_lock = asyncio.Lock()
        async with self._login_lock:
            if self._mode is None:
                await self._login()

    async def _login(self) -> None:
        session = await self._http()
        url = self.base + AUTH_PATH
        async with session.get(url) as r:
            await r.read()
            token = r.headers.get(CSRF_HEADER)
            cookie = r.cookies.get(SESSION_COOKIE)
            if r.status >= 500:
                raise aiohttp.ClientResponseError(
                    r.request_info, r.history, status=r.status, message=r.reason or ""
                )
        if r.status != 200 or not token or cookie is None:
            self._mode, self._sid, self._token = "legacy", None, None
            return
        form = {"login_userid": self.credentials.user, "login_password": self.credentials.password}
        headers = {CSRF_HEADER: token, "Cookie": f"{SESSION_COOKIE}={cookie.value}"}
        async with session.post(url, data=form, headers=headers) as r:
            body = await r.text(errors="replace")
            new_token = r.headers.get(CSRF_HEADER)
            new_cookie = r.cookies.get(SESSION_COOKIE)
            if r.status >= 500:
                raise aiohttp.ClientResponseError(
                    r.request_info, r.history, status=r.status, message=r.reason or ""
                )
        match = _STATUS.search(body)
        if r.status != 200 or not match or match.group(1) != "ok" or not new_token or new_cookie is None:
            raise _AuthFailed()
        self._mode, self._sid, self._token = "csrf", new_cookie.value, new_token

    def _forget_login(self) -> None:
        self._mode = self._sid = self._token = None

    # --- operations ---------------------------------------------------------------------------------------

    async def _params(self, op: Operation) -> dict[str, str] | Outcome:
        when = op.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        params = {"timestamp": when}
        if self.branchcode:
            params["branchcode"] = self.branchcode
        if self.pending:
            params["pending"] = "true"
        if op.kind in ("checkout", "renew"):
            patron = op.patron
            if op.kind == "renew" and not patron and op.item:
                try:
                    patron = await self.current_loan(op.item)
                except IlsUnavailable as exc:
                    return Outcome(
                        "transient", f"cannot find who has the item to renew: {exc}", "unreachable"
                    )
                if patron is None:
                    return Outcome("refused", "Item not issued.", "not_issued")
            if not patron or not op.item:
                return Outcome("refused", f"a {op.kind} needs a patron and an item", "invalid")
            params.update(action="issue", cardnumber=patron, barcode=op.item)
        elif op.kind == "checkin":
            if not op.item:
                return Outcome("refused", "a checkin needs an item", "invalid")
            params.update(action="return", barcode=op.item)
        elif op.kind == "payment":
            if not op.patron or op.amount is None:
                return Outcome("refused", "a payment needs a patron and an amount", "invalid")
            params.update(action="payment", cardnumber=op.patron, amount=f"{op.amount:.2f}")
        else:
            return Outcome("refused", f"Koha's offline circulation service has no {op.kind}", "unsupported")
        return params

    async def apply(self, op: Operation) -> Outcome:
        if op.kind == "patron_register":
            return await self._register(op)
        params = await self._params(op)
        if isinstance(params, Outcome):
            return params
        outcome = Outcome("transient", AUTH_FAILED, "auth")
        for _ in range(2):
            try:
                await self._ensure_login()
                status, text = await self._send(params)
            except _AuthFailed:
                self._forget_login()
                return Outcome("transient", AUTH_FAILED, "auth")
            except TimeoutError:
                self._forget_login()
                return Outcome("transient", "Koha did not answer in time", "timeout")
            except aiohttp.ClientResponseError as exc:
                self._forget_login()
                return Outcome("transient", f"Koha answered HTTP {exc.status}", f"http_{exc.status}")
            except (aiohttp.ClientError, OSError) as exc:
                self._forget_login()
                return Outcome("transient", f"Koha unreachable: {type(exc).__name__}: {exc}", "unreachable")
            outcome = _outcome(status, text)
            if outcome.code != "auth":
                return outcome
            self._forget_login()  # session expired or token refused: Koha did nothing, log in and retry once
        return outcome

    async def _register(self, op: Operation) -> Outcome:
        if not op.patron:
            return Outcome("refused", "a registration needs a card", "invalid")
        if not self.category or not self.branchcode:
            return Outcome("refused", "this bridge creates no patrons: give category= and branchcode= in the ILS "
                                      "URL, or register the patron at the ILS", "unsupported")
        surname, firstname = split_name(dict(op.details).get("name") or op.patron)
        patron = {"cardnumber": op.patron, "surname": surname, "firstname": firstname,
                  "category_id": self.category, "library_id": self.branchcode}
        try:
            status, body = await self.rest.create_patron(patron)
            if status == 201:
                made = body.get("patron_id") if isinstance(body, dict) else None
                return Outcome("applied", f"Patron created (card {op.patron}, patron_id {made}).")
            if status == 409:
                known = await self.rest.patron_named(op.patron)
                if known is not None and str(known.get("surname", "")).casefold() == surname.casefold():
                    return Outcome("applied", f"Patron found at the ILS already (card {op.patron}).")
                return Outcome("refused", f"card {op.patron} already belongs to another patron at the ILS",
                               "card_in_use")
        except IlsUnavailable as exc:
            return Outcome("transient", f"Koha unreachable: {exc}", "unreachable")
        error = body.get("error") if isinstance(body, dict) else None
        if status in (401, 403) or status >= 500:
            return Outcome("transient", f"Koha answered HTTP {status}: {error or ''}".strip(), f"http_{status}")
        return Outcome("refused", f"Koha refused the new patron (HTTP {status}): {error or body!r}"[:300],
                       f"http_{status}")

    async def _send(self, params: dict[str, str]) -> tuple[int, str]:
        session = await self._http()
        url = self.base + SERVICE_PATH
        if self._mode == "csrf" and self._sid and self._token:
            headers = {CSRF_HEADER: self._token, "Cookie": f"{SESSION_COOKIE}={self._sid}"}
            async with session.post(url, data=params, headers=headers) as r:
                return r.status, await r.text(errors="replace")
        query = {**params, "userid": self.credentials.user, "password": self.credentials.password}
        async with session.get(url, params=query) as r:
            return r.status, await r.text(errors="replace")

    # --- queries ------------------------------------------------------------------------------------------

    async def probe(self) -> bool:
        try:
            session = await self._http()
            async with session.get(self.base + AUTH_PATH) as r:
                await r.read()
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def current_loan(self, item_barcode: str) -> str | None:
        return await self.rest.current_loan(item_barcode)

    async def fetch_after(self, kind: SnapshotKind, after: int, per_page: int) -> list[dict[str, Any]]:
        return await self.rest.fetch_after(kind, after, per_page)

    async def fetch_page(self, kind: SnapshotKind, page: int, per_page: int) -> list[dict[str, Any]]:
        return await self.rest.fetch_page(kind, page, per_page)

    async def fetch_rules(self) -> tuple[Any, Any]:
        return await self.rest.fetch_rules()

    async def patron_info(self, card: str) -> dict[str, Any] | None:
        return await self.rest.patron_named(card)

    async def item_info(self, barcode: str) -> tuple[dict[str, Any] | None, str | None]:
        item = await self.rest.one("items", "external_id", barcode)
        return item, (await self.rest.current_loan(barcode) if item is not None else None)


def split_name(name: str) -> tuple[str, str]:
    """(surname, first names) of a name typed at the desk: "Novák, Jan" as the desk shows names, else "Jan
    Novák" with the surname last (staff can correct it at the ILS)."""
    surname, comma, first = name.partition(",")
    if comma and surname.strip():
        return surname.strip()[:100], first.strip()[:100]
    words = name.replace(",", " ").split()
    return (words[-1][:100], " ".join(words[:-1])[:100]) if words else ("?", "")


def _outcome(status: int, text: str) -> Outcome:
    """Koha's answer to one offline-service request as an Outcome."""
    reply = text.strip()
    if status == 200:
        if reply in APPLIED:
            return Outcome("applied", reply)
        if reply in REFUSED:
            return Outcome("refused", reply, REFUSED[reply])
        if reply == AUTH_FAILED:
            return Outcome("transient", reply, "auth")
        return Outcome("refused", f"unexpected reply from Koha: {reply[:200]!r}", "unexpected")
    if status in (401, 403):
        return Outcome("transient", f"Koha refused the session (HTTP {status}): {reply[:100]}", "auth")
    if status >= 500:
        return Outcome("transient", f"Koha answered HTTP {status}: {reply[:100]}", f"http_{status}")
    return Outcome("refused", f"Koha answered HTTP {status}: {reply[:200]}", f"http_{status}")
