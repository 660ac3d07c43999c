"""Test helper (not a test file): runs the ILS simulator as a real subprocess on loopback.

`running_simulator(tmp_path)` is an async context manager for one test; `start_simulator(tmp_path)` plus
`Sim.stop()` serve module-scoped fixtures that share one simulator between tests. Either way the process
is always stopped at the end (SIGTERM, then SIGKILL if it lingers).

Seeded facts come from the simulator's own REST API. The `take_*` helpers hand out a patron or an item
at most once per simulator, so tests sharing one simulator never trip over each other's loans.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


@dataclass
class Sim:
    http_url: str
    sip2_host: str
    sip2_port: int
    user: str
    password: str
    data_dir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _taken: set[str] = field(default_factory=set, repr=False)

    # --- addresses --------------------------------------------------------------------------------------

    @property
    def koha_url(self) -> str:
        return "koha+" + self.http_url

    @property
    def sip2_url(self) -> str:
        return f"sip2://{self.sip2_host}:{self.sip2_port}"

    @property
    def basic_auth(self) -> str:
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    # --- control ----------------------------------------------------------------------------------------

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.request(method, self.http_url + path, **kwargs) as r:
                r.raise_for_status()
                return await r.json()

    async def set_state(self, **state: Any) -> dict[str, Any]:
        return await self._json("POST", "/sim/state", json=state)

    async def state(self) -> dict[str, Any]:
        return await self._json("GET", "/sim/state")

    async def reset(self) -> None:
        await self.set_state(online=True, latency_ms=0, failure_rate=0.0)

    async def restrict(self, cardnumber: str, until: str | None, comment: str | None) -> None:
        """Staff at the ILS restrict a patron (until a date, or for good)."""
        await self._json("POST", f"/sim/patrons/{cardnumber}/restriction", json={"until": until, "comment": comment})

    async def ledger(self, after: int = 0) -> list[dict[str, Any]]:
        return await self._json("GET", f"/sim/ledger?after={after}")

    async def loans(self) -> list[dict[str, Any]]:
        return await self._json("GET", "/sim/loans")

    async def pending(self) -> list[dict[str, Any]]:
        return await self._json("GET", "/sim/pending")

    async def loan_of(self, barcode: str) -> dict[str, Any] | None:
        return next((loan for loan in await self.loans() if loan["barcode"] == barcode), None)

    async def rest(self, path: str, **params: str) -> Any:
        return await self._json("GET", path, params=params, headers={"Authorization": self.basic_auth})

    # --- seeded facts -----------------------------------------------------------------------------------

    async def all_patrons(self) -> list[dict[str, Any]]:
        return await self.rest("/api/v1/patrons", _per_page="-1")

    async def all_items(self) -> list[dict[str, Any]]:
        return await self.rest("/api/v1/items", _per_page="-1")

    async def all_checkouts(self) -> list[dict[str, Any]]:
        return await self.rest("/api/v1/checkouts", _per_page="-1")

    def _take(
        self, rows: list[dict[str, Any]], key: str, accept: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        for row in rows:
            if row[key] not in self._taken and accept(row):
                self._taken.add(row[key])
                return row
        raise LookupError("the seeded library has no more rows of that kind")

    async def take_patron(self) -> dict[str, Any]:
        """A patron in good standing: not restricted, card valid, no fines, under the loan limit."""
        today = datetime.now(UTC).date().isoformat()
        return self._take(
            await self.all_patrons(),
            "cardnumber",
            lambda p: (
                not p["restricted"]
                and p["expiry_date"] > today
                and p["account_balance"] == 0
                and p["checkouts_count"] < p["checkouts_limit"] - 2
                and p["category_id"] == "ADULT"
            ),
        )

    async def take_blocked_patron(self) -> dict[str, Any]:
        return self._take(await self.all_patrons(), "cardnumber", lambda p: p["restricted"])

    async def take_expired_patron(self) -> dict[str, Any]:
        today = datetime.now(UTC).date().isoformat()
        return self._take(
            await self.all_patrons(), "cardnumber", lambda p: p["expiry_date"] < today and not p["restricted"]
        )

    async def take_patron_with_fines(self) -> dict[str, Any]:
        return self._take(await self.all_patrons(), "cardnumber", lambda p: p["account_balance"] > 1)

    async def take_available_item(self, item_type: str = "BOOK") -> dict[str, Any]:
        """An item on the shelf: not on loan, nobody waiting for it, lendable."""
        loaned = {c["external_id"] for c in await self.all_checkouts()}
        return self._take(
            await self.all_items(),
            "external_id",
            lambda i: (
                i["external_id"] not in loaned
                and not i["holds"]
                and not i["not_for_loan_status"]
                and i["item_type_id"] == item_type
            ),
        )

    async def take_item_on_loan(self) -> tuple[dict[str, Any], str]:
        """An item already on loan in the seeded library, and the borrower's cardnumber."""
        checkouts = {c["external_id"]: c for c in await self.all_checkouts()}
        item = self._take(
            await self.all_items(),
            "external_id",
            lambda i: i["external_id"] in checkouts and not i["holds"] and i["item_type_id"] == "BOOK",
        )
        return item, checkouts[item["external_id"]]["cardnumber"]

    async def take_item_with_hold(self, on_loan: bool = True) -> tuple[dict[str, Any], str | None]:
        """An item someone waits for, and its borrower's cardnumber (None when it is on the shelf)."""
        checkouts = {c["external_id"]: c for c in await self.all_checkouts()}
        item = self._take(
            await self.all_items(),
            "external_id",
            lambda i: bool(i["holds"]) and (i["external_id"] in checkouts) == on_loan,
        )
        loan = checkouts.get(item["external_id"])
        return item, loan["cardnumber"] if loan else None

    # --- process ----------------------------------------------------------------------------------------

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def _read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"the simulator printed no ready line within {timeout} s")
            if not selector.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the simulator exited before it was ready (code {proc.wait()})")
            buffer += chunk
    line = json.loads(buffer.split(b"\n", 1)[0])
    if not line.get("ready"):
        raise RuntimeError(f"unexpected first line from the simulator: {line}")
    return line


