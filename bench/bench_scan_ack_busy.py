"""Scan -> durable acknowledgement while three linked desks scan at once, on a fresh log and on a log that
already holds HISTORY events (issue 9 budget: p99 <= 10 ms, not growing with the log).

Each desk scans RATE scans a second for SECONDS; every scan at one desk is a peer's concurrent event at the
others, often sorting before what they have folded. Baseline, same run: the same load on the fresh log.
Then the same load for LONG seconds, printed in five windows: the scans fill the replicated document, which
the desks seal (node/sealer.py; no desk here is the bridge, so the fallback seals); the last window's p99
must not grow past the first's. Before desks sealed without a bridge, the document grew without bound and
the fifth window's p99 was 105 ms (6,000 events in it) against 12.7 ms for the first.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from _common import DeskProcess, get_json, pct, summary, wait_for

from node.ilsbridge import formats
from node.ilsbridge.operation import Operation

HISTORY = int(sys.argv[1]) if len(sys.argv) > 1 else 22_000
RATE = 20  # scans a second at each desk: 60 a second in all
SECONDS = 20
LONG = 100


def history_file(n: int) -> bytes:
    start = datetime.now(UTC) - timedelta(days=2)
    ops = []
    for i in range(n):
        at = start + timedelta(seconds=i)
        if i % 2 == 0:
            ops.append(Operation("checkout", at, item=f"H{i // 2:07d}", patron=f"23{i % 997:08d}",
                                 due=at + timedelta(days=21)))
        else:
            ops.append(Operation("checkin", at, item=f"H{i // 2:07d}"))
    data, _skipped = formats.export_report("koc", ops, tz=UTC)
    return data


async def scan_load(session: aiohttp.ClientSession, desks: list[DeskProcess], tag: str,
                    seconds: int = SECONDS) -> list[float]:
    latencies: list[float] = []

    async def one_desk(d: int, desk: DeskProcess) -> None:
        for i in range(RATE * seconds):
            t0 = time.perf_counter()
            body = {"patron": f"23{d}{i % 89:06d}", "item": f"{tag}{d}-{i:06d}"}
            async with session.post(f"{desk.url}/api/v1/checkouts", json=body, headers=desk.headers) as r:
                await r.read()
                assert r.status == 201, await r.text()
            latencies.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(max(0.0, 1 / RATE - (time.perf_counter() - t0)))

    await asyncio.gather(*(one_desk(d, desk) for d, desk in enumerate(desks)))
    return latencies


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = ["A", "B", "C"]
        desks = [DeskProcess(root / n, n, []) for n in names]
        for i, desk in enumerate(desks):
            desk.peers = [d.peer_address for d in desks[:i]]
        for desk in desks:
            await desk.start()
        try:
            async with aiohttp.ClientSession() as session:
                async def linked() -> bool:
                    for d in desks:
                        status = await get_json(session, f"{d.url}/api/v1/status")
                        if sum(p["connected"] for p in status["peers"]) < 2:
                            return False
                    return True

                await wait_for(linked, within=60, what="three desks linked")
                fresh = await scan_load(session, desks, "F")
                data = history_file(HISTORY)
                async with session.post(f"{desks[0].url}/api/v1/imports?format=koc", data=data,
                                        headers=desks[0].headers) as r:
                    assert r.status == 201, await r.text()

                async def caught_up() -> bool:
                    counts = [(await get_json(session, f"{d.url}/api/v1/status"))["node"]["events"] for d in desks]
                    return len(set(counts)) == 1 and counts[0] >= HISTORY

                await wait_for(caught_up, within=300, what="history on every desk")
                busy = await scan_load(session, desks, "B")
                long = await scan_load(session, desks, "L", LONG)
                epochs = [(await get_json(session, f"{d.url}/api/v1/status"))["epoch"] for d in desks]
        finally:
            for desk in desks:
                await desk.stop()
    print(summary(f"fresh log, 3 desks x {RATE}/s", fresh))
    print(summary(f"log of {HISTORY} events, 3 desks x {RATE}/s", busy))
    print(f"ratio p99 busy/fresh: {pct(busy, 99) / pct(fresh, 99):.2f}x; "
          f"p99 budget 10 ms: {'met' if pct(busy, 99) <= 10 else 'MISSED'}")
    n = len(long) // 5
    windows = [long[k * n:(k + 1) * n] for k in range(5)]
    for k, window in enumerate(windows):
        print(summary(f"{LONG} s at the same load, window {k + 1} of 5", window))
    print(f"ratio p99 last/first window: {pct(windows[-1], 99) / pct(windows[0], 99):.2f}x; epochs at the end "
          f"{[e['number'] for e in epochs]}, events in the document {[e['document_events'] for e in epochs]}")


if __name__ == "__main__":
    asyncio.run(main())
