"""The admin desk's side of enrolment: one-time codes, pending join requests, and issuing certificates.

Two ways in, both ending with the same authenticated answer (see `enrolment`):

- code first: the admin creates a code, reads it out; the joiner types it and sends a request MACed
  with it (`admit_with_code`);
- request first: the joiner makes up a code, shows it on its own screen and sends a request MACed
  with it; the admin sees the request listed and approves it by typing that code (`approve_pending`).

A request names no code (naming it would hand out what the MAC protects), so the admin finds the code
by trying the MAC under each code it knows; a request that matches none is a wrong attempt, counted
against every open code, which burns after `max_attempts`. Pure: no I/O, time from the given clock.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.trust.ca import CertificateAuthority, issue_node_certificate
from node.trust.certs import ROLES, Role, TrustError, cert_pem
from node.trust.enrolment import (
    EnrolmentAnswer,
    EnrolmentError,
    JoinRequest,
    derive_code_key,
    format_code,
    holds_key,
    knows_code,
    make_answer,
    new_code,
    normalise_code,
)

CODE_TTL = 15 * 60.0
MAX_ATTEMPTS = 5
# Used, expired and burnt codes are remembered this long, so a late try gets "used" or "expired"
# rather than a puzzling "wrong code".
REMEMBER = 60 * 60.0
MAX_PENDING = 32


@dataclass
class _Code:
    code: str
    key: bytes
    role: Role
    expires: float
    attempts: int = 0
    state: str = "open"  # open | used | burnt
    used_by: tuple[bytes, bytes] | None = None  # (public key, nonce) of the request that used it
    answer: EnrolmentAnswer | None = None


@dataclass(frozen=True)
class IssuedCode:
    code: str  # formatted for the screen, ABCD-EFGH
    role: Role
    expires_at: float
    attempts_left: int


@dataclass
class _Pending:
    request_id: str
    request: JoinRequest
    remote: str
    received: float
    expires: float
    attempts: int = 0
    state: str = "pending"  # pending | approved | rejected | burnt
    answer: EnrolmentAnswer | None = None


@dataclass(frozen=True)
class PendingView:
    """What the admin UI lists; the joiner's screen shows the code the admin must type to approve."""

    request_id: str
    node_id: str
    desk_name: str
    remote: str
    received_at: float
    expires_at: float
    attempts_left: int


