"""A desk with a long history (design §8): a journal of 300,000 events, 5,000 of them unsettled.

Budgets: RSS <= 150 MB, start to serving <= 2 s, scan -> durable acknowledgement p99 <= 10 ms measured across
at least one compaction; with 100,000 unsettled, RSS <= 300 MB. This prints figures, it passes or fails nothing.

The history is written by the node's own code: in this process an `EventLog` on a provisioned data directory
appends, one event per Automerge change as scans at a desk are, a library's traffic (loans, returns mostly of
its own loans, returns of loans older than the log, renewals, payments, in-house uses) and, for every scan but
the last M, the bridge's `applied` outcome with the body the bridge writes. EVENTS counts the journal: scans
and outcomes together, so (EVENTS + M) / 2 scans and (EVENTS - M) / 2 outcomes. One desk wrote all of it (it
was its own bridge, sealing the document every --seal-every events as the bridge does), so the events'
version vectors are empty; the build ends with a full save, as a desk that compacted just before it stopped.
Built once per size and per version of node/, kept in
$TMPDIR/circmesh-bench-history/ (--rebuild builds again).

Then, on a copy of it, a fresh `circmesh run` process, linked to a second desk process of the cluster that holds
the same journal (a desk alone puts its scans in no document, so it would never compact; this one does, as
desks at a library do; the second desk shares the 2 cores): seconds from spawning it to its ready line (it serves)
and to its first /api/v1/status (which folds the state); VmRSS and VmHWM (the peak) at the ready line, before
signing in (the password check, scrypt, takes 128 MB for a moment), and VmRSS after the first /status; SCANS
checkouts sent at RATE a second, each on its own schedule (open loop: a scan due while the desk is stalled
waits, and its wait counts), latency from the moment each was due to its 201; the compactions seen during
them (the `saved` row of its SQLite file changing), the first one due after 2,000 changes (node/eventlog.py
COMPACT_EVERY); VmHWM during the scans (the kernel's peak reset after start); CPU seconds of the desk
process. Baseline, same run: the same for a desk with an empty journal.

--breakdown: in a separate process, an EventLog opened on another copy, the state read once (what the first
/status does), and memory attributed to its parts: the Automerge document by the RSS it adds while loading
(native memory), every Python part by tracemalloc, each allocation charged by the line of the log's code that
made it. Also one doc.save() (what a compaction runs on the event loop): seconds, bytes, its RSS peak; and one
full garbage collection. tracemalloc makes the open slow: about 7 minutes for 300,000 events.

--snapshot N: both desks also hold an ILS snapshot of N patrons and 2N items (built once with the node's
own store, encrypted, cached beside the histories), so that every scan is checked against it, as at a
library: the issue-10 budget, RSS <= 400 MB with the snapshot and 100,000 unsettled.

    python bench/bench_history.py [--events N] [--unsettled M] [--quick] [--scans S] [--rate R] [--breakdown]
                                  [--snapshot N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import inspect
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from _common import pct

import node.eventlog as eventlog_module
from node.cluster import ClusterPolicy, load_membership
from node.crdt import event as event_module
from node.crdt import hlc as hlc_module
from node.crdt.event import DESK_KINDS
from node.crdt.order import OrderedLog
from node.crdt.state import copy_state
from node.eventlog import EventLog, wall_ms
from node.sealer import SEAL_EVERY
from node.storage import db
from node.trust.identity import load_or_create_identity
from tests.procs import TEST_PASSWORD, TEST_USER, add_user, free_port, sign_in
from tests.provision import provision

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "circmesh-bench-history"
BUILD_VERSION = 4  # bump when the history written changes
DESK = "History desk"
STAFF = "tester"
LOAN_MS = 21 * 86_400_000
ROUND = 500  # scans appended concurrently (group commit), then the bridge's outcomes for them
READY_WITHIN = 600.0  # seconds a desk may take to print its ready line
MB = 1024 * 1024
FRAMES = 12  # tracemalloc frames kept per allocation: enough to reach the log's code from any allocation in it


# ---------------------------------------------------------------- building the history

class Traffic:
    """Scans at a busy library's desks: lends; returns, most of loans the log holds (oldest first), some of
    loans made before it began; renewals; fines paid; in-house uses. Deterministic for a given seed."""

    PATRONS = 40_000
    ITEMS = 250_000

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.on_loan: dict[str, str] = {}
        self.loans: deque[str] = deque()
        self.older = 0  # items lent before the log began, each returned once

    def scan(self, now: int) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        r = rng.random()
        if r < 0.50 or not self.loans:
            item = f"39{rng.randrange(self.ITEMS):012d}"
            while item in self.on_loan:
                item = f"39{rng.randrange(self.ITEMS):012d}"
            patron = f"23{rng.randrange(self.PATRONS):012d}"
            self.on_loan[item] = patron
            self.loans.append(item)
            return "checkout", {"patron": patron, "item": item, "due": now + LOAN_MS}
        if r < 0.86:
            item = self.loans.popleft()
            del self.on_loan[item]
            return "checkin", {"item": item}
        if r < 0.90:
            self.older += 1
            return "checkin", {"item": f"37{self.older:012d}"}
        if r < 0.96:
            item = self.loans[-1]
            return "renew", {"item": item, "patron": self.on_loan[item], "due": now + 2 * LOAN_MS}
        if r < 0.98:
            return "payment", {"patron": f"23{rng.randrange(self.PATRONS):012d}",
                               "amount": f"{rng.randint(50, 2500) / 100:.2f}"}
        return "in_house_use", {"item": f"39{rng.randrange(self.ITEMS):012d}"}


def open_log(desk_dir: Path) -> EventLog:
    """The EventLog `circmesh run` would open on this data directory (same identity, certificate, policy)."""
    identity = load_or_create_identity(desk_dir)
    membership = load_membership(desk_dir, identity)
    return EventLog(identity, desk_dir, DESK, policy=ClusterPolicy(membership), cert=membership.node_cert_pem)


async def write_history(desk_dir: Path, events: int, unsettled: int) -> dict[str, Any]:
    scans = (events + unsettled + 1) // 2
    settled = events - scans
    # Written here in two minutes, as a desk writes it over months: no scan is "younger than 10 s" for the
    # fold's base to wait for (eventlog.SETTLE_MS), but the last few.
    eventlog_module.SETTLE_MS = 0
    log = open_log(desk_dir)
    log.open()
    log.link_up()  # linked to the library's other desks while it wrote: its scans went in the document too
    await log.start()
    traffic = Traffic(seed=20_000 + events + unsettled)
    written = answered = 0
    t0 = time.perf_counter()
    next_report = 0.0
    while written < scans:
        now = wall_ms()
        batch = [traffic.scan(now) for _ in range(min(ROUND, scans - written))]
        made = await asyncio.gather(*(log.append(kind, body, STAFF) for kind, body in batch))
        written += len(made)
        answer = made[:max(0, settled - answered)]
        if answer:  # what Bridge._record writes for an operation the ILS took
            await asyncio.gather(*(log.append("applied", {"event": e.id, "status": "applied", "message": "Success.",
                                                          "term": 1}, "bridge") for e in answer))
            answered += len(answer)
        if log.doc_events >= SEAL_EVERY:  # what the bridge desk's Sealer does (node/sealer.py)
            await log.seal("bridge")
        done = (written + answered) / events
        if done >= next_report:
            print(f"  building: {written + answered:,} of {events:,} events, {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)
            next_report += 0.1
    await log.store.commit(db.compaction(log.doc.save()))
    state = log.state
    every = list(log.in_order())
    pending = sum(1 for e in every if e.kind in DESK_KINDS and e.id not in state.outcomes)
    info = {"events": log.event_count, "scans": written, "applied": answered, "unsettled": pending,
            "open_loans": len(state.loans), "conflicts": len(state.conflicts),
            "in_memory": len(log.ordered_log), "kinds": dict(Counter(e.kind for e in every)),
            "build_seconds": round(time.perf_counter() - t0, 1)}
    log.close()
    return info


def node_version() -> str:
    """The git tree of node/ (the code that wrote the history), or 'unknown'."""
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD:node"], capture_output=True, text=True,
                             timeout=10, check=True)
        return out.stdout.strip()[:12]
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def built_history(events: int, unsettled: int, rebuild: bool) -> Path:
    """A directory holding the cluster's CA and desk/, a desk's data directory with that history."""
    where = CACHE / f"e{events}-u{unsettled}-b{BUILD_VERSION}-node{node_version()}"
    if (where / "build.json").exists() and not rebuild:
        return where
    CACHE.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=".building-", dir=CACHE))
    try:
        desk_dir = building / "desk"
        provision(desk_dir, DESK)
        add_user(desk_dir, TEST_USER, TEST_PASSWORD, "admin")
        print(f"building a history of {events:,} events, {unsettled:,} unsettled (cached for later runs)",
              file=sys.stderr, flush=True)
        info = asyncio.run(write_history(desk_dir, events, unsettled))
        (building / "build.json").write_text(json.dumps(info, indent=1))
        shutil.rmtree(where, ignore_errors=True)
        building.rename(where)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return where


def built_snapshot(patrons: int) -> Path:
    """A directory holding snapshot.sqlite and its snapshot.key: `patrons` patrons and twice as many items,
    with the barcodes the history's traffic scans (so its look-ups find them)."""
    from node.snapshot import store
    from node.snapshot.atrest import KEY_FILE
    from node.snapshot.rows import Item, Patron

    where = CACHE / f"snapshot-p{patrons}-b{BUILD_VERSION}-node{node_version()}"
    if (where / "snapshot.sqlite").exists():
        return where
    where.mkdir(parents=True, exist_ok=True)
    key = os.urandom(32)
    rng = random.Random(5)
    names = ["Dvořák", "Müller", "Novák", "Smith", "Nguyễn", "Svoboda", "Schmidt", "Horák"]
    t = time.perf_counter()
    store.build(where / "snapshot.new", key,
                (Patron(f"23{n:012d}", f"{rng.choice(names)}, Anna {n}", "ADULT", "MAIN", "2030-01-31",
                        "debarred" if n % 97 == 0 else None, rng.randrange(2000), rng.randrange(5), 20)
                 for n in range(patrons)),
                (Item(f"39{n:012d}", f"Title {n}", "Author", "800 X", "BOOK", "MAIN", n % 50 == 0, False, False, ())
                 for n in range(2 * patrons)), wall_ms(), 1, "bench")
    (where / "snapshot.new").rename(where / "snapshot.sqlite")
    (where / KEY_FILE).write_bytes(key)
    print(f"built a snapshot of {patrons:,} patrons in {time.perf_counter() - t:.0f} s (cached)", file=sys.stderr)
    return where


