"""8 desks each write 5,000 events while cut off from each other; then the network heals.
Measures the time until every desk holds all 40,000 events (budget: <= 2 s) and each desk's RSS.

Baseline, same run: one desk alone taking the same 5,000 scans (the write cost the heal does not include).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import aiohttp
import psutil
from _common import DeskProcess, Relay, get_json

DESKS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
EVENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 5000


async def scan(session: aiohttp.ClientSession, desk: DeskProcess, n: int) -> None:
    for i in range(n):
        body = {"patron": f"P{desk.desk[-1]}{i % 50}", "item": f"{desk.desk}-{i}"}
        async with session.post(f"{desk.url}/api/v1/checkouts", json=body, headers=desk.headers) as r:
            assert r.status == 201, await r.text()


async def total(session: aiohttp.ClientSession, desk: DeskProcess) -> int:
    page = await get_json(session, f"{desk.url}/api/v1/events?after=0&limit=1")
    return int(page["total"])


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        desks = [DeskProcess(root / f"d{i}", f"Desk{i}", []) for i in range(DESKS)]
        relays: dict[tuple[int, int], Relay] = {}
        for i, j in combinations(range(DESKS), 2):
            relay = Relay(desks[j].peer_port)
            await relay.start()
            relay.cut()
            relays[(i, j)] = relay
            desks[i].peers.append(relay.address)
        await asyncio.gather(*(d.start() for d in desks))
        try:
            async with aiohttp.ClientSession() as session:
                t0 = time.perf_counter()
                await scan(session, desks[0], EVENTS)
                alone = time.perf_counter() - t0
                t0 = time.perf_counter()
                await asyncio.gather(*(scan(session, d, EVENTS) for d in desks[1:]))
                written = time.perf_counter() - t0
                expected = DESKS * EVENTS
                print(f"baseline: one desk took {EVENTS} scans in {alone:.2f} s; "
                      f"the other {DESKS - 1} desks wrote theirs concurrently in {written:.2f} s")
                procs = [psutil.Process(d.proc.pid) for d in desks if d.proc]
                cpu_before = [sum(p.cpu_times()[:2]) for p in procs]
                t0 = time.perf_counter()
                for relay in relays.values():
                    relay.heal()
                reached: dict[int, float] = {}
                deadline = t0 + 300
                while len(reached) < DESKS and time.perf_counter() < deadline:
                    for i, d in enumerate(desks):
                        if i not in reached and await total(session, d) >= expected:
                            reached[i] = time.perf_counter() - t0
                    await asyncio.sleep(0.02)
                if len(reached) < DESKS:
                    print(f"NOT converged after 300 s: {len(reached)}/{DESKS} desks complete")
                else:
                    worst = max(reached.values())
                    print(f"convergence of {DESKS} desks x {EVENTS} events = {expected}: {worst:.2f} s "
                          f"(first desk complete {min(reached.values()):.2f} s); budget 2 s: "
                          f"{'met' if worst <= 2 else 'MISSED'}; ratio heal/one-desk-writes: {worst / alone:.2f}x")
                cpu = [sum(p.cpu_times()[:2]) - before for p, before in zip(procs, cpu_before, strict=True)]
                print(f"CPU seconds per desk from the heal to the end: min {min(cpu):.2f}, max {max(cpu):.2f}, "
                      f"total {sum(cpu):.2f} (2 cores)")
                rss = [p.memory_info().rss / 2**20 for p in procs]
                print(f"RSS per desk after convergence: min {min(rss):.0f} MiB, max {max(rss):.0f} MiB")
                statuses = [await get_json(session, f"{d.url}/api/v1/status") for d in desks]
                received = [sum(p["events_received"] for p in st["peers"]) for st in statuses]
                with sqlite3.connect(f"file:{desks[0].data / 'circmesh.sqlite'}?mode=ro", uri=True) as db:
                    sizes = dict(db.execute("SELECT node, SUM(LENGTH(raw)) FROM journal GROUP BY node").fetchall())
                own = {st["node"]["id"]: sizes.get(st["node"]["id"], 0) for st in statuses}
                unique = min(sum(sizes.values()) - mine for mine in own.values())  # what each desk lacked
                traffic = [sum(p["sync_bytes_in"] + p["run_bytes_in"] for p in st["peers"]) / 2**20 for st in statuses]
                runs = [sum(p["run_events_in"] for p in st["peers"]) for st in statuses]
                print(f"events received per desk (unique needed: {expected - EVENTS}): min {min(received)}, "
                      f"max {max(received)}; of them in journal runs: {min(runs)}–{max(runs)}")
                print(f"traffic in per desk (Automerge sync messages and runs): {min(traffic):.1f}–{max(traffic):.1f} "
                      f"MiB for {unique / 2**20:.1f} MiB of events it lacked: {max(traffic) * 2**20 / unique:.2f}x "
                      f"at most (budget <= 1.5x)")
                refused = [st["refusals"] for st in statuses]
                print("refusals:", [{k: v for k, v in r.items() if not k.startswith("link_")} for r in refused])
        finally:
            await asyncio.gather(*(d.stop() for d in desks))
            for relay in relays.values():
                await relay.close()


if __name__ == "__main__":
    asyncio.run(main())
