"""Scan at one desk -> arrival on every other desk's /live WebSocket, with 3 and 8 desks (budget: p99 <= 50 ms).

Real desk processes in a full mesh on loopback. Each sample is one checkout at a rotating desk; its
latency is the time until the last other desk's live feed delivers it. Baseline, same run: a WebSocket
round trip to one desk's live feed path (an HTTP GET of /status), the floor of any cross-process hop here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import DeskProcess, get_json, pct, summary, wait_for

SAMPLES = 300


async def run(n: int, root: Path) -> None:
    desks = [DeskProcess(root / f"d{i}", f"Desk {i}", []) for i in range(n)]
    for i, d in enumerate(desks):
        d.peers = [desks[j].peer_address for j in range(i + 1, n)]
    await asyncio.gather(*(d.start() for d in desks))
    try:
        async with aiohttp.ClientSession() as session:
            for d in desks:
                await wait_for(lambda d=d: _linked(session, d, n - 1), within=60, what="mesh")
            feeds = [await session.ws_connect(f"{d.url}/api/v1/live", headers=d.headers) for d in desks]
            arrivals: dict[str, dict[int, float]] = {}
            done = {}

            async def reader(i: int) -> None:
                async for msg in feeds[i]:
                    ev = json.loads(msg.data)["event"]
                    arrivals.setdefault(ev["id"], {})[i] = time.perf_counter()
                    fut = done.get(ev["id"])
                    if fut and len(arrivals[ev["id"]]) >= n and not fut.done():
                        fut.set_result(None)

            readers = [asyncio.create_task(reader(i)) for i in range(n)]
            base, worst, each = [], [], []
            for s in range(SAMPLES):
                t0 = time.perf_counter()
                await get_json(session, f"{desks[s % n].url}/api/v1/status")
                base.append((time.perf_counter() - t0) * 1000)
                src = s % n
                t0 = time.perf_counter()
                async with session.post(f"{desks[src].url}/api/v1/checkouts", headers=desks[src].headers,
                                        json={"patron": f"P{s}", "item": f"I{s}"}) as r:
                    event_id = (await r.json())["event"]["id"]
                fut = done.setdefault(event_id, asyncio.get_running_loop().create_future())
                if len(arrivals.get(event_id, {})) >= n:
                    fut.set_result(None)
                async with asyncio.timeout(10):
                    await fut
                times = {i: t for i, t in arrivals[event_id].items() if i != src}
                each.extend((t - t0) * 1000 for t in times.values())
                worst.append((max(times.values()) - t0) * 1000)
            for r in readers:
                r.cancel()
        print(summary(f"{n} desks: baseline HTTP GET /status round trip", base))
        print(summary(f"{n} desks: scan -> last other desk's live feed", worst))
        print(summary(f"{n} desks: scan -> each other desk's live feed", each))
        print(f"{n} desks: p99 budget 50 ms: {'met' if pct(worst, 99) <= 50 else 'MISSED'}; "
              f"ratio p50 live/baseline: {pct(worst, 50) / pct(base, 50):.1f}x")
    finally:
        await asyncio.gather(*(d.stop() for d in desks))


async def _linked(session: aiohttp.ClientSession, d: DeskProcess, k: int) -> bool:
    status = await get_json(session, f"{d.url}/api/v1/status")
    return sum(p["connected"] for p in status["peers"]) >= k


async def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [3, 8]
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            await run(n, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
