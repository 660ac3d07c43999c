"""Real `circmesh run` processes for tests, and TCP relays between them that a test can cut and heal.

Each DeskProcess has a staff user (an admin, so tests may do anything) and signs in once it serves; its
bearer token is kept per desk address, and get_json/post_json/auth_headers send it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.provision import provision

READY_TIMEOUT = 60.0
TEST_USER = "tester"
TEST_PASSWORD = "correct horse battery"
_TOKENS: dict[str, str] = {}  # "127.0.0.1:port" -> bearer token of the desk serving there


def auth_headers(url: str) -> dict[str, str]:
    """The Authorization header for the desk that serves `url` (none if it is not a signed-in desk)."""
    from urllib.parse import urlsplit

    token = _TOKENS.get(urlsplit(url).netloc)
    return {"Authorization": f"Bearer {token}"} if token else {}


def add_user(data: Path, name: str, password: str, role: str) -> None:
    """Creates the user in a desk's data directory unless it is already there (a restarted desk)."""
    from node.api.users import UserStore

    store = UserStore(data)
    existing = store.get(name)
    if existing is None or existing.role != role or store.verify(name, password) is None:
        store.add(name, password, role)


async def sign_in(session: aiohttp.ClientSession, url: str, name: str, password: str) -> str:
    async with session.post(f"{url}/api/v1/session", json={"name": name, "password": password}) as r:
        body = await r.json()
        if r.status != 200:
            raise RuntimeError(f"sign-in to {url} as {name} failed: {r.status} {body}")
        return str(body["token"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for(predicate: Callable[[], Awaitable[Any]], within: float = 30.0, what: str = "condition") -> Any:
    """Polls an async predicate until it returns something truthy; fails after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            last = await predicate()
            if last:
                return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class DeskProcess:
    def __init__(self, data: Path, desk: str, peers: list[str], *, extra: list[str] | None = None,
                 prefix: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """`prefix` runs the desk under another program (["faketime", "-f", "+1h"]); `env` adds variables."""
        self.data, self.desk, self.peers = data, desk, peers
        # The web port is the desk's own choice (0) at the first start, read from its ready line: a port
        # picked here and freed could be taken by anything before the desk binds it (it happened). A restart
        # asks for the same one again. The peer port must be known before: other desks are told to dial it.
        self.port, self.peer_port = 0, free_port()
        self.extra = extra or []
        self.prefix = prefix or []
        self.env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        self.pid: int | None = None  # the desk's own process: a wrapper such as faketime forks it
        self.node: str | None = None
        self.users: list[tuple[str, str, str]] = [(TEST_USER, TEST_PASSWORD, "admin")]
        self.mdns = False
        self.token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def peer_address(self) -> str:
        return f"127.0.0.1:{self.peer_port}"

    async def start(self) -> None:
        for name, password, role in self.users:
            await asyncio.to_thread(add_user, self.data, name, password, role)
        await asyncio.to_thread(provision, self.data, self.desk)  # a member of the test directory's cluster
        # mDNS stays off unless a test asks for it: links must run where the test routes them (relays)
        discovery = ["--interface", "127.0.0.1"] if self.mdns else ["--no-mdns"]
        argv = [*self.prefix, sys.executable, "-m", "node.cli", "run", "--data", str(self.data), "--desk", self.desk,
                "--port", str(self.port), "--peer-port", str(self.peer_port), "--log-level", "WARNING",
                *discovery, *[a for p in self.peers for a in ("--peer", p)], *self.extra]
        self.proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                         env={**os.environ, **self.env} if self.env else None)
        assert self.proc.stdout is not None
        async with asyncio.timeout(READY_TIMEOUT):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"desk {self.desk} exited with {await self.proc.wait()}")
                with contextlib.suppress(json.JSONDecodeError):
                    ready = json.loads(line)
                    if ready.get("ready"):
                        self.port = int(str(ready["url"]).rsplit(":", 1)[1])
                        self.node = ready["node"]
                        self.pid = int(ready.get("pid", self.proc.pid))
                        break
        name, password, _ = self.users[0]
        async with aiohttp.ClientSession() as session:
            self.token = await sign_in(session, self.url, name, password)
        _TOKENS[f"127.0.0.1:{self.port}"] = self.token

    def _signal(self, sig: signal.Signals) -> None:
        """To the desk itself (a wrapper would not pass it on), and to its wrapper if it has one."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid or self.proc.pid, sig)
        if self.pid not in (None, self.proc.pid) and sig == signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()

    async def kill9(self) -> None:
        assert self.proc is not None
        self._signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self._signal(signal.SIGTERM)  # a wrapper exits once the desk has
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await self.proc.wait()


class Relay:
    """A TCP relay standing in for a network link: cut() drops every connection and refuses new ones."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.open = True
        self._conns: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._conns.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._conns.difference_update({writer, up_writer})

    def cut(self) -> None:
        self.open = False
        for w in list(self._conns):
            with contextlib.suppress(Exception):
                w.transport.abort()
        self._conns.clear()

    def heal(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, headers=auth_headers(url)) as r:
        return await r.json()


async def post_json(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with session.post(url, json=body, headers=auth_headers(url)) as r:
        return r.status, await r.json()
