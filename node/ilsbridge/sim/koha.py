"""Koha's offline-circulation service (`/cgi-bin/koha/offline_circ/service.pl`) and its login.

What Koha does, and so what this does:
- Parameters `action` (issue | return | payment), `timestamp` (UTC `YYYY-MM-DD HH:MM:SS`), `cardnumber`,
  `barcode`, `amount`, `branchcode`, `pending`. `pending=true` stores the operation in
  pending_offline_operations for staff review and answers `Added.`; anything else applies it at once.
- Replies are text/plain with HTTP 200 even on failure: `Success.`, `Added.`, `Borrower not found.`,
  `Barcode not found.` (an issue of an unknown barcode), `Item not found.` (a return of one),
  `Item not issued.`, `Authentication failed.`. An unknown action gets an empty reply, as in Koha.
- An issue of an item on loan to someone else returns it first; an issue to the patron who already has
  the item renews it (Koha's AddIssue); no patron block is checked; a return runs no holds logic;
  a payment reduces the patron's fines. A missing timestamp means now.
- Credentials: `userid`/`password` (before 24.05) or `login_userid`/`login_password`, or the `CGISESSID`
  cookie of a logged-in session. Since 24.05 every POST must carry a CSRF token (parameter `csrf_token`
  or header `CSRF-TOKEN`) bound to the session cookie, else 403 "Wrong CSRF token". The token comes from
  `/cgi-bin/koha/svc/authentication`: a GET opens an anonymous session (cookie) and returns a token in the
  `CSRF-TOKEN` response header; a POST of `login_userid`/`login_password` with that token and cookie logs
  in and returns a new session cookie and a new token for later POSTs. GET with credentials keeps working.

`--koha-before-24.05` (SimConfig.csrf = False) makes the simulator an older Koha: no tokens are handed out
or checked.

Not Koha: an unparsable timestamp or amount answers HTTP 400 with a plain-text reason (Koha would store
garbage or die), and nothing is recorded.

Every processed operation lands in the simulator's ledger with protocol "koha" and a neutral action
(checkout, checkin, payment) whatever Koha calls it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from node.ilsbridge.sim.library import Library, now
from node.ilsbridge.sim.rules import format_timestamp, parse_timestamp

SERVICE_PATH = "/cgi-bin/koha/offline_circ/service.pl"
AUTH_PATH = "/cgi-bin/koha/svc/authentication"
SESSION_COOKIE = "CGISESSID"
CSRF_HEADER = "CSRF-TOKEN"
CSRF_LIFETIME_S = 8 * 3600
MAX_SESSIONS = 10_000
MAX_AMOUNT = Decimal(1_000_000)
ACTIONS = {"issue": "checkout", "return": "checkin", "payment": "payment"}


@dataclass(frozen=True)
class StaffAccount:
    userid: str
    password: str = field(repr=False)

    def check(self, userid: str, password: str) -> bool:
        ok_user = hmac.compare_digest(userid.encode(), self.userid.encode())
        ok_pass = hmac.compare_digest(password.encode(), self.password.encode())
        return ok_user and ok_pass


class Sessions:
    """CGISESSID sessions (anonymous or logged in) and the CSRF tokens bound to them."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self._users: OrderedDict[str, str | None] = OrderedDict()

    def new(self, user: str | None = None) -> str:
        sid = secrets.token_hex(16)
        self._users[sid] = user
        while len(self._users) > MAX_SESSIONS:
            self._users.popitem(last=False)
        return sid

    def exists(self, sid: str | None) -> bool:
        return sid is not None and sid in self._users

    def user(self, sid: str | None) -> str | None:
        return None if sid is None else self._users.get(sid)

    def _mac(self, sid: str, nonce: str, issued: int) -> str:
        return hmac.new(self._secret, f"{sid}:{nonce}:{issued}".encode(), hashlib.sha1).hexdigest()

    def csrf_token(self, sid: str) -> str:
        nonce, issued = secrets.token_hex(20), int(time.time())
        return f"{nonce},{self._mac(sid, nonce, issued)},{issued}"

    def check_csrf(self, sid: str | None, token: str) -> bool:
        if not self.exists(sid):
            return False
        parts = token.split(",")
        if len(parts) != 3 or not parts[2].isdigit():
            return False
        nonce, mac, issued = parts[0], parts[1], int(parts[2])
        if not 0 <= time.time() - issued <= CSRF_LIFETIME_S:
            return False
        return hmac.compare_digest(mac, self._mac(str(sid), nonce, issued))


def _text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/plain", charset="utf-8")


def _xml_status(status: str) -> str:
    return f"<?xml version='1.0' standalone='yes'?>\n<response>\n  <status>{status}</status>\n</response>\n"


