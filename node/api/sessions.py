"""Signed-in staff: sessions that expire, their CSRF tokens, and slowing sign-in down after bad passwords.

Pure bookkeeping with an injectable clock (no I/O), so expiry and throttling are testable without waiting.
Sessions live in memory: a restarted node signs everyone out, which a desk notices at its next scan.
Tokens are stored only as their SHA-256, so a memory dump or a timing side channel on the table
does not hand out live tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

IDLE_S = 4 * 3600.0  # a desk left alone for a shift's break signs out
ABSOLUTE_S = 12 * 3600.0  # nobody stays signed in across two working days
FREE_FAILURES = 5  # bad passwords in a row before sign-in slows down
FIRST_DELAY_S = 2.0
MAX_DELAY_S = 300.0
MAX_SESSIONS = 10_000


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


@dataclass
class Session:
    name: str
    role: str
    csrf: str
    created: float
    last_seen: float


@dataclass
class Issued:
    token: str
    session: Session


class SessionStore:
    def __init__(self, *, idle_s: float = IDLE_S, absolute_s: float = ABSOLUTE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s, self.absolute_s, self.clock = idle_s, absolute_s, clock
        self._sessions: dict[bytes, Session] = {}

    def create(self, name: str, role: str) -> Issued:
        self._sweep()
        token = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(name, role, secrets.token_urlsafe(32), now, now)
        self._sessions[_digest(token)] = session
        return Issued(token, session)

    def get(self, token: str | None) -> Session | None:
        """The live session for a token (touching it), or None if unknown or expired."""
        if not token or len(token) > 200:
            return None
        key = _digest(token)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = self.clock()
        if now - session.last_seen > self.idle_s or now - session.created > self.absolute_s:
            del self._sessions[key]
            return None
        session.last_seen = now
        return session

    def end(self, token: str | None) -> bool:
        return bool(token) and self._sessions.pop(_digest(token), None) is not None  # type: ignore[arg-type]

    def end_user(self, name: str) -> int:
        """Signs a user out everywhere on this desk (their password or role changed)."""
        doomed = [k for k, s in self._sessions.items() if s.name == name]
        for k in doomed:
            del self._sessions[k]
        return len(doomed)

    def __len__(self) -> int:
        return len(self._sessions)

    def _sweep(self) -> None:
        now = self.clock()
        dead = [k for k, s in self._sessions.items()
                if now - s.last_seen > self.idle_s or now - s.created > self.absolute_s]
        for k in dead:
            del self._sessions[k]
        while len(self._sessions) >= MAX_SESSIONS:  # oldest first: dicts keep insertion order
            del self._sessions[next(iter(self._sessions))]


def csrf_matches(session: Session, presented: str | None) -> bool:
    if presented is None:
        return False
    return hmac.compare_digest(session.csrf.encode(), presented.encode("utf-8", "replace"))


@dataclass
class _Record:
    failures: int = 0
    not_before: float = 0.0


@dataclass
class SignInThrottle:
    """Counts bad passwords in a row per key (a user name, a client address). From the fifth on, each
    further attempt must wait: 2 s, then doubling up to 5 minutes. A right password clears the count."""

    clock: Callable[[], float] = time.monotonic
    free: int = FREE_FAILURES
    first_delay: float = FIRST_DELAY_S
    max_delay: float = MAX_DELAY_S
    _records: dict[str, _Record] = field(default_factory=dict)

    def wait_s(self, keys: list[str]) -> float:
        """Seconds until an attempt under these keys may be checked (0: now)."""
        now = self.clock()
        return max([0.0] + [r.not_before - now for k in keys if (r := self._records.get(k)) is not None])

    def failed(self, keys: list[str]) -> float:
        """Records a bad password; returns the wait now imposed on the next attempt."""
        now = self.clock()
        longest = 0.0
        for k in keys:
            r = self._records.setdefault(k, _Record())
            r.failures += 1
            if r.failures >= self.free:
                delay = min(self.max_delay, self.first_delay * 2 ** (r.failures - self.free))
                r.not_before = now + delay
                longest = max(longest, delay)
        if len(self._records) > 100_000:  # bounded memory against a flood of made-up names
            for k in [k for k, r in self._records.items() if r.not_before <= now][:50_000]:
                del self._records[k]
        return longest

    def succeeded(self, keys: list[str]) -> None:
        for k in keys:
            self._records.pop(k, None)

    def failures(self, key: str) -> int:
        r = self._records.get(key)
        return r.failures if r else 0