def give_snapshot(snapshot: Path, desk_dir: Path) -> None:
    for name in ("snapshot.sqlite", "snapshot.key"):
        shutil.copy2(snapshot / name, desk_dir / name)


# ---------------------------------------------------------------- a desk process and its figures

def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024 / MB
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak(pid: int) -> bool:
    """Sets VmHWM back to the current RSS, so that the next reading is the peak from now on."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def saved_upto(path: Path) -> int | None:
    """Where the desk's last full save of its document stands (changes up to this position are in it)."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        row = conn.execute("SELECT upto FROM saved WHERE id = 1").fetchone()
        return None if row is None else int(row[0])
    finally:
        conn.close()


@dataclass
class DeskFigures:
    name: str
    ready_s: float = 0.0
    status_s: float = 0.0
    rss_ready: float = 0.0
    hwm_ready: float = 0.0
    rss_start: float = 0.0
    cpu_start: float = 0.0
    journal_events: int = 0
    unsettled: int = 0
    latencies: list[float] = field(default_factory=list)
    by_scan: list[float | None] = field(default_factory=list)  # scan i was due i / rate seconds in
    failures: int = 0
    compactions: list[tuple[float, int]] = field(default_factory=list)  # (seconds into the scans, scans sent)
    rss_end: float = 0.0
    hwm_scans: float = 0.0
    hwm_reset: bool = False
    cpu_scans: float = 0.0


