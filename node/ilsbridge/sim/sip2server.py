"""The simulator's SIP2 ACS over TCP, speaking the codec in `node.ilsbridge.sip2`.

A connection must log in (93) before anything but a login; anything else first closes it. Checkout (11),
checkin (09) and renew (29) honour the no-block flag: with `Y` the ACS takes the transaction as already
done by the SC offline (no patron or item block is checked, an item on loan elsewhere is returned first)
and records it at its transaction date (checkin: its return date), with the due date from the loan rules
counted from that date unless the SC sent a no-block due date. Without `Y` the ACS checks blocks and acts
now. Fee paid (37), patron information (63), item information (17) and SC status (99) are answered too.

Extensions, documented because real ACSs differ: the item information response (18) carries `AA`, the
cardnumber of the patron who has the item now (the standard has no field for it; the bridge uses it to
reconcile), and `CY`, the cardnumber of the first patron waiting for it (as Koha does); with `standard`
(`--sip2-standard-item-info`) the 18 carries neither, like most ACSs. The checkin response carries `AA`
(who had it) and, when someone waits for the item, alert `Y` with `CV01` and `CY`.

A bad checksum gets 96 (please resend), as does any other malformed message; after five malformed
messages in a row the connection is closed. 97 repeats the last response. A crash in one connection never
touches the others. Every checkout, checkin, renew and fee paid, refused or not, goes to the ledger with
protocol "sip2".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass
from datetime import datetime

from node.ilsbridge import sip2
from node.ilsbridge.sim.control import SimState
from node.ilsbridge.sim.koha import StaffAccount
from node.ilsbridge.sim.library import Library, now
from node.ilsbridge.sim.rules import as_utc, format_timestamp, parse_timestamp
from node.ilsbridge.sip2 import Message, Sip2Error, format_date, yn

log = logging.getLogger(__name__)

MAX_FRAME = 64 * 1024
MAX_BAD_MESSAGES = 5
SUPPORTED_MESSAGES = "NYYNYYYYNYYNNNYN"  # BX, in the order the standard lists the messages
CURRENCY = "USD"


@dataclass
class _Connection:
    logged_in: bool = False
    bad_messages: int = 0
    last_reply: bytes | None = None


class Sip2Server:
    def __init__(
        self, library: Library, staff: StaffAccount, state: SimState, institution: str = "MAIN",
        *, standard: bool = False,
    ) -> None:
        self.library = library
        self.standard = standard  # item information as the standard has it: no borrower (AA), no hold (CY)
        self.staff = staff
        self.state = state
        self.institution = institution
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        state.on_change.append(self._state_changed)

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._serve_client, sock=sock, limit=MAX_FRAME)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _state_changed(self, state: SimState) -> None:
        if not state.online:
            self._drop_all()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.close()

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = _Connection()
        try:
            while self.state.online:
                try:
                    frame = await reader.readuntil(sip2.TERMINATOR)
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    log.warning("SIP2 frame longer than %d bytes: closing the connection", MAX_FRAME)
                    return
                frame = frame.lstrip(b"\n")
                if not frame.strip(b"\r\n"):
                    continue
                await self.state.delay()
                if not self.state.online or self.state.draw_failure():
                    return
                reply = self.handle(conn, frame)
                if reply is None:
                    return
                writer.write(reply)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("SIP2 connection failed")
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def handle(self, conn: _Connection, frame: bytes) -> bytes | None:
        """The bytes to answer `frame` with, or None to close the connection."""
        try:
            msg = sip2.decode(frame)
        except Sip2Error as exc:
            return self._bad(conn, f"undecodable message: {exc}")
        if msg.code == "97":
            return conn.last_reply or sip2.encode(sip2.request_resend())
        if not conn.logged_in and msg.code != "93":
            log.info("SIP2 %s before login: closing the connection", msg.name)
            return None
        handler = self._handlers().get(msg.code)
        if handler is None:
            return self._bad(conn, f"not a request the ACS answers: {msg.code}")
        try:
            response = handler(conn, msg)
            response.seq = msg.seq
            data = sip2.encode(response)
        except Sip2Error as exc:
            self.library.rollback()
            return self._bad(conn, f"bad {msg.name}: {exc}")
        except Exception:
            self.library.rollback()
            raise
        conn.bad_messages = 0
        conn.last_reply = data
        return data

    def _bad(self, conn: _Connection, why: str) -> bytes | None:
        conn.bad_messages += 1
        log.info("SIP2: %s", why)
        if conn.bad_messages >= MAX_BAD_MESSAGES:
            return None
        return sip2.encode(sip2.request_resend())

    def _handlers(self) -> dict:
        return {
            "93": self._login,
            "99": self._sc_status,
            "11": self._checkout,
            "09": self._checkin,
            "29": self._renew,
            "37": self._fee_paid,
            "63": self._patron_information,
            "17": self._item_information,
        }

    # --- helpers --------------------------------------------------------------------------------------------

    @staticmethod
    def _date(msg: Message, name: str) -> datetime | None:
        value = sip2.parse_date(msg.fixed[name])
        return None if value is None else as_utc(value)

    def _record(
        self,
        action: str,
        at: datetime,
        card: str | None,
        barcode: str | None,
        outcome: str,
        amount: str | None = None,
    ) -> None:
        self.library.record("sip2", action, format_timestamp(at), card, barcode, amount, outcome)

    # --- messages -------------------------------------------------------------------------------------

    def _login(self, conn: _Connection, msg: Message) -> Message:
        conn.logged_in = self.staff.check(msg.get("CN", "") or "", msg.get("CO", "") or "")
        return Message("94", {"ok": "1" if conn.logged_in else "0"})

    def _sc_status(self, conn: _Connection, msg: Message) -> Message:
        fixed = {
            "online_status": "Y",
            "checkin_ok": "Y",
            "checkout_ok": "Y",
            "acs_renewal_policy": "Y",
            "status_update_ok": "N",
            "offline_ok": "Y",
            "timeout_period": "030",
            "retries_allowed": "003",
            "date_time_sync": format_date(now()),
            "protocol_version": "2.00",
        }
        fields = [("AO", self.institution), ("AM", self.library.library_name), ("BX", SUPPORTED_MESSAGES)]
        return Message("98", fixed, fields)

    def _checkout(self, conn: _Connection, msg: Message) -> Message:
        card, barcode = msg.get("AA", "") or "", msg.get("AB", "") or ""
        no_block = msg.fixed["no_block"] == "Y"
        when, nb_due = self._date(msg, "transaction_date"), self._date(msg, "nb_due_date")
        at = when if (no_block and when) else now()

        def answer(
            ok: bool, screen: str, renewed: bool = False, due: datetime | None = None, title: str = ""
        ) -> Message:
            fixed = {
                "ok": "1" if ok else "0",
                "renewal_ok": yn(renewed),
                "magnetic_media": "U",
                "desensitize": yn(ok),
                "transaction_date": format_date(now()),
            }
            fields = [
                ("AO", self.institution),
                ("AA", card),
                ("AB", barcode),
                ("AJ", title),
                ("AH", format_date(due) if due else ""),
            ]
            if screen:
                fields.append(("AF", screen))
            return Message("12", fixed, fields)

        patron = self.library.patron(card)
        item = self.library.item(barcode)

        def refused(refusal: str) -> Message:
            self._record("checkout", at, card, barcode, refusal)
            return answer(False, refusal, title=item["title"] if item is not None else "")

        if patron is None:
            return refused("Patron not found.")
        if item is None:
            return refused("Item not found.")
        if not no_block:
            blocks = self.library.patron_blocks(patron, at) + self.library.item_blocks(item, patron)
            if blocks:
                return refused(blocks[0])
        result = self.library.issue(patron, item, at, nb_due if no_block else None)
        self._record("checkout", at, card, barcode, "Success.")
        return answer(True, "Renewed." if result.renewed else "", result.renewed, result.due, item["title"])

    def _checkin(self, conn: _Connection, msg: Message) -> Message:
        barcode = msg.get("AB", "") or ""
        no_block = msg.fixed["no_block"] == "Y"
        when = self._date(msg, "return_date") or self._date(msg, "transaction_date")
        at = when if (no_block and when) else now()
        item = self.library.item(barcode)
        fixed = {
            "ok": "0",
            "resensitize": "N",
            "magnetic_media": "U",
            "alert": "N",
            "transaction_date": format_date(now()),
        }
        fields = [("AO", self.institution), ("AB", barcode)]
        if item is None:
            self._record("checkin", at, None, barcode, "Item not found.")
            return Message("10", fixed, [*fields, ("AQ", ""), ("AF", "Item not found.")])
        fields += [
            ("AQ", item["location"]),
            ("AJ", item["title"]),
            ("CK", self.library.media_types.get(item["item_type_id"], "000")),
        ]
        loan = self.library.return_item(item, at)
        if loan is None:
            self._record("checkin", at, None, barcode, "Item not checked out.")
            return Message("10", fixed, [*fields, ("AF", "Item not checked out.")])
        self._record("checkin", at, loan["cardnumber"], barcode, "Success.")
        fixed.update(ok="1", resensitize="Y")
        fields.append(("AA", loan["cardnumber"]))
        holds = self.library.holds_on(item["item_id"])
        if holds:
            fixed.update(alert="Y", resensitize="N")
            fields += [
                ("CV", "01"),
                ("CY", holds[0]["cardnumber"]),
                ("AF", "Item on hold: put it on the holds shelf."),
            ]
        return Message("10", fixed, fields)

    def _renew(self, conn: _Connection, msg: Message) -> Message:
        card, barcode = msg.get("AA", "") or "", msg.get("AB", "") or ""
        no_block = msg.fixed["no_block"] == "Y"
        when, nb_due = self._date(msg, "transaction_date"), self._date(msg, "nb_due_date")
        at = when if (no_block and when) else now()

        def answer(ok: bool, screen: str, due: datetime | None = None, title: str = "") -> Message:
            fixed = {
                "ok": "1" if ok else "0",
                "renewal_ok": yn(ok),
                "magnetic_media": "U",
                "desensitize": yn(ok),
                "transaction_date": format_date(now()),
            }
            fields = [
                ("AO", self.institution),
                ("AA", card),
                ("AB", barcode),
                ("AJ", title),
                ("AH", format_date(due) if due else ""),
            ]
            if screen:
                fields.append(("AF", screen))
            return Message("30", fixed, fields)

        patron, item = self.library.patron(card), self.library.item(barcode)
        loan = self.library.open_loan(item["item_id"]) if item is not None else None

        def refused(refusal: str) -> Message:
            self._record("renew", at, card, barcode, refusal)
            return answer(False, refusal, title=item["title"] if item is not None else "")

        if patron is None:
            return refused("Patron not found.")
        if item is None:
            return refused("Item not found.")
        if loan is None or loan["patron_id"] != patron["patron_id"]:
            return refused("Item not checked out to this patron.")
        if not no_block:
            rule = self.library.rule(patron, item)
            holds = self.library.holds_on(item["item_id"])
            if loan["renewals_count"] >= rule.renewals_allowed:
                return refused("Renewal limit reached.")
            if holds and holds[0]["patron_id"] != patron["patron_id"]:
                return refused("Item is on hold for another patron.")
            blocks = self.library.patron_blocks(patron, at)
            refusal = next((b for b in blocks if "loan limit" not in b), "")
            if refusal:
                return refused(refusal)
        due = self.library.renew(loan, patron, item, at, nb_due if no_block else None)
        self._record("renew", at, card, barcode, "Success.")
        return answer(True, "", due, item["title"])

    def _fee_paid(self, conn: _Connection, msg: Message) -> Message:
        card = msg.get("AA", "") or ""
        at = self._date(msg, "transaction_date") or now()
        raw = msg.get("BV", "") or ""
        fields = [("AO", self.institution), ("AA", card)]
        if msg.get("BK"):
            fields.append(("BK", msg.get("BK") or ""))
        patron = self.library.patron(card)
        refusal = ""
        try:
            amount = sip2.parse_amount(raw)
            if amount <= 0 or amount > 1_000_000:
                refusal = "Invalid amount."
        except Sip2Error:
            amount, refusal = None, "Invalid amount."
        if patron is None:
            refusal = "Patron not found."
        fixed = {"payment_accepted": "N", "transaction_date": format_date(now())}
        if refusal or amount is None or patron is None:
            self._record("payment", at, card, None, refusal, raw)
            return Message("38", fixed, [*fields, ("AF", refusal)])
        balance = self.library.pay(patron, int((amount * 100).to_integral_value()), at, "sip2")
        self._record("payment", at, card, None, "Success.", str(amount))
        fixed["payment_accepted"] = "Y"
        return Message("38", fixed, [*fields, ("AF", f"Payment accepted. Balance {balance / 100:.2f}.")])

    def _patron_information(self, conn: _Connection, msg: Message) -> Message:
        card = msg.get("AA", "") or ""
        summary = msg.fixed["summary"]
        patron = self.library.patron(card)
        counts = {
            "hold_items_count": 0,
            "overdue_items_count": 0,
            "charged_items_count": 0,
            "fine_items_count": 0,
            "recall_items_count": 0,
            "unavailable_holds_count": 0,
        }
        fixed = {
            "patron_status": " " * 14,
            "language": "000",
            "transaction_date": format_date(now()),
            **{k: f"{v:04d}" for k, v in counts.items()},
        }
        fields = [("AO", self.institution), ("AA", card)]
        if patron is None:
            return Message("64", fixed, [*fields, ("AE", ""), ("BL", "N"), ("AF", "Patron not found.")])
        at = now()
        loans = self.library.loans_of(patron["patron_id"])
        holds = self.library.holds_of(patron["patron_id"])
        overdue = [r for r in loans if parse_timestamp(r["due_date"]) < at]
        blocks = self.library.patron_blocks(patron, at)
        category = self.library.categories.get(patron["category_id"], {})
        status = [" "] * 14
        if blocks:
            status[0] = status[1] = status[3] = "Y"
        if patron["lost_card"]:
            status[4] = "Y"
        if len(loans) >= category.get("loan_limit", 20):
            status[5] = "Y"
        if patron["fines_cents"] > category.get("fine_limit_cents", 1000):
            status[10] = "Y"
        fixed.update(
            patron_status="".join(status),
            hold_items_count=f"{len([h for h in holds if h['status'] == 'W']):04d}",
            overdue_items_count=f"{len(overdue):04d}",
            charged_items_count=f"{len(loans):04d}",
            fine_items_count=f"{1 if patron['fines_cents'] > 0 else 0:04d}",
            unavailable_holds_count=f"{len([h for h in holds if h['status'] != 'W']):04d}",
        )
        fields += [
            ("AE", f"{patron['firstname']} {patron['surname']}"),
            ("BL", "Y"),
            ("CQ", "N"),
            ("BH", CURRENCY),
            ("BV", f"{patron['fines_cents'] / 100:.2f}"),
            ("CC", f"{category.get('fine_limit_cents', 1000) / 100:.2f}"),
            ("CB", f"{category.get('loan_limit', 20):04d}"),
            ("PA", patron["expiry_date"].replace("-", "")),
            ("PC", patron["category_id"]),
        ]
        if summary[0:1] == "Y":
            fields += [("AS", h["barcode"]) for h in holds if h["status"] == "W"]
        if summary[1:2] == "Y":
            fields += [("AT", r["barcode"]) for r in overdue]
        if summary[2:3] == "Y":
            fields += [("AU", r["barcode"]) for r in loans]
        if patron["email"]:
            fields.append(("BE", patron["email"]))
        if patron["phone"]:
            fields.append(("BF", patron["phone"]))
        fields += [("AF", b) for b in blocks]
        return Message("64", fixed, fields)

    def _item_information(self, conn: _Connection, msg: Message) -> Message:
        barcode = msg.get("AB", "") or ""
        item = self.library.item(barcode)
        fixed = {
            "circulation_status": sip2.CIRC_OTHER,
            "security_marker": "00",
            "fee_type": "01",
            "transaction_date": format_date(now()),
        }
        if item is None:
            return Message("18", fixed, [("AB", barcode), ("AJ", ""), ("AF", "Item not found.")])
        loan = self.library.open_loan(item["item_id"])
        holds = self.library.holds_on(item["item_id"])
        if loan is not None:
            fixed["circulation_status"] = sip2.CIRC_CHARGED
        elif holds and holds[0]["status"] == "W":
            fixed["circulation_status"] = sip2.CIRC_ON_HOLD_SHELF
        else:
            fixed["circulation_status"] = sip2.CIRC_AVAILABLE
        fixed["security_marker"] = "02"
        fields = [("CF", f"{len(holds)}")]
        if loan is not None:
            fields.append(("AH", format_date(parse_timestamp(loan["due_date"]))))
        fields += [
            ("AB", barcode),
            ("AJ", item["title"]),
            ("BG", self.institution),
            ("CK", self.library.media_types.get(item["item_type_id"], "000")),
            ("AQ", item["location"]),
            ("AP", item["location"]),
        ]
        if loan is not None and not self.standard:
            fields.append(("AA", loan["cardnumber"]))
        if holds and not self.standard:
            fields.append(("CY", holds[0]["cardnumber"]))
        return Message("18", fixed, fields)
