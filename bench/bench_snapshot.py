"""The ILS snapshot at scale (issue 10): a refresh from the simulator, then barcode look-ups and name searches.

The simulator (its own process) is seeded with PATRONS patrons and ITEMS items (default 1,000,000 and
2,000,000, the issue's budget; smaller sizes as arguments). In this process, as on the bridge desk: a
`Refresher` pulls every page over Koha's REST API (the real adapter, HTTP) into a new snapshot file and
switches to it; printed: seconds, CPU seconds of this process, the file's size, and this process's peak RSS
(VmHWM) before and during the refresh. Then LOOKUPS random patron and item barcodes and SEARCHES name
searches (a surname from the seeded list, with and without its accents, a three-letter prefix), each timed
alone: p50/p99 against the budgets (look-up <= 2 ms, name search <= 50 ms). Baseline, same run: the same
look-ups and searches on a snapshot of 10,000 patrons built from the first rows.

    python bench/bench_snapshot.py [PATRONS [ITEMS]]
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

import _common  # noqa: F401  (puts the project on sys.path)
from _common import pct

from node.ilsbridge.adapters.base import Credentials, make_adapter
from node.ilsbridge.sim.seed import LAST_NAMES
from node.snapshot import store
from node.snapshot.refresh import Refresher
from node.snapshot.store import SnapshotStore
from tests.ilssim import start_simulator

ARGS = [int(a) for a in sys.argv[1:] if a.isdigit()]
PATRONS = ARGS[0] if ARGS else 1_000_000
ITEMS = ARGS[1] if len(ARGS) > 1 else 2 * PATRONS
LOOKUPS = 20_000
SEARCHES = 2_000


def vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def plain(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def timed(fn, args: list) -> list[float]:
    out = []
    for a in args:
        t = time.perf_counter()
        fn(a)
        out.append((time.perf_counter() - t) * 1000)
    return out


def measure(snapshot: SnapshotStore, patrons: list[str], items: list[str],
            rng: random.Random) -> dict[str, list[float]]:
    words = [w for s in LAST_NAMES for w in (s, plain(s).lower(), s[:3])]
    return {
        "patron look-up": timed(snapshot.patron, [rng.choice(patrons) for _ in range(LOOKUPS)]),
        "item look-up": timed(snapshot.item, [rng.choice(items) for _ in range(LOOKUPS)]),
        "name search (50 hits at most)": timed(snapshot.search, [rng.choice(words) for _ in range(SEARCHES)]),
    }


async def main() -> None:
    rng = random.Random(3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        sim = start_simulator(root / "ils", patrons=PATRONS, items=ITEMS, seed=3)
        print(f"simulator seeded with {PATRONS:,} patrons and {ITEMS:,} items in {time.perf_counter() - t:.1f} s")
        try:
            adapter = make_adapter(sim.koha_url, Credentials(sim.user, sim.password))
            snapshot = SnapshotStore(root / "snapshot.sqlite")
            refresher = Refresher(adapter, snapshot)
            rss_before = vm("VmRSS")
            resource.getrusage(resource.RUSAGE_SELF)
            cpu, wall = time.process_time(), time.perf_counter()
            ok = await refresher.refresh()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            await adapter.close()
        finally:
            sim.stop()
        assert ok, refresher.last_error
        manifest = snapshot.manifest
        assert manifest is not None and (manifest.patrons, manifest.items) == (PATRONS, ITEMS), manifest
        size = snapshot.path.stat().st_size / 1e6
        print(f"refresh: {manifest.patrons:,} patrons and {manifest.items:,} items in {wall:.1f} s "
              f"({cpu:.1f} CPU s in this process; the simulator renders the pages in its own), file {size:.0f} MB")
        print(f"RSS of this process: {rss_before:.0f} MB before, peak {vm('VmHWM'):.0f} MB (the refresh holds a page "
              f"at a time), {vm('VmRSS'):.0f} MB after")

        conn = snapshot._conn
        assert conn is not None
        patrons = [r[0] for r in conn.execute("SELECT barcode FROM patrons")]
        items = [r[0] for r in conn.execute("SELECT barcode FROM items")]
        small = SnapshotStore(root / "small.sqlite")
        store.build(small.next_path(), [p for b in patrons[:10_000] if (p := snapshot.patron(b))],
                    [i for b in items[:20_000] if (i := snapshot.item(b))], 0, 1, "baseline")
        small.switch(small.next_path())
        big = measure(snapshot, patrons, items, rng)
        base = measure(small, patrons[:10_000], items[:20_000], rng)
        budgets = {"patron look-up": 2.0, "item look-up": 2.0, "name search (50 hits at most)": 50.0}
        print(f"{'':34}{'p50 ms':>9}{'p99 ms':>9}{'10k p99':>9}{'ratio':>7}  budget")
        for name, values in big.items():
            p99, b99 = pct(values, 99), pct(base[name], 99)
            verdict = "met" if p99 <= budgets[name] else "MISSED"
            print(f"{name:34}{pct(values, 50):9.3f}{p99:9.3f}{b99:9.3f}{p99 / b99:6.1f}x  p99 <= {budgets[name]:g} ms: "
                  f"{verdict}")


if __name__ == "__main__":
    asyncio.run(main())