async def start_peer(data: Path, name: str) -> tuple[asyncio.subprocess.Process, int]:
    """Another desk of the cluster holding the same journal (a copy, under its own identity), for the measured
    desk to be linked to as desks at a library are: its scans then go in the document too, and compactions
    come. Returns the process and its peer port, once it serves."""
    peer_dir = data.parent / "peer"
    provision(peer_dir, "Peer desk")
    for suffix in ("", "-wal", "-shm"):
        if (data / f"circmesh.sqlite{suffix}").exists():
            shutil.copy2(data / f"circmesh.sqlite{suffix}", peer_dir / f"circmesh.sqlite{suffix}")
    peer_port = free_port()
    argv = [sys.executable, "-m", "node.cli", "run", "--data", str(peer_dir), "--desk", "Peer desk",
            "--port", str(free_port()), "--peer-port", str(peer_port), "--no-mdns", "--log-level", "WARNING"]
    with (data.parent / f"{name}-peer-stderr.log").open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=stderr, cwd=ROOT)
    assert proc.stdout is not None
    async with asyncio.timeout(READY_WITHIN * 3):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{name}: the peer desk exited with {await proc.wait()}")
            with contextlib.suppress(json.JSONDecodeError):
                if json.loads(line).get("ready"):
                    return proc, peer_port


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(15):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def measure(data: Path, name: str, scans: int, rate: float, tag: str) -> DeskFigures:
    figures = DeskFigures(name)
    peer, peer_port = await start_peer(data, name)
    try:
        return await measure_linked(data, name, scans, rate, tag, figures, peer_port)
    finally:
        await stop(peer)


