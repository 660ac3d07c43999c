"""`circmesh demo`: a whole cluster of desks on 127.0.0.1, each a real `circmesh run` process."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DESK_NAMES = ["Front desk", "Children's desk", "Returns", "Study room", "Mobile library", "Annex",
              "Reading room", "Music", "Local history"]
READY_TIMEOUT = 60.0


def start_process(argv: list[str], name: str) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """Starts a child that prints one JSON ready line on stdout; returns it and that line."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + READY_TIMEOUT
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        try:
            ready = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(ready, dict) and ready.get("ready"):
            return proc, ready
    proc.kill()
    raise RuntimeError(f"{name} did not start (exit code {proc.poll()})")


def run_demo(args: argparse.Namespace) -> int:
    n = args.desks
    if not 1 <= n <= len(DESK_NAMES):
        print(f"circmesh demo: --desks must be 1-{len(DESK_NAMES)}", file=sys.stderr)
        return 2
    base: int = args.port
    data: Path = args.data
    data.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[str]] = []
    desks = []
    try:
        for i in range(1, n + 1):
            peers = [arg for j in range(1, n + 1) if j != i for arg in ("--peer", f"127.0.0.1:{base + 50 + j}")]
            argv = [sys.executable, "-m", "node.cli", "run", "--data", str(data / f"desk-{i}"),
                    "--desk", DESK_NAMES[i - 1], "--port", str(base + 10 + i), "--peer-port", str(base + 50 + i),
                    "--log-level", "WARNING", *peers]
            proc, ready = start_process(argv, DESK_NAMES[i - 1])
            procs.append(proc)
            desks.append({"name": DESK_NAMES[i - 1], "url": ready["url"], "node": ready["node"]})
        demo = {"ils": None, "desks": [{"name": d["name"], "url": d["url"]} for d in desks], "users": []}
        (data / "demo.json").write_text(json.dumps(demo, indent=2) + "\n")
        print(f"circmesh demo: {n} desks running (data in {data}/, details in {data / 'demo.json'})")
        for d in desks:
            print(f"  {d['name']:<16} {d['url']}/   API: {d['url']}/api/v1/status")
        print("Try:  curl -s -X POST -H 'Content-Type: application/json' "
              f"-d '{{\"patron\":\"23000000001\",\"item\":\"39000000001\"}}' {desks[0]['url']}/api/v1/checkouts")
        if len(desks) > 1:
            print(f"then: curl -s {desks[1]['url']}/api/v1/loans")
        print("Press Ctrl-C to stop.", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("circmesh demo: a desk stopped; stopping the others", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ncircmesh demo: stopping")
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