def start_simulator(
    tmp_path: Path,
    *,
    patrons: int = 200,
    items: int = 500,
    seed: int = 1,
    password: str | None = None,
    extra_args: tuple[str, ...] = (),
) -> Sim:
    """Start the simulator and wait (bounded) for its ready line."""
    data_dir = Path(tmp_path) / "ils-sim"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if password is not None:
        env["CIRCMESH_SIM_PASSWORD"] = password
    args = [
        sys.executable,
        "-m",
        "node.ilsbridge.sim",
        "--data",
        str(data_dir),
        "--http-port",
        "0",
        "--sip-port",
        "0",
        "--patrons",
        str(patrons),
        "--items",
        str(items),
        "--seed",
        str(seed),
        *extra_args,
    ]
    with open(data_dir / "sim.log", "ab") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, cwd=REPO_ROOT, env=env)
    try:
        ready = _read_ready_line(proc, READY_TIMEOUT_S)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    host, port = ready["sip2"].rsplit(":", 1)
    return Sim(
        http_url="http://" + ready["http"],
        sip2_host=host,
        sip2_port=int(port),
        user=ready["user"],
        password=ready["password"],
        data_dir=data_dir,
        process=proc,
    )


@contextlib.asynccontextmanager
async def running_simulator(tmp_path: Path, **options: Any) -> AsyncIterator[Sim]:
    """start_simulator (same options) as an async context: stopped at the end."""
    sim = await asyncio.to_thread(start_simulator, tmp_path, **options)
    try:
        yield sim
    finally:
        await asyncio.to_thread(sim.stop)


async def wait_until(predicate: Callable[[], Any], within: float = 10.0, interval: float = 0.02) -> Any:
    """Poll an (async or plain) predicate until it returns something truthy; bounded."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)