async def measure_linked(data: Path, name: str, scans: int, rate: float, tag: str, figures: DeskFigures,
                         peer_port: int) -> DeskFigures:
    port = free_port()
    argv = [sys.executable, "-m", "node.cli", "run", "--data", str(data), "--desk", DESK, "--port", str(port),
            "--peer-port", str(free_port()), "--peer", f"127.0.0.1:{peer_port}", "--no-mdns",
            "--log-level", "WARNING"]
    url = f"http://127.0.0.1:{port}"
    with (data.parent / f"{name}-stderr.log").open("wb") as stderr:
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=stderr, cwd=ROOT)
    pid = proc.pid
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(READY_WITHIN):
            while True:
                line = await proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"{name}: the desk exited with {await proc.wait()} "
                                       f"(see {data.parent / f'{name}-stderr.log'})")
                with contextlib.suppress(json.JSONDecodeError):
                    if json.loads(line).get("ready"):
                        break
        figures.ready_s = time.perf_counter() - t0
        proc_figures = proc_status(pid)  # before signing in: the password check (scrypt) takes 128 MB for a moment
        figures.rss_ready, figures.hwm_ready = proc_figures["VmRSS"], proc_figures["VmHWM"]
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            token = await sign_in(session, url, TEST_USER, TEST_PASSWORD)
            headers = {"Authorization": f"Bearer {token}"}
            async with session.get(f"{url}/api/v1/status", headers=headers) as r:
                status = await r.json()
            figures.status_s = time.perf_counter() - t0
            figures.journal_events = status["node"]["events"]
            figures.unsettled = status["upload"]["pending"]
            figures.rss_start = proc_status(pid)["VmRSS"]
            figures.cpu_start = cpu_seconds(pid)
            figures.hwm_reset = reset_peak(pid)
            for _ in range(300):  # bounded: linked to its peer before the scans (they go in the document)
                async with session.get(f"{url}/api/v1/status", headers=headers) as r:
                    if any(p["connected"] for p in (await r.json())["peers"]):
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"{name}: never linked to its peer desk")
            await scan_load(session, url, headers, data / "circmesh.sqlite", scans, rate, tag, figures)
        proc_figures = proc_status(pid)
        figures.rss_end, figures.hwm_scans = proc_figures["VmRSS"], proc_figures["VmHWM"]
        figures.cpu_scans = cpu_seconds(pid) - figures.cpu_start
    finally:
        await stop(proc)
    return figures


async def scan_load(session: aiohttp.ClientSession, url: str, headers: dict[str, str], sqlite_path: Path,
                    scans: int, rate: float, tag: str, figures: DeskFigures) -> None:
    """`scans` checkouts of new items, scan i due at start + i / rate, whatever became of the ones before."""
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    latencies: list[float | None] = [None] * scans
    sent = 0

    async def one(i: int) -> None:
        nonlocal sent
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        sent += 1
        body = {"patron": f"24{(i * 7919) % 40_000:012d}", "item": f"{tag}{i:09d}"}
        try:
            async with session.post(f"{url}/api/v1/checkouts", json=body, headers=headers) as r:
                await r.read()
                if r.status == 201:
                    latencies[i] = (loop.time() - due) * 1000
        except (aiohttp.ClientError, TimeoutError):
            pass

    async def watch_compactions(done: asyncio.Event) -> None:
        last = await asyncio.to_thread(saved_upto, sqlite_path)
        while not done.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):
                    await done.wait()
            with contextlib.suppress(sqlite3.Error):
                now = await asyncio.to_thread(saved_upto, sqlite_path)
                if now != last:
                    figures.compactions.append((loop.time() - start, sent))
                    last = now

    done = asyncio.Event()
    watcher = asyncio.create_task(watch_compactions(done))
    await asyncio.gather(*(one(i) for i in range(scans)))
    await asyncio.sleep(1.0)  # a compaction's commit lands after the scan that triggered it
    done.set()
    await watcher
    figures.by_scan = latencies
    figures.latencies = [x for x in latencies if x is not None]
    figures.failures = scans - len(figures.latencies)


