"""Command line of the simulator (`python -m node.ilsbridge.sim`, wired by the lead as `circmesh ils-sim`).

When both listeners are up it prints one line of JSON to stdout, so that a parent process learns the ports
and the staff account: {"ready": true, "http": "127.0.0.1:P", "sip2": "127.0.0.1:Q", "user", "password"}.
Nothing else goes to stdout; logs go to stderr. It runs until SIGINT or SIGTERM and then exits 0.
The staff password comes from the environment (CIRCMESH_SIM_PASSWORD), never from the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import date
from pathlib import Path

from node.ilsbridge.sim.server import DEFAULT_PASSWORD, DEFAULT_USER, PASSWORD_ENV, SimConfig, start

log = logging.getLogger("circmesh.ils-sim")


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0 (any free port) to 65535")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="directory for the simulator's own database")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--http-port", type=_port, default=0, help="Koha service, REST and /sim control (0: any)"
    )
    parser.add_argument("--sip-port", type=_port, default=0, help="SIP2 over TCP (0: any free port)")
    parser.add_argument("--patrons", type=_count, default=2000, help="patrons to seed (default 2000)")
    parser.add_argument("--items", type=_count, default=5000, help="items to seed (default 5000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated library (default 1)")
    parser.add_argument(
        "--today",
        type=date.fromisoformat,
        default=None,
        help="day the seeded library is built around, YYYY-MM-DD (default: today, UTC)",
    )
    parser.add_argument(
        "--user", default=DEFAULT_USER, help=f"staff userid for the bridge (default {DEFAULT_USER})"
    )
    parser.add_argument(
        "--koha-before-24.05",
        dest="koha_legacy",
        action="store_true",
        help="behave like Koha before 24.05: no CSRF tokens on the offline service",
    )
    parser.add_argument(
        "--sip2-standard-item-info",
        dest="sip2_standard",
        action="store_true",
        help="answer SIP2 item information (17) as the standard has it, like most ACSs: without AA "
        "(who has the item) and CY (who waits for it)",
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s ils-sim %(message)s")
    config = SimConfig(
        data_dir=Path(args.data),
        host=args.host,
        http_port=args.http_port,
        sip_port=args.sip_port,
        patrons=args.patrons,
        items=args.items,
        seed=args.seed,
        today=args.today,
        user=args.user,
        password=os.environ.get(PASSWORD_ENV) or DEFAULT_PASSWORD,
        csrf=not args.koha_legacy,
        sip2_standard=args.sip2_standard,
    )
    return asyncio.run(_serve(config))


async def _serve(config: SimConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    sim = await start(config)
    log.info("ILS simulator: HTTP %s, SIP2 %s, data %s", sim.http, sim.sip2, config.data_dir)
    sys.stdout.write(sim.ready_line() + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await sim.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m node.ilsbridge.sim", description="Embedded ILS simulator"
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