class KohaService:
    def __init__(self, library: Library, staff: StaffAccount, *, csrf: bool = True) -> None:
        self.library = library
        self.staff = staff
        self.sessions = Sessions()
        self.csrf = csrf  # False: behave like Koha before 24.05 (no tokens handed out or checked)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", SERVICE_PATH, self.service)
        app.router.add_route("*", AUTH_PATH, self.authentication)

    async def _params(self, request: web.Request) -> MultiDictProxy[str]:
        merged: MultiDict[str] = MultiDict(request.query)
        if request.method == "POST":
            try:
                form = await request.post()
            except Exception:
                form = MultiDictProxy(MultiDict())
            for key, value in form.items():
                if isinstance(value, str):
                    merged[key] = value
        return MultiDictProxy(merged)

    def _csrf_refused(self, request: web.Request, params: MultiDictProxy[str]) -> web.Response | None:
        if request.method not in ("GET", "HEAD", "POST"):
            return _text("Method not allowed", 405)
        if request.method != "POST" or not self.csrf:
            return None
        token = params.get("csrf_token") or request.headers.get(CSRF_HEADER)
        if not token or not self.sessions.check_csrf(request.cookies.get(SESSION_COOKIE), token):
            return _text("Wrong CSRF token", 403)
        return None

    def _credentials(self, params: MultiDictProxy[str]) -> tuple[str, str] | None:
        if "login_userid" in params or "login_password" in params:
            return params.get("login_userid", ""), params.get("login_password", "")
        if "password" in params:
            return params.get("userid", ""), params.get("password", "")
        return None

    def _user(self, request: web.Request, params: MultiDictProxy[str]) -> str | None:
        creds = self._credentials(params)
        if creds is not None:
            return creds[0] if self.staff.check(*creds) else None
        return self.sessions.user(request.cookies.get(SESSION_COOKIE))

    async def authentication(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        refused = self._csrf_refused(request, params)
        if refused is not None:
            return refused
        sid = request.cookies.get(SESSION_COOKIE)
        if not self.sessions.exists(sid):
            sid = self.sessions.new()
        status = "ok" if self.sessions.user(sid) else "failed"
        creds = self._credentials(params)
        if creds is not None:
            if self.staff.check(*creds):
                sid, status = self.sessions.new(creds[0]), "ok"
            else:
                status = "failed"
        response = web.Response(text=_xml_status(status), content_type="text/xml", charset="utf-8")
        response.set_cookie(SESSION_COOKIE, str(sid), httponly=True, path="/")
        if self.csrf:
            response.headers[CSRF_HEADER] = self.sessions.csrf_token(str(sid))
        return response

    async def service(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        refused = self._csrf_refused(request, params)
        if refused is not None:
            return refused
        user = self._user(request, params)
        if user is None:
            return _text("Authentication failed.")
        action = params.get("action", "")
        barcode = params.get("barcode", "").strip()
        cardnumber = params.get("cardnumber", "").strip()
        branchcode = params.get("branchcode", "")
        raw_amount = params.get("amount", "") or "0"
        raw_timestamp = params.get("timestamp", "").strip()
        try:
            at = parse_timestamp(raw_timestamp) if raw_timestamp else now()
        except ValueError:
            return _text("Invalid timestamp.", 400)
        try:
            amount = Decimal(raw_amount.strip())
            if not amount.is_finite() or abs(amount) > MAX_AMOUNT:
                raise InvalidOperation
        except (InvalidOperation, ValueError):
            return _text("Invalid amount.", 400)
        neutral = ACTIONS.get(action)
        if neutral is None:
            return _text("")
        timestamp = format_timestamp(at)
        amount_text = str(amount) if action == "payment" else None
        if params.get("pending") == "true":
            self.library.add_pending(
                params.get("userid", user), branchcode, timestamp, action, barcode, cardnumber, str(amount)
            )
            outcome = "Added."
        else:
            try:
                outcome = self._apply(action, at, cardnumber, barcode, amount)
            except Exception:
                self.library.rollback()
                raise
        self.library.record(
            "koha",
            neutral,
            timestamp,
            cardnumber if action != "return" else None,
            barcode if action != "payment" else None,
            amount_text,
            outcome,
        )
        return _text(outcome)

    def _apply(self, action: str, at: datetime, cardnumber: str, barcode: str, amount: Decimal) -> str:
        lib = self.library
        if action == "issue":
            patron = lib.patron(cardnumber)
            if patron is None:
                return "Borrower not found."
            item = lib.item(barcode)
            if item is None:
                return "Barcode not found."
            lib.issue(patron, item, at)
            return "Success."
        if action == "return":
            item = lib.item(barcode)
            if item is None:
                return "Item not found."
            return "Success." if lib.return_item(item, at) is not None else "Item not issued."
        patron = lib.patron(cardnumber)
        if patron is None:
            return "Borrower not found."
        lib.pay(patron, int((amount * 100).to_integral_value()), at, "koha")
        return "Success."