# ---------------------------------------------------------------- where the memory goes (own process)

def rss_mb() -> float:
    return proc_status(os.getpid())["VmRSS"]


def line_range(fn: Any) -> tuple[str, range]:
    lines, first = inspect.getsourcelines(fn)
    return inspect.getsourcefile(fn) or "", range(first, first + len(lines))


def integrate_lines() -> dict[int, str]:
    """Line numbers in EventLog._integrate -> the part of the log that line grows."""
    lines, first = inspect.getsourcelines(EventLog._integrate)
    parts = {"self._note(": "EventLog.raw", "self.ordered_log.add(": "ordered_log"}
    out = {}
    for offset, text in enumerate(lines):
        for needle, part in parts.items():
            if needle in text:
                out[first + offset] = part
    return out


class Attribution:
    """Charges each live allocation to a part of the log by the code that made it (tracemalloc tracebacks)."""

    def __init__(self) -> None:
        self.copy_state = line_range(copy_state)
        self.fold = line_range(OrderedLog.state.fget)
        self.integrate = line_range(EventLog._integrate)
        self.by_line = integrate_lines()
        self.decode = [line_range(event_module.decode_event),
                       (inspect.getsourcefile(hlc_module) or "", range(1, 10**6))]
        self.load = line_range(db.Store.load)

    @staticmethod
    def _in(frame: tracemalloc.Frame, where: tuple[str, range]) -> bool:
        return frame.filename == where[0] and frame.lineno in where[1]

    def part(self, traceback: tracemalloc.Traceback) -> str:
        frames = list(traceback)
        if any(self._in(f, self.copy_state) for f in frames):
            return "ordered_log checkpoints (copies of the state)"
        if any(self._in(f, self.fold) for f in frames):
            return "CirculationState (the folded state)"
        for f in frames:
            if self._in(f, self.integrate):
                return self.by_line.get(f.lineno, "other, while integrating")
        if any(self._in(f, where) for f in frames for where in self.decode):
            return "EventLog.events"
        if any(self._in(f, self.load) for f in frames):
            return "EventLog.raw"
        return "other Python"


