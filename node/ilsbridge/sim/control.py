"""The simulator's switchboard: online or not, how slow, how often it fails.

Failures are drawn from a generator seeded from the simulator's seed (and reseeded on every change of
state), so a test run with the same seed and the same sequence of requests fails the same requests.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_LATENCY_MS = 600_000


@dataclass
class SimState:
    seed: int
    online: bool = True
    latency_ms: int = 0
    failure_rate: float = 0.0
    changes: int = 0
    on_change: list[Callable[[SimState], None]] = field(default_factory=list)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.seed}:failures:0")

    def as_json(self) -> dict[str, Any]:
        return {"online": self.online, "latency_ms": self.latency_ms, "failure_rate": self.failure_rate}

    def update(self, payload: object) -> None:
        """Apply a `POST /sim/state` body; ValueError (nothing changed) if any part of it is invalid."""
        if not isinstance(payload, dict):
            raise ValueError("state must be a JSON object")
        unknown = set(payload) - {"online", "latency_ms", "failure_rate"}
        if unknown:
            raise ValueError(f"unknown state keys: {sorted(unknown)}")
        online, latency, rate = self.online, self.latency_ms, self.failure_rate
        if "online" in payload:
            if not isinstance(payload["online"], bool):
                raise ValueError("online must be true or false")
            online = payload["online"]
        if "latency_ms" in payload:
            value = payload["latency_ms"]
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LATENCY_MS:
                raise ValueError(f"latency_ms must be an integer from 0 to {MAX_LATENCY_MS}")
            latency = value
        if "failure_rate" in payload:
            value = payload["failure_rate"]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                raise ValueError("failure_rate must be a number from 0 to 1")
            rate = float(value)
        self.online, self.latency_ms, self.failure_rate = online, latency, rate
        self.changes += 1
        self._rng = random.Random(f"{self.seed}:failures:{self.changes}")
        for listener in list(self.on_change):
            listener(self)

    def draw_failure(self) -> bool:
        """Whether this request should fail (before anything is applied)."""
        return self.failure_rate > 0 and self._rng.random() < self.failure_rate

    async def delay(self) -> None:
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
