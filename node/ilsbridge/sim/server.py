"""Puts the simulator together: the library, the HTTP side (Koha service, REST, /sim control) and SIP2.

The control endpoints under /sim/ always answer; everything else goes through the gate, which answers 503
while the simulator is offline, waits the configured latency, and fails a request with 500 (before anything
is applied) as often as `failure_rate` says:
- `GET /sim/state`, `POST /sim/state {online?, latency_ms?, failure_rate?}` → the state.
- `GET /sim/ledger[?after=SEQ]` → every operation processed, in order:
  [{seq, protocol, action, timestamp, cardnumber, barcode, amount, outcome}].
- `GET /sim/loans` → the current loans [{barcode, cardnumber, due}].
- `GET /sim/pending` → Koha's pending_offline_operations (what `pending=true` queued).
- `POST /sim/patrons/{cardnumber}/restriction {until, comment}` → staff at the ILS restrict a patron
  (a debarment until a date, or for good when `until` is null).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from aiohttp import web

from node.ilsbridge.sim.control import SimState
from node.ilsbridge.sim.koha import KohaService, StaffAccount
from node.ilsbridge.sim.library import Library
from node.ilsbridge.sim.rest import RestApi
from node.ilsbridge.sim.seed import SeedSpec
from node.ilsbridge.sim.sip2server import Sip2Server

DEFAULT_USER = "bridge"
DEFAULT_PASSWORD = "bridge-demo"
PASSWORD_ENV = "CIRCMESH_SIM_PASSWORD"


@dataclass
class SimConfig:
    data_dir: Path
    host: str = "127.0.0.1"
    http_port: int = 0
    sip_port: int = 0
    patrons: int = 2000
    items: int = 5000
    seed: int = 1
    today: date | None = None
    user: str = DEFAULT_USER
    password: str = field(default=DEFAULT_PASSWORD, repr=False)
    csrf: bool = True  # False: an older Koha (before 24.05) without CSRF tokens
    sip2_standard: bool = False  # True: SIP2 item information names no borrower, as the standard has it


@dataclass
class RunningSim:
    config: SimConfig
    library: Library
    state: SimState
    http: str
    sip2: str
    _runner: web.AppRunner
    _sip: Sip2Server

    def ready_line(self) -> str:
        return json.dumps(
            {
                "ready": True,
                "http": self.http,
                "sip2": self.sip2,
                "user": self.config.user,
                "password": self.config.password,
            }
        )

    async def close(self) -> None:
        await self._sip.close()
        await self._runner.cleanup()
        self.library.close()


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    return sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _gate(state: SimState) -> Callable:
    @web.middleware
    async def gate(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/sim/"):
            return await handler(request)
        if not state.online:
            return web.Response(status=503, text="Service Unavailable: the ILS is offline.")
        if request.can_read_body:
            await request.read()  # a slow ILS has the whole request before it works on it, as a real one does
        await state.delay()
        if not state.online:
            return web.Response(status=503, text="Service Unavailable: the ILS is offline.")
        if state.draw_failure():
            return web.Response(status=500, text="Internal Server Error (injected failure).")
        return await handler(request)

    return gate


def _control_routes(app: web.Application, library: Library, state: SimState) -> None:
    async def get_state(request: web.Request) -> web.Response:
        return web.json_response(state.as_json())

    async def post_state(request: web.Request) -> web.Response:
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        try:
            state.update(payload)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(state.as_json())

    async def ledger(request: web.Request) -> web.Response:
        after = request.query.get("after", "0")
        if not after.isdigit():
            return web.json_response({"error": "after must be a sequence number"}, status=400)
        return web.json_response(library.ledger(int(after)))

    async def loans(request: web.Request) -> web.Response:
        return web.json_response(library.loans())

    async def pending(request: web.Request) -> web.Response:
        return web.json_response(library.pending())

    async def restrict(request: web.Request) -> web.Response:
        """Staff at the ILS restrict a patron (a debarment): {"until": "YYYY-MM-DD" or null, "comment"}."""
        try:
            payload = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.json_response({"error": "body must be JSON"}, status=400)
        if not isinstance(payload, dict):
            return web.json_response({"error": "body must be a JSON object"}, status=400)
        until, comment = payload.get("until"), payload.get("comment")
        if not (until is None or isinstance(until, str)) or not (comment is None or isinstance(comment, str)):
            return web.json_response({"error": "until and comment must be text or null"}, status=400)
        if not library.restrict(request.match_info["cardnumber"], until, comment):
            return web.json_response({"error": "no such patron"}, status=404)
        return web.json_response({"restricted": request.match_info["cardnumber"]})

    app.router.add_post("/sim/patrons/{cardnumber}/restriction", restrict)
    app.router.add_get("/sim/state", get_state)
    app.router.add_post("/sim/state", post_state)
    app.router.add_get("/sim/ledger", ledger)
    app.router.add_get("/sim/loans", loans)
    app.router.add_get("/sim/pending", pending)


async def start(config: SimConfig) -> RunningSim:
    """Open (seeding if needed) the library and start both listeners."""
    spec = SeedSpec(patrons=config.patrons, items=config.items, seed=config.seed, today=config.today)
    library = Library.open(config.data_dir, spec)
    state = SimState(seed=config.seed)
    staff = StaffAccount(config.user, config.password)
    app = web.Application(middlewares=[_gate(state)], client_max_size=1024 * 1024)
    KohaService(library, staff, csrf=config.csrf).add_routes(app)
    RestApi(library, staff).add_routes(app)
    _control_routes(app, library, state)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    http_sock = _bind(config.host, config.http_port)
    sip_sock = _bind(config.host, config.sip_port)
    await web.SockSite(runner, http_sock).start()
    sip = Sip2Server(library, staff, state, institution=library.library_id, standard=config.sip2_standard)
    await sip.start(sip_sock)
    return RunningSim(config, library, state, _address(http_sock), _address(sip_sock), runner, sip)