def breakdown(data: Path) -> None:
    """Prints what an opened EventLog holds, per part and per event (run in a process of its own)."""
    log = open_log(data / "desk")
    loads: dict[str, float] = {}
    real_document = eventlog_module.LogDocument

    def measured_document(actor: bytes, saved: bytes | None = None) -> Any:
        before, t0 = rss_mb(), time.perf_counter()
        doc = real_document(actor, saved)
        loads.update(doc_mb=rss_mb() - before, doc_s=time.perf_counter() - t0, doc_bytes=len(saved or b""))
        return doc

    rss0 = rss_mb()
    tracemalloc.start(FRAMES)
    eventlog_module.LogDocument = measured_document
    try:
        t0 = time.perf_counter()
        log.open()
        open_s = time.perf_counter() - t0
    finally:
        eventlog_module.LogDocument = real_document
    # A compaction's cost, measured here while little freed memory lies around for it to reuse unseen.
    reset = reset_peak(os.getpid())
    before, t0 = rss_mb(), time.perf_counter()
    saved = log.doc.save()
    save_s = time.perf_counter() - t0
    save_peak = proc_status(os.getpid())["VmHWM"] - before if reset else None
    saved_mb = len(saved) / MB
    del saved
    t0 = time.perf_counter()
    state = log.state
    fold_s = time.perf_counter() - t0
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    attribution = Attribution()
    parts: Counter[str] = Counter()
    for stat in snapshot.statistics("traceback"):
        parts[attribution.part(stat.traceback)] += stat.size
    n = log.event_count
    raw_bytes = sum(len(r) for r in log.raw.values())
    ordered = log.ordered_log
    counts = {
        "EventLog.events": f"{len(ordered):,} events in memory",
        "EventLog.raw": f"{len(log.raw):,} signed events, {raw_bytes / max(1, len(log.raw)):.0f} B each as stored",
        "ordered_log": f"{len(ordered):,} keys (ids, stamps, by key, by id)",
        "ordered_log checkpoints (copies of the state)": f"{len(ordered._checkpoints)} checkpoints",
        "CirculationState (the folded state)": f"{len(state.loans):,} loans, {len(state.outcomes):,} outcomes, "
                                               f"{len(state.returned):,} returned",
    }
    print(f"memory breakdown of an EventLog opened on the same history ({n:,} events; open {open_s:.2f} s "
          f"under tracemalloc, then the first state read {fold_s:.2f} s):")
    print(f"  {'Automerge document (native, RSS added by its load)':52} {loads['doc_mb']:8.1f} MB "
          f"{loads['doc_mb'] * MB / n:7.0f} B/event  (loaded from a {loads['doc_bytes'] / MB:.1f} MB save "
          f"in {loads['doc_s']:.2f} s)")
    traced = 0
    for part, size in sorted(parts.items(), key=lambda kv: -kv[1]):
        traced += size
        print(f"  {part:52} {size / MB:8.1f} MB {size / n:7.0f} B/event  {counts.get(part, '')}")
    print(f"  {'all Python objects (tracemalloc)':52} {traced / MB:8.1f} MB {traced / n:7.0f} B/event")
    print(f"  process RSS {rss_mb():.0f} MB (from {rss0:.0f} MB before open; tracemalloc's own bookkeeping "
          f"inflates it here, not in the desk)")
    del snapshot
    t0 = time.perf_counter()
    collected = gc.collect()
    gc_s = time.perf_counter() - t0
    print(f"  one full garbage collection (the cycle collector walks every tracked object): {gc_s * 1000:.0f} ms, "
          f"{len(gc.get_objects()):,} objects tracked, {collected} collected")
    print(f"  one doc.save() (a compaction, on the desk's event loop): {save_s:.2f} s, {saved_mb:.1f} MB; "
          + (f"RSS peak {save_peak:+.0f} MB over the RSS before it" if save_peak is not None
             else "peak RSS not measurable here (/proc/self/clear_refs refused)"))
    log.close()


# ---------------------------------------------------------------- report

def ratio(value: float, base: float) -> str:
    return f"{value / base:8.1f}x" if base > 0 else "        "


