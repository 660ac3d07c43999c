"""Scan -> durable acknowledgement at one desk (budget: p99 <= 10 ms), over HTTP to a real desk process.

Baseline, same run: one bare SQLite insert committed with fsync (WAL, synchronous=FULL) on the same disk,
the floor any durable acknowledgement stands on.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import aiohttp
from _common import DeskProcess, pct, summary

SCANS = 2000


def fsync_baseline(directory: Path, n: int = 500) -> list[float]:
    conn = sqlite3.connect(directory / "baseline.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (x BLOB)")
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t VALUES (?)", (b"x" * 300,))
        conn.execute("COMMIT")
        out.append((time.perf_counter() - t0) * 1000)
    conn.close()
    return out


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base = fsync_baseline(root)
        desk = DeskProcess(root / "desk", "Front desk", [])
        await desk.start()
        try:
            latencies = []
            async with aiohttp.ClientSession() as session:
                for i in range(SCANS):
                    kind = i % 2
                    url = f"{desk.url}/api/v1/{'checkouts' if kind == 0 else 'checkins'}"
                    body = {"patron": f"2300{i % 97:05d}", "item": f"3900{i // 2:06d}"} if kind == 0 else \
                        {"item": f"3900{i // 2:06d}"}
                    t0 = time.perf_counter()
                    async with session.post(url, json=body, headers=desk.headers) as r:
                        await r.read()
                        assert r.status == 201, await r.text()
                    latencies.append((time.perf_counter() - t0) * 1000)
        finally:
            await desk.stop()
    print(summary("fsync baseline (bare SQLite commit)", base))
    print(summary(f"scan -> durable ack over HTTP ({SCANS} scans)", latencies))
    print(f"ratio p50 scan/baseline: {pct(latencies, 50) / pct(base, 50):.2f}x; "
          f"p99 budget 10 ms: {'met' if pct(latencies, 99) <= 10 else 'MISSED'}")


if __name__ == "__main__":
    asyncio.run(main())