@dataclass
class AdmissionStore:
    clock: Callable[[], float] = time.time
    code_ttl: float = CODE_TTL
    max_attempts: int = MAX_ATTEMPTS
    max_pending: int = MAX_PENDING
    _codes: list[_Code] = field(default_factory=list, init=False, repr=False)
    _pending: dict[str, _Pending] = field(default_factory=dict, init=False, repr=False)

    # --- code first -------------------------------------------------------------------------------

    def create_code(self, role: Role = "desk") -> IssuedCode:
        code = new_code()
        return self.add_code(code, derive_code_key(code), role)

    def add_code(self, code: str, code_key: bytes, role: Role = "desk") -> IssuedCode:
        """For callers that derive the key off the event loop (scrypt is slow on purpose)."""
        if role not in ROLES:
            raise EnrolmentError("malformed", f"unknown role {role!r}")
        self._forget_old()
        entry = _Code(normalise_code(code), code_key, role, self.clock() + self.code_ttl)
        self._codes.append(entry)
        return self._view(entry)

    def open_codes(self) -> list[IssuedCode]:
        now = self.clock()
        return [self._view(c) for c in self._codes if c.state == "open" and now <= c.expires]

    def withdraw_code(self, code: str) -> None:
        wanted = normalise_code(code)
        for c in self._codes:
            if c.code == wanted and c.state == "open":
                c.state = "burnt"

    def _view(self, c: _Code) -> IssuedCode:
        return IssuedCode(format_code(c.code), c.role, c.expires, max(0, self.max_attempts - c.attempts))

    def match_code(self, request: JoinRequest) -> _Code:
        """The open code this request proves knowledge of; raises and counts the attempt otherwise.

        Changes nothing but attempt counters: the caller issues the certificate, then `settle`s.
        """
        if not holds_key(request):
            raise EnrolmentError("malformed", "the request is not signed by the key it names")
        now = self.clock()
        self._forget_old()
        entry = next((c for c in self._codes if knows_code(request, c.key)), None)
        if entry is None:
            return self._strike(now)
        if entry.state == "used":
            if entry.used_by == (request.public_key, request.nonce):
                return entry  # the same request again (the answer was lost): answer it again
            raise EnrolmentError("used", "this code has already been used; ask the admin for a new one")
        if entry.state == "burnt":
            raise EnrolmentError("burnt", "this code was withdrawn after too many wrong attempts")
        if now > entry.expires:
            raise EnrolmentError("expired", "this code has expired; ask the admin for a new one")
        return entry

    def _strike(self, now: float) -> _Code:
        open_codes = [c for c in self._codes if c.state == "open" and now <= c.expires]
        for c in open_codes:
            c.attempts += 1
            if c.attempts >= self.max_attempts:
                c.state = "burnt"
        left = min((self.max_attempts - c.attempts for c in open_codes), default=0)
        if open_codes and left <= 0:
            raise EnrolmentError("wrong_code", "wrong code; too many wrong attempts, the code is withdrawn")
        raise EnrolmentError("wrong_code", f"wrong code ({max(left, 0)} attempts left)")

    def settle(self, entry: _Code, request: JoinRequest, answer: EnrolmentAnswer) -> None:
        entry.state = "used"
        entry.used_by = (request.public_key, request.nonce)
        entry.answer = answer

    def _forget_old(self) -> None:
        now = self.clock()
        self._codes = [c for c in self._codes if now <= c.expires + REMEMBER]
        for rid in [r for r, p in self._pending.items() if now > p.expires + REMEMBER]:
            del self._pending[rid]

    # --- request first ----------------------------------------------------------------------------

    def submit(self, request: JoinRequest, remote: str = "") -> str:
        """Files a join request for the admin to approve; returns the id the joiner polls with."""
        if not holds_key(request):
            raise EnrolmentError("malformed", "the request is not signed by the key it names")
        self._forget_old()
        now = self.clock()
        for p in self._pending.values():
            if p.request == request:
                return p.request_id
        waiting = [p for p in self._pending.values() if p.state == "pending" and now <= p.expires]
        if len(waiting) >= self.max_pending:
            raise EnrolmentError("busy", "too many join requests are waiting; try again later")
        request_id = secrets.token_hex(16)
        self._pending[request_id] = _Pending(request_id, request, remote[:100], now, now + self.code_ttl)
        return request_id

    def pending(self) -> list[PendingView]:
        now = self.clock()
        return [
            PendingView(
                p.request_id, p.request.node_id, p.request.desk_name, p.remote, p.received, p.expires,
                self.max_attempts - p.attempts,
            )
            for p in self._pending.values()
            if p.state == "pending" and now <= p.expires
        ]

    def find_pending(self, request_id: str) -> _Pending:
        p = self._pending.get(request_id) if isinstance(request_id, str) else None
        if p is None:
            raise EnrolmentError("unknown_request", "no such join request")
        return p

    def match_pending(self, request_id: str, code_key: bytes) -> _Pending:
        """The pending request if the admin typed the joiner's code; counts a wrong one."""
        p = self.find_pending(request_id)
        if p.state == "burnt":
            raise EnrolmentError("burnt", "this request was refused after too many wrong codes")
        if p.state != "pending":
            raise EnrolmentError("used", f"this request is already {p.state}")
        if self.clock() > p.expires:
            raise EnrolmentError("expired", "this join request has expired; the desk must ask again")
        if not knows_code(p.request, code_key):
            p.attempts += 1
            if p.attempts >= self.max_attempts:
                p.state = "burnt"
                raise EnrolmentError("wrong_code", "wrong code; too many wrong attempts, request refused")
            raise EnrolmentError("wrong_code", f"wrong code ({self.max_attempts - p.attempts} attempts left)")
        return p

    def settle_pending(self, p: _Pending, answer: EnrolmentAnswer) -> None:
        p.state = "approved"
        p.answer = answer

    def reject(self, request_id: str) -> None:
        p = self.find_pending(request_id)
        if p.state == "pending":
            p.state = "rejected"

    def status(self, request_id: str) -> tuple[str, EnrolmentAnswer | None]:
        """For the joiner's poll: pending | approved (with the answer) | rejected | burnt | expired."""
        p = self.find_pending(request_id)
        if p.state == "pending" and self.clock() > p.expires:
            return "expired", None
        return p.state, p.answer


def _answer(ca: CertificateAuthority, request: JoinRequest, code_key: bytes, role: Role) -> EnrolmentAnswer:
    public = Ed25519PublicKey.from_public_bytes(request.public_key)
    try:
        cert = issue_node_certificate(ca, public, request.node_id, request.desk_name, role)
    except TrustError as exc:
        raise EnrolmentError("malformed", str(exc)) from None
    return make_answer(code_key, request, cert_pem(cert), cert_pem(ca.cert), ca.cluster_id)


def admit_with_code(store: AdmissionStore, ca: CertificateAuthority, request: JoinRequest) -> EnrolmentAnswer:
    """Code first: the joiner's request carries a MAC under a code the admin created."""
    entry = store.match_code(request)
    if entry.answer is not None:
        return entry.answer
    answer = _answer(ca, request, entry.key, entry.role)
    store.settle(entry, request, answer)
    return answer


def approve_pending(
    store: AdmissionStore, ca: CertificateAuthority, request_id: str, code_key: bytes, role: Role = "desk"
) -> PendingView:
    """Request first: the admin typed the code shown on the joining desk's screen."""
    if role not in ROLES:
        raise EnrolmentError("malformed", f"unknown role {role!r}")
    p = store.match_pending(request_id, code_key)
    store.settle_pending(p, _answer(ca, p.request, code_key, role))
    return PendingView(
        p.request_id, p.request.node_id, p.request.desk_name, p.remote, p.received, p.expires,
        store.max_attempts - p.attempts,
    )
