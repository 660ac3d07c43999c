"""SIP2: operations and reconciliation for nearly any ILS, over a small pool of logged-in connections.

SIP2 is one request at a time per connection, so concurrent callers each borrow a connection from the
pool (opened and logged in on demand, up to `pool_size`). Every request carries a sequence number and a
checksum; a 96 from the ACS (it could not read the message, so did nothing) makes us resend, up to three
times. A connection that breaks or times out is dropped and the next request opens a fresh one; an idle
connection the ACS closed meanwhile is noticed and replaced before anything is sent on it.

Operations go out as offline transactions: no-block `Y` and the desk's own time as the transaction date
(checkin: also as the return date), a checkout or renewal with the due date the desk gave (`nb due date`)
when it has one. ok=1 → applied; ok=0 → refused with the ACS's screen message (AF); a broken or silent
connection → transient (the bridge reconciles before resending). Who has an item now comes from the item
information response (17/18): the simulator puts the borrower in `AA`; an ACS that does not say needs a
REST base (`?rest=`) for that, and for snapshots. A renewal without a patron (the bridge fills in the one
the log knows) asks the ACS; where it cannot say, the renewal is refused with a message telling staff to
renew it at the ILS, rather than asked again forever.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any

import aiohttp

from node.ilsbridge import sip2 as codec
from node.ilsbridge.adapters.base import (
    AdapterUnsupported,
    Credentials,
    IlsUnavailable,
    SnapshotKind,
    SnapshotUnsupported,
)
from node.ilsbridge.adapters.rest import KohaRest
from node.ilsbridge.operation import Operation, Outcome
from node.ilsbridge.sip2 import Message, Sip2Error

MAX_RESENDS = 3
_CHARGED = {codec.CIRC_CHARGED, "05"}
BORROWER_NOT_GIVEN = "?"  # a patron the ACS does not name (the desk says "someone")


class _LoginRefused(Exception):
    pass


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self._seq = 0

    @property
    def stale(self) -> bool:
        return self.reader.at_eof() or self.writer.is_closing()

    async def request(self, msg: Message) -> Message:
        msg.seq = self._seq
        self._seq = (self._seq + 1) % 10
        data = codec.encode(msg)
        for _ in range(MAX_RESENDS + 1):
            self.writer.write(data)
            await self.writer.drain()
            frame = await asyncio.wait_for(self.reader.readuntil(codec.TERMINATOR), self.timeout)
            reply = codec.decode(frame.lstrip(b"\n"))
            if reply.code == "96":
                continue
            if reply.seq is not None and reply.seq != msg.seq:
                raise Sip2Error(f"answer to sequence {reply.seq}, expected {msg.seq}")
            return reply
        raise Sip2Error(f"the ACS asked for the {msg.name} message again {MAX_RESENDS} times")

    def close(self) -> None:
        self.writer.close()


class Sip2Adapter:
    def __init__(
        self,
        host: str,
        port: int,
        credentials: Credentials,
        *,
        institution: str = "",
        location: str = "",
        pool_size: int = 4,
        timeout: float = 10.0,
        currency: str = "USD",
        rest_base: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.credentials = credentials
        self.institution = institution
        self.location = location
        self.pool_size = max(1, pool_size)
        self.timeout = timeout
        self.currency = currency
        self._idle: list[_Connection] = []
        self._slots: asyncio.Semaphore | None = None
        self._http: aiohttp.ClientSession | None = None
        self.rest = KohaRest(rest_base, credentials, self._http_session) if rest_base else None

    # --- connections ----------------------------------------------------------------------------------------

    async def _open(self) -> _Connection:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)
        conn = _Connection(reader, writer, self.timeout)
        try:
            reply = await conn.request(
                codec.login(self.credentials.user, self.credentials.password, self.location)
            )
            if reply.code != "94" or reply.fixed.get("ok") != "1":
                raise _LoginRefused()
        except BaseException:
            conn.close()
            raise
        return conn

    async def _call(self, msg: Message) -> Message:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.pool_size)
        async with self._slots:
            conn = None
            while self._idle:
                candidate = self._idle.pop()
                if candidate.stale:
                    candidate.close()
                else:
                    conn = candidate
                    break
            if conn is None:
                conn = await self._open()
            try:
                reply = await conn.request(msg)
            except BaseException:
                conn.close()
                raise
            self._idle.append(conn)
            return reply

    async def _http_session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._http

    async def close(self) -> None:
        while self._idle:
            conn = self._idle.pop()
            conn.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- operations -----------------------------------------------------------------------------------------

    async def _message(self, op: Operation) -> Message | Outcome:
        inst = self.institution
        if op.kind == "checkout":
            if not op.patron or not op.item:
                return Outcome("refused", "a checkout needs a patron and an item", "invalid")
            return codec.checkout(inst, op.patron, op.item, op.at, no_block=True, nb_due=op.due)
        if op.kind == "checkin":
            if not op.item:
                return Outcome("refused", "a checkin needs an item", "invalid")
            return codec.checkin(inst, op.item, op.at, no_block=True, location=self.location)
        if op.kind == "renew":
            if not op.item:
                return Outcome("refused", "a renewal needs an item", "invalid")
            patron = op.patron
            if not patron:
                # A renewal (29) must name the patron (AA). The bridge gives the one the log knows;
                # without it only the ACS can say, and a standard item information (18) does not.
                try:
                    patron = await self.current_loan(op.item)
                except IlsUnavailable as exc:
                    return Outcome(
                        "transient", f"cannot find who has the item to renew: {exc}", "unreachable"
                    )
                except AdapterUnsupported:
                    # Asking again would get the same answer forever: a final outcome staff can act on.
                    return Outcome("refused", no_patron_message(op.item), "no_patron")
                if patron is None:
                    return Outcome("refused", "Item not checked out.", "not_issued")
            return codec.renew(inst, patron, op.item, op.at, no_block=True, nb_due=op.due)
        if op.kind == "payment":
            if not op.patron or op.amount is None:
                return Outcome("refused", "a payment needs a patron and an amount", "invalid")
            transaction = (op.ref or "")[:64].replace("|", "/")
            return codec.fee_paid(
                inst, op.patron, op.amount, op.at, currency=self.currency, transaction_id=transaction
            )
        return Outcome("refused", f"SIP2 has no {op.kind}", "unsupported")

    async def apply(self, op: Operation) -> Outcome:
        try:
            msg = await self._message(op)
            if isinstance(msg, Outcome):
                return msg
            reply = await self._call(msg)
        except _LoginRefused:
            return Outcome("transient", "the ACS refused the SIP2 login", "auth")
        except TimeoutError:
            return Outcome("transient", "the ACS did not answer in time", "timeout")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            return Outcome("transient", f"SIP2 connection failed: {type(exc).__name__}: {exc}", "unreachable")
        except Sip2Error as exc:
            return Outcome("transient", f"unreadable SIP2 answer: {exc}", "protocol")
        return _outcome(msg, reply)

    # --- queries --------------------------------------------------------------------------------------------

    async def probe(self) -> bool:
        try:
            reply = await self._call(codec.sc_status())
        except (TimeoutError, _LoginRefused, OSError, asyncio.IncompleteReadError, Sip2Error):
            return False
        return reply.code == "98" and reply.fixed.get("online_status") == "Y"

    async def current_loan(self, item_barcode: str) -> str | None:
        reply = await self._ask(codec.item_information(self.institution, item_barcode, datetime.now(UTC)), "18",
                                at_scan=False)
        if reply.fixed.get("circulation_status") not in _CHARGED:
            return None
        borrower = reply.get("AA")
        if borrower:
            return borrower
        if self.rest is not None:
            return await self.rest.current_loan(item_barcode)
        raise AdapterUnsupported("this ACS does not say who has an item; give a REST base with ?rest=")

    async def _ask(self, msg: Message, code: str, *, at_scan: bool = True) -> Message:
        """A question to the ACS, answered by a `code` message; IlsUnavailable when it is not. One asked at
        scan time is never queued behind the upload's requests (a patron is waiting): when every
        connection is busy it is not asked at all."""
        if at_scan and self._slots is not None and self._slots.locked():
            raise IlsUnavailable("every SIP2 connection is busy uploading")
        try:
            reply = await self._call(msg)
        except _LoginRefused:
            raise IlsUnavailable("the ACS refused the SIP2 login") from None
        except (TimeoutError, OSError, asyncio.IncompleteReadError, Sip2Error) as exc:
            raise IlsUnavailable(f"{msg.name} failed: {type(exc).__name__}: {exc}") from None
        if reply.code != code:
            raise IlsUnavailable(f"expected a {codec.NAMES.get(code, code)}, got {reply.name}")
        return reply

    async def patron_info(self, card: str) -> dict[str, Any] | None:
        """Patron information (63/64) in Koha's REST shape (rows.py reads it); None: not a valid patron."""
        reply = await self._ask(codec.patron_information(self.institution, card, datetime.now(UTC)), "64")
        if reply.get("BL") != "Y":
            return None
        status = (reply.fixed.get("patron_status") or "").ljust(14)
        expiry = "".join(ch for ch in (reply.get("PA") or "") if ch in "0123456789")[:8]
        return {
            "cardnumber": card, "surname": reply.get("AE") or card, "category_id": reply.get("PC"),
            "expiry_date": f"{expiry[:4]}-{expiry[4:6]}-{expiry[6:8]}" if len(expiry) == 8 else None,
            # flag 0, charge privileges denied, is set by Koha for any block (expiry, fines, a lost card, a
            # debarment): "restricted at the ILS", the lost card said apart
            "patron_card_lost": status[4] == "Y", "restricted": status[0] == "Y",
            "account_balance": _amount(reply.get("BV")),
            "checkouts_count": _count(reply.fixed.get("charged_items_count")) or 0,
            "checkouts_limit": _count(reply.get("CB")),
        }

    async def item_info(self, barcode: str) -> tuple[dict[str, Any] | None, str | None]:
        """Item information (17/18) in Koha's REST shape, and who has it; (None, None) for an item the ACS
        does not know. An ACS that does not say who has a charged item (Koha's does not) is asked through
        `rest=` where given, else the borrower is `BORROWER_NOT_GIVEN`; one waiting on the hold shelf without
        the hold's patron (CY) is held for `BORROWER_NOT_GIVEN` too."""
        reply = await self._ask(codec.item_information(self.institution, barcode, datetime.now(UTC)), "18")
        title = reply.get("AJ")
        if not title:
            return None, None
        waiting = reply.fixed.get("circulation_status") == codec.CIRC_ON_HOLD_SHELF
        for_whom = reply.get("CY") or (BORROWER_NOT_GIVEN if waiting else None)
        item = {"external_id": barcode, "title": title,
                "holds": [{"cardnumber": for_whom, "status": "W" if waiting else None}] if for_whom else []}
        if reply.fixed.get("circulation_status") not in _CHARGED:
            return item, None
        holder = reply.get("AA")
        if not holder and self.rest is not None:
            holder = await self.rest.current_loan(barcode)
        return item, holder or BORROWER_NOT_GIVEN

    async def fetch_after(self, kind: SnapshotKind, after: int, per_page: int) -> list[dict[str, Any]]:
        if self.rest is None:
            raise SnapshotUnsupported(
                "SIP2 cannot list patrons, items or checkouts; give a REST base with ?rest="
            )
        return await self.rest.fetch_after(kind, after, per_page)

    async def fetch_page(self, kind: SnapshotKind, page: int, per_page: int) -> list[dict[str, Any]]:
        if self.rest is None:
            raise SnapshotUnsupported(
                "SIP2 cannot list patrons, items or checkouts; give a REST base with ?rest="
            )
        return await self.rest.fetch_page(kind, page, per_page)

    async def fetch_rules(self) -> tuple[Any, Any]:
        if self.rest is None:
            raise SnapshotUnsupported("SIP2 cannot give loan rules; give a REST base with ?rest=")
        return await self.rest.fetch_rules()


def _amount(text: str | None) -> float:
    try:
        value = float((text or "0").strip().replace(",", "."))  # a decimal comma, as some ACSs write it
    except ValueError:
        return 0.0
    return value if abs(value) < 1e9 else 0.0


def _count(text: str | None) -> int | None:
    digits = (text or "").strip()
    return int(digits) if digits and digits.isascii() and digits.isdigit() else None


def no_patron_message(item: str) -> str:
    return f"renewal of item {item} names no patron and the ILS cannot tell who has it: renew it at the ILS"


def _outcome(request: Message, reply: Message) -> Outcome:
    expected = {"11": "12", "09": "10", "29": "30", "37": "38"}[request.code]
    if reply.code != expected:
        return Outcome("transient", f"expected a {expected} answer, got {reply.name}", "protocol")
    ok = reply.fixed.get("payment_accepted" if reply.code == "38" else "ok") in ("1", "Y")
    screen = " ".join(m for m in reply.get_all("AF") if m)
    if ok:
        return Outcome("applied", screen or "ok")
    return Outcome("refused", screen or f"the ACS refused the {request.name} (ok=0)", "refused")