def report(base: DeskFigures, hist: DeskFigures, scans: int, rate: float) -> None:
    rows: list[tuple[str, float, float, str]] = [
        ("start -> ready line, serving (s)", base.ready_s, hist.ready_s, "budget <= 2 s"),
        ("start -> first /status answered (s)", base.status_s, hist.status_s, ""),
        ("RSS at the ready line (MB)", base.rss_ready, hist.rss_ready, ""),
        ("VmHWM at the ready line (MB)", base.hwm_ready, hist.hwm_ready, "the peak while starting"),
        ("RSS after first /status (MB)", base.rss_start, hist.rss_start,
         "budget <= 150 MB (5k unsettled), <= 300 MB (100k)"),
        ("CPU to start, desk process (s)", base.cpu_start, hist.cpu_start, ""),
    ]
    for p in (50, 99):
        rows.append((f"scan -> ack p{p} (ms)", pct(base.latencies, p), pct(hist.latencies, p),
                     "budget <= 10 ms" if p == 99 else ""))
    rows += [
        ("scan -> ack max (ms)", max(base.latencies), max(hist.latencies), ""),
        ("scan -> ack mean (ms)", statistics.fmean(base.latencies), statistics.fmean(hist.latencies), ""),
        ("RSS after the scans (MB)", base.rss_end, hist.rss_end, ""),
        ("VmHWM during the scans (MB)" if hist.hwm_reset else "VmHWM since start (MB)",
         base.hwm_scans, hist.hwm_scans, ""),
        ("CPU during the scans (s)", base.cpu_scans, hist.cpu_scans, ""),
        ("CPU per scan (ms)", base.cpu_scans / scans * 1000, hist.cpu_scans / scans * 1000, ""),
    ]
    print(f"{'':40} {'empty desk':>11} {'history':>11} {'ratio':>9}")
    for label, b, h, note in rows:
        print(f"{label:40} {b:11.2f} {h:11.2f} {ratio(h, b)}  {note}")
    for figures in (base, hist):
        slow = sum(1 for x in figures.latencies if x > 10)
        seen = ", ".join(f"{t:.1f} s in (after scan {n})" for t, n in figures.compactions) or "none"
        print(f"{figures.name}: {len(figures.latencies)} of {scans} checkouts acknowledged at {rate:g}/s "
              f"({figures.failures} failed); {slow} took over 10 ms; compactions seen: {seen}")
    window = 5.0
    per = max(1, round(window * rate))
    for figures in (base, hist):
        spans = [figures.by_scan[i:i + per] for i in range(0, len(figures.by_scan), per)]
        worst = " ".join(f"{max((x for x in span if x is not None), default=0):.0f}" for span in spans)
        print(f"{figures.name}, worst ack (ms) in each {window:g} s of scans: {worst}")
    if not hist.compactions:
        print("history desk: no compaction happened during the scans (send more than 2,000)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="events in the journal (default 300000)")
    parser.add_argument("--unsettled", type=int, default=5_000, help="scans without an outcome (default 5000)")
    parser.add_argument("--quick", action="store_true", help="30000 events, 500 unsettled")
    parser.add_argument("--scans", type=int, help="checkouts sent to each desk (default 3000; 2200 with --quick)")
    parser.add_argument("--rate", type=float, default=40.0, help="checkouts a second (default 40)")
    parser.add_argument("--breakdown", action="store_true", help="also attribute the memory to the log's parts")
    parser.add_argument("--rebuild", action="store_true", help="build the history again even if cached")
    parser.add_argument("--snapshot", type=int, metavar="PATRONS",
                        help="both desks hold an ILS snapshot of this many patrons (and twice as many items)")
    parser.add_argument("--breakdown-of", type=Path, help=argparse.SUPPRESS)  # the breakdown's own process
    args = parser.parse_args()
    if args.breakdown_of:
        breakdown(args.breakdown_of)
        return
    if args.quick:
        args.events, args.unsettled = 30_000, 500
    if args.scans is None:
        args.scans = 2200 if args.quick else 3000
    if not 0 <= args.unsettled <= args.events:
        parser.error("--unsettled must be between 0 and --events")
    cached = built_history(args.events, args.unsettled, args.rebuild)
    info = json.loads((cached / "build.json").read_text())
    print(f"history: {info['events']:,} events in the journal ({info['scans']:,} scans, {info['applied']:,} "
          f"applied outcomes), {info['unsettled']:,} unsettled, {info['open_loans']:,} open loans, "
          f"{info['conflicts']} conflicts; built in {info['build_seconds']} s, cached in {cached}")
    with tempfile.TemporaryDirectory(prefix="circmesh-bench-history-") as tmp:
        root = Path(tmp)
        empty = root / "empty" / "desk"
        provision(empty, DESK)
        add_user(empty, TEST_USER, TEST_PASSWORD, "admin")
        shutil.copytree(cached, root / "history")
        if args.snapshot:
            snapshot = built_snapshot(args.snapshot)
            give_snapshot(snapshot, empty)
            give_snapshot(snapshot, root / "history" / "desk")
            print(f"both desks hold a snapshot of {args.snapshot:,} patrons and {2 * args.snapshot:,} items "
                  f"({(snapshot / 'snapshot.sqlite').stat().st_size / MB:.0f} MB, encrypted)")
        base = asyncio.run(measure(empty, "empty desk", args.scans, args.rate, "E"))
        hist = asyncio.run(measure(root / "history" / "desk", "history desk", args.scans, args.rate, "H"))
        print(f"history desk's /status: {hist.journal_events:,} events, {hist.unsettled:,} pending upload")
        report(base, hist, args.scans, args.rate)
        if args.breakdown:
            shutil.copytree(cached, root / "breakdown")
            sys.stdout.flush()
            subprocess.run([sys.executable, __file__, "--breakdown-of", str(root / "breakdown")], check=True,
                           timeout=3600)


if __name__ == "__main__":
    main()
