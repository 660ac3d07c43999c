"""Upload 10,000 events to the ILS simulator answering each request in 20 ms: pipelined (16 in flight,
nothing overtaking on the same item or patron) against one-at-a-time replay, in the same run; then pipelined
again with the simulator failing 30 % of requests (a 500 before it applies anything, the probes included).
Each run gets its own simulator seeded identically; the final ILS loans must be the same, and the ILS's
ledger must hold every event exactly once.
Budgets: pipelined >= 8x faster; with 30 % failures, >= 60 % of the failure-free rate (issue 11).
Usage: bench_upload.py [EVENTS] [LATENCY_MS] [FAILURE_RATE]
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from node.eventlog import EventLog
from node.ilsbridge.adapters.base import Credentials, make_adapter
from node.ilsbridge.bridge import Bridge, BridgeConfig
from node.trust.identity import load_or_create_identity
from tests.ilssim import start_simulator

EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
LATENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 20
FAILURES = float(sys.argv[3]) if len(sys.argv) > 3 else 0.3


def open_log(directory: Path) -> EventLog:
    log = EventLog(load_or_create_identity(directory), directory, "Front desk")
    log.open()
    return log


async def write_events(directory: Path, patrons: list[str], items: list[str]) -> None:
    rng = random.Random(11)
    log = open_log(directory)
    await log.start()
    out: dict[str, str] = {}
    shelf = list(items)
    plan = []
    while len(plan) < EVENTS:
        if out and (rng.random() < 0.4 or not shelf):
            item = rng.choice(list(out))
            del out[item]
            plan.append(("checkin", {"item": item}))
        else:
            item = shelf.pop()
            out[item] = rng.choice(patrons)
            plan.append(("checkout", {"patron": out[item], "item": item}))
    for start in range(0, len(plan), 200):
        await asyncio.gather(*(log.append(kind, body, "desk") for kind, body in plan[start:start + 200]))
    await log.store.commit([])
    log.close()


async def upload(directory: Path, sim, concurrency: int, failures: float = 0.0) -> tuple[float, dict[str, str]]:
    await sim.set_state(latency_ms=LATENCY, failure_rate=failures)
    log = open_log(directory)
    await log.start()
    adapter = make_adapter(sim.koha_url, Credentials(sim.user, sim.password))
    bridge = Bridge(log, adapter, sim.koha_url, BridgeConfig(concurrency=concurrency))
    finished = asyncio.Event()
    log.subscribe(lambda arrival: finished.set() if len(log.state.outcomes) >= EVENTS else None)
    t0 = time.perf_counter()
    await bridge.start()
    async with asyncio.timeout(900):
        await finished.wait()
    elapsed = time.perf_counter() - t0
    await bridge.stop()
    refused = sum(1 for o in log.state.outcomes.values() if o.status != "applied")
    await log.store.commit([])
    log.close()
    await sim.set_state(latency_ms=0, failure_rate=0.0)
    loans = {row["barcode"]: row["cardnumber"] for row in await sim.loans()}
    ledger = await sim.ledger()
    assert len(ledger) == EVENTS, f"ILS saw {len(ledger)} operations for {EVENTS} events"
    print(f"  concurrency {concurrency:>2}, {failures:.0%} failing: {elapsed:7.2f} s for {EVENTS} events "
          f"({EVENTS / elapsed:6.1f}/s), refused {refused}, transient answers {bridge.counters['transient']}")
    return elapsed, loans


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sims = [start_simulator(root / f"ils{i}", patrons=4000, items=EVENTS + 2000, seed=5) for i in range(3)]
        try:
            patrons = [p["cardnumber"] for p in await sims[0].all_patrons() if not p["restricted"]][:3000]
            lent = {c["external_id"] for c in await sims[0].all_checkouts()}
            items = [i["external_id"] for i in await sims[0].all_items() if i["external_id"] not in lent]
            await write_events(root / "log-a", patrons, items)
            shutil.copytree(root / "log-a", root / "log-b")
            shutil.copytree(root / "log-a", root / "log-c")
            print(f"upload of {EVENTS} events, ILS answering in {LATENCY} ms:")
            serial, loans_serial = await upload(root / "log-a", sims[0], 1)
            piped, loans_piped = await upload(root / "log-b", sims[1], 16)
            failing, loans_failing = await upload(root / "log-c", sims[2], 16, FAILURES)
        finally:
            for sim in sims:
                sim.stop()
    same = loans_serial == loans_piped
    print(f"same final ILS loans: {same} ({len(loans_piped)} loans)")
    print(f"ratio one-at-a-time / pipelined: {serial / piped:.1f}x (budget >= 8x: "
          f"{'met' if serial / piped >= 8 and same else 'MISSED'})")
    kept = piped / failing
    print(f"with {FAILURES:.0%} failing: same final ILS loans: {loans_failing == loans_piped}; rate {kept:.0%} of the "
          f"failure-free rate (budget >= 60 %: {'met' if kept >= 0.6 and loans_failing == loans_piped else 'MISSED'})")


if __name__ == "__main__":
    asyncio.run(main())
