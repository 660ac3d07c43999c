"""The `circmesh` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from node import __version__, collector
from node.sealer import SEAL_EVERY
from node.snapshot.retention import DAY_MS, RETENTION_DAYS

log = logging.getLogger("node.cli")
HARD_EXIT_GRACE = 3.0  # seconds beyond DeskNode's STOP_TIMEOUT before a stop that overran is cut short


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run this desk's node", description=(
        "Runs a desk node: the replicated log, peer links (mutual TLS 1.3 with the cluster's certificates), "
        "mDNS discovery and the desk web UI/API. The data directory must belong to a cluster "
        "(circmesh init / join). Prints one JSON line {\"ready\": true, ...} on stdout once it serves."))
    p.add_argument("--data", required=True, type=Path, help="this node's data directory (created if missing)")
    p.add_argument("--desk", default=None, help="the desk's name shown to staff (default: the data "
                   "directory's name)")
    p.add_argument("--host", default="127.0.0.1", help="address of the desk web UI/API (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port of the desk web UI/API (0: any free port)")
    p.add_argument("--peer-host", default="127.0.0.1", help="address peers connect to (default 127.0.0.1)")
    p.add_argument("--peer-port", type=int, default=0, help="port for peer links (0: any free port)")
    p.add_argument("--peer", action="append", default=[], metavar="HOST:PORT",
                   help="a peer's link address; repeat for several peers")
    p.add_argument("--loan-days", type=int, default=21,
                   help="loan period in days when no due date is given and the ILS's loan rules (from the "
                        "snapshot) have none for the patron and item")
    p.add_argument("--interface", action="append", metavar="IP", dest="interfaces",
                   help="find peers by mDNS only on this interface address; repeat for several "
                        "(default: every LAN interface; the demo and tests use 127.0.0.1)")
    p.add_argument("--no-mdns", action="store_true", help="do not use mDNS; only the --peer addresses")
    p.add_argument("--ils", metavar="URL", help="make this desk the bridge to the ILS: koha+http://host:port, "
                   "koha+https://host/prefix or sip2://host:port (give it to one desk only)")
    p.add_argument("--ils-credentials", metavar="FILE", help="file with user=… and password=… lines for the "
                   "ILS (default: environment CIRCMESH_ILS_USER and CIRCMESH_ILS_PASSWORD)")
    p.add_argument("--upload-concurrency", type=int, default=16,
                   help="ILS requests in flight at once while uploading (default 16)")
    p.add_argument("--seal-every", type=int, default=SEAL_EVERY, metavar="EVENTS",
                   help="seal the replicated document once it carries this many events (the bridge; other desks "
                        "only as a fallback, at 1.5 times this or more), so that it and every sync message "
                        "stay cheap; older events travel between desks in journal runs "
                        f"(default {SEAL_EVERY}; 0: this desk never seals)")
    p.add_argument("--fines-limit", default="5.00", metavar="AMOUNT",
                   help="warn at checkout (the override is needed) when the ILS snapshot says the patron owes more "
                        "than this (default 5.00)")
    p.add_argument("--branch", metavar="LIBRARY",
                   help="the library this desk is at, as the ILS names it (Koha's library_id): a returned item "
                        "of another library, or held for pick-up at one, is said to be in transit there")
    p.add_argument("--snapshot-retention", type=float, default=RETENTION_DAYS, metavar="DAYS",
                   help="delete the snapshot of the ILS's patrons (and its key) once it is older than this and "
                        f"nothing of the outage is left to upload (default {RETENTION_DAYS:g})")
    p.add_argument("--snapshot-every", type=float, default=6.0, metavar="HOURS",
                   help="on the bridge desk: refresh the snapshot of the ILS's patrons and items this often, and "
                        "at start (default 6)")
    p.add_argument("--max-payment", default="10000.00", metavar="AMOUNT",
                   help="the largest payment staff may record in one scan (default 10000.00)")
    p.add_argument("--unicode-barcodes", action="store_true",
                   help="accept barcodes in any printable Unicode (default: printable ASCII, what scanners send)")
    p.add_argument("--max-import-mib", type=float, default=32.0,
                   help="largest offline file `circmesh import` may send to this desk, in MiB (default 32)")
    p.add_argument("--max-clock-drift", type=_drift_seconds, default=120, metavar="SECONDS",
                   help="how far ahead of this desk's own clock another desk's events may push its clock, and "
                        "how far a peer's clock may be from the cluster's before this desk calls it off and its "
                        "ILS times are corrected (default 120). The conflict the log raises for a desk whose "
                        "clock is ahead uses 120 s on every desk, so that all desks show the same")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")


def _drift_seconds(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 86_400:
        raise argparse.ArgumentTypeError("must be between 1 and 86400 seconds")
    return value


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run a whole demo cluster on 127.0.0.1", description=(
        "Starts N desks on 127.0.0.1, linked to each other: desk i (1..N) serves its UI/API on port P+10+i "
        "and its peer link on P+50+i. Writes DIR/demo.json and prints each desk's URL. Ctrl-C, SIGTERM or "
        "SIGHUP stops them all."))
    p.add_argument("--desks", type=int, default=3, help="number of desks (1-9, default 3)")
    p.add_argument("--port", type=int, default=8900, help="base port P (default 8900)")
    p.add_argument("--data", type=Path, default=Path("demo-data"),
                   help="demo data directory (default ./demo-data)")


def _add_ils_sim(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ils-sim", help="run the embedded ILS simulator (Koha service, REST, SIP2)")
    try:
        from node.ilsbridge.sim import cli as sim_cli
    except ImportError:
        p.set_defaults(sim_missing=True)
        return
    sim_cli.add_arguments(p)


def _add_user(sub: argparse._SubParsersAction) -> None:
    from node.api import users

    p = sub.add_parser("user", help="add, list or remove the staff who sign in to a desk's web UI")
    users.add_arguments(p)


def _add_membership(sub: argparse._SubParsersAction) -> None:
    from node import membership_cli

    membership_cli.add_init_arguments(sub.add_parser(
        "init", help="create a cluster on the first desk (its CA); this desk becomes its admin"))
    membership_cli.add_join_arguments(sub.add_parser(
        "join", help="join a cluster, with a one-time code from an admin desk"))
    membership_cli.add_admit_arguments(sub.add_parser(
        "admit", help="on the admin desk: print a one-time code that lets a new desk join"))


def _add_files(sub: argparse._SubParsersAction) -> None:
    from node import offline_files

    offline_files.add_export_arguments(sub.add_parser(
        "export", help="export a desk's merged log as .koc, OffCirc.dat or pending.xacts"))
    offline_files.add_import_arguments(sub.add_parser(
        "import", help="import an offline file into a desk; every bad line is reported"))
    snapshot = sub.add_parser("snapshot", help="the snapshot of the ILS's patrons and items every desk holds")
    actions = snapshot.add_subparsers(dest="snapshot_command", required=True)
    offline_files.add_refresh_arguments(actions.add_parser(
        "refresh", help="have the bridge desk read the ILS's patrons and items now (an admin's name and password)"))
    offline_files.add_snapshot_import_arguments(actions.add_parser(
        "import", help="build the snapshot from files (Koha's patron export, an items CSV) at a desk, for an ILS "
                       "without REST; every desk then gets it"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circmesh",
        description="Keeps a library's circulation desks working, together, while the ILS is unreachable.",
    )
    parser.add_argument("--version", action="version", version=f"circmesh {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_demo(sub)
    _add_ils_sim(sub)
    _add_files(sub)
    _add_membership(sub)
    _add_user(sub)
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _run(args: argparse.Namespace) -> int:
    from decimal import Decimal, InvalidOperation

    from node.crdt.bounds import BoundsError, DeskLimits
    from node.desk import DeskConfig, DeskNode

    _setup_logging(args.log_level)
    try:
        limits = DeskLimits(max_payment=Decimal(args.max_payment), unicode_barcodes=args.unicode_barcodes)
    except (InvalidOperation, BoundsError) as e:
        print(f"circmesh run: --max-payment: {e or 'not a number'}", file=sys.stderr)
        return 2
    try:
        fines_limit = Decimal(args.fines_limit)
        if not fines_limit.is_finite() or not 0 <= fines_limit <= 1_000_000:
            raise InvalidOperation
    except InvalidOperation:
        print("circmesh run: --fines-limit: an amount from 0 to 1000000, such as 5.00", file=sys.stderr)
        return 2
    if not 0 < args.snapshot_every <= 24 * 365:
        print("circmesh run: --snapshot-every: hours, more than 0", file=sys.stderr)
        return 2
    if not args.snapshot_every / 24 < args.snapshot_retention <= 3650:  # (false for nan, too)
        print("circmesh run: --snapshot-retention: days, longer than --snapshot-every (or every snapshot would "
              "be purged before the next) and at most 3650", file=sys.stderr)
        return 2
    config = DeskConfig(
        data_dir=args.data, desk=args.desk or args.data.resolve().name, host=args.host, port=args.port,
        peer_host=args.peer_host, peer_port=args.peer_port, peers=list(args.peer), loan_days=args.loan_days,
        ils=args.ils, ils_credentials=args.ils_credentials, upload_concurrency=args.upload_concurrency,
        seal_every=args.seal_every,
        mdns=not args.no_mdns, interfaces=args.interfaces, limits=limits,
        max_import=int(args.max_import_mib * 1024 * 1024), max_clock_drift_ms=round(args.max_clock_drift * 1000),
        fines_limit_cents=int(fines_limit * 100), snapshot_every_s=args.snapshot_every * 3600,
        branch=args.branch or None, snapshot_retention_ms=int(args.snapshot_retention * DAY_MS),
    )

    from node.cluster import NotEnrolled
    from node.ilsbridge.adapters.base import CredentialsError
    from node.trust.certs import TrustError

    try:
        node = DeskNode(config)
    except (CredentialsError, ValueError, NotEnrolled, TrustError) as e:
        print(f"circmesh run: {e}", file=sys.stderr)
        return 2

    signals = StopSignals()
    signals.install()
    collector.tune()

    async def main() -> None:
        from node.desk import run_until_stopped

        def ready() -> None:
            collector.freeze_loaded()
            # pid: the desk itself, even when started through a wrapper (faketime)
            print(json.dumps({"ready": True, "desk": config.desk, "node": node.node_id,
                              "url": f"http://{config.host}:{node.port}", "peer_port": node.peer_port,
                              "pid": os.getpid()}), flush=True)

        await run_until_stopped(node, signals.attach(asyncio.get_running_loop()), ready)

    asyncio.run(main())
    return 0


class StopSignals:
    """SIGTERM or SIGINT stops the desk gracefully (DeskNode.stop is bounded). A second one, or a stop that
    overruns STOP_TIMEOUT + HARD_EXIT_GRACE (a wedged disk, say), ends the process at once with os._exit.
    That loses nothing acknowledged: a scan is fsynced before its ack, SQLite's WAL keeps each commit whole
    or absent, and peers' events still queued for the group commit come back by sync from those peers.

    Installed with signal.signal, not loop.add_signal_handler, so that a second signal is acted on even
    while the loop is blocked (closing the journal joins its writer thread) or already closed."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def attach(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        """The event that the first signal sets (already set if one came before the loop ran)."""
        self._loop, self._stop = loop, asyncio.Event()
        if self.received is not None:
            self._stopping(self.received)
        return self._stop

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread between two bytecodes, maybe inside the loop: only hand over to the loop.
        if self.received is not None:
            exit_now(signum, "a second stop signal")
        self.received = signum
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._stopping, signum)
            except RuntimeError:  # the loop is closed: the stop is over, only the interpreter's exit is left
                exit_now(signum, "a stop signal after the stop")

    def _stopping(self, signum: int) -> None:
        from node.desk import STOP_TIMEOUT

        log.info("%s: stopping", signal.Signals(signum).name)
        watchdog = threading.Timer(STOP_TIMEOUT + HARD_EXIT_GRACE, exit_now,
                                   (signum, f"still stopping after {STOP_TIMEOUT + HARD_EXIT_GRACE:.0f} s"))
        watchdog.daemon = True
        watchdog.start()
        assert self._stop is not None
        self._stop.set()


def exit_now(signum: int, why: str) -> None:
    """Ends the process at once (exit code 128 + signal). os.write, not logging: this may run inside a
    signal handler that interrupted a logging call."""
    os.write(2, f"circmesh: {why}; exiting now\n".encode())
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return _run(args)
    if args.command == "demo":
        from node.demo import run_demo

        return run_demo(args)
    if args.command == "user":
        from node.api import users

        return users.run(args)
    if args.command in ("init", "join", "admit"):
        from node import membership_cli

        return {"init": membership_cli.run_init, "join": membership_cli.run_join,
                "admit": membership_cli.run_admit}[args.command](args)
    if args.command in ("export", "import", "snapshot"):
        from node import offline_files

        run = {"export": offline_files.run_export, "import": offline_files.run_import,
               "snapshot": offline_files.run_snapshot}[args.command]
        return run(args)
    if args.command == "ils-sim":
        if getattr(args, "sim_missing", False):
            print("circmesh: the ILS simulator is not installed in this build", file=sys.stderr)
            return 2
        from node.ilsbridge.sim import cli as sim_cli

        return sim_cli.run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
