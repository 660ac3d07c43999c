"""The virtual LAN (scripts/lan) from Python: desks in network namespaces for multi-node tests.

Use the fixture factory in a test module:

    lan = virtual_lan(3)                # a fixture named "lan" with desks 1..3

    async def test_something(lan):
        server = await lan.spawn(1, [sys.executable, "-c", "..."])
        await lan.cut(1)

Every namespace gets a prefix unique to this test run, so parallel runs never meet; the fixture removes
leftovers of a crashed run with the same prefix first, and everything it made afterwards, even when
the test fails. It fails (never skips) with the reason when namespaces cannot be created here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "lan"
PYTHON = sys.executable
SUBNET = "10.231.1"
COMMAND_TIMEOUT_S = 60.0

_serial = itertools.count()


class LanUnavailable(RuntimeError):
    """Network namespaces cannot be created here (no root, no CAP_SYS_ADMIN, no iproute2)."""


def unique_prefix() -> str:
    """`cm<pid><letter>`: at most 12 characters, unique per run and per LAN within the run."""
    n = next(_serial)
    return f"cm{os.getpid()}{chr(ord('a') + n % 26)}"


def missing_privilege() -> str | None:
    """Why this process cannot make namespaces (no CAP_SYS_ADMIN), or None when it looks possible."""
    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff")), 16)
    except (OSError, StopIteration, ValueError):
        return None  # cannot tell: let the attempt itself report
    cap_sys_admin = 1 << 21
    if cap_eff & cap_sys_admin:
        return None
    return (
        "the virtual LAN needs root with CAP_SYS_ADMIN to create network namespaces; "
        f"this test runs as uid {os.geteuid()} without that capability"
    )


class VirtualLan:
    """Desks 1..n in namespaces `<prefix>-<i>`, cabled to one bridge in `<prefix>-br`."""

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or unique_prefix()
        self.size = 0
        self._processes: list[asyncio.subprocess.Process] = []

    def namespace(self, desk: int) -> str:
        return f"{self.prefix}-{desk}"

    def address(self, desk: int) -> str:
        """Desk i's address on the virtual LAN (only reachable from inside its namespaces)."""
        return f"{SUBNET}.{10 + desk}"

    @property
    def network(self) -> str:
        return f"{SUBNET}.0/24"

    async def _lan(self, *args: str) -> str:
        process = await asyncio.create_subprocess_exec(
            str(SCRIPT),
            *args,
            "--prefix",
            self.prefix,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise RuntimeError(f"scripts/lan {' '.join(args)} ran over {COMMAND_TIMEOUT_S} s") from None
        if process.returncode != 0:
            message = err.decode(errors="replace").strip() or f"exit status {process.returncode}"
            if "cannot create network namespaces" in message or "iproute2" in message:
                raise LanUnavailable(message)
            raise RuntimeError(f"scripts/lan {' '.join(args)}: {message}")
        return out.decode()

    async def up(self, n: int) -> None:
        problem = missing_privilege()
        if problem:
            raise LanUnavailable(problem)
        await self._lan("up", str(n))
        self.size = n

    async def down(self) -> None:
        """End the processes we spawned, then remove every namespace of our prefix."""
        for process in self._processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(process.wait(), 5)
        self._processes.clear()
        await self._lan("down")
        self.size = 0

    async def cut(self, desk: int) -> None:
        """Unplug desk i's cable: it can reach nobody and nobody can reach it."""
        await self._lan("cut", str(desk))

    async def restore(self, desk: int) -> None:
        await self._lan("restore", str(desk))

    async def split(self, a: Sequence[int], b: Sequence[int]) -> None:
        """Two halves that cannot reach each other (desks in neither half stay with `a`)."""
        await self._lan("split", ",".join(map(str, a)), ",".join(map(str, b)))

    async def heal(self) -> None:
        await self._lan("heal")

    async def namespaces(self) -> list[str]:
        """The namespaces of our prefix that exist now (empty after `down`)."""
        process = await asyncio.create_subprocess_exec(
            "ip", "netns", "list", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        out, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT_S)
        names = (line.split()[0] for line in out.decode().splitlines() if line.strip())
        return sorted(n for n in names if n.startswith(f"{self.prefix}-"))

    async def spawn(self, desk: int, argv: Sequence[str], **kwargs: Any) -> asyncio.subprocess.Process:
        """Run argv inside desk i's namespace; stdout/stderr are pipes unless given. Ended by `down`."""
        if not 1 <= desk <= self.size:
            raise ValueError(f"no desk {desk} (the LAN has {self.size})")
        kwargs.setdefault("stdin", asyncio.subprocess.DEVNULL)
        kwargs.setdefault("stdout", asyncio.subprocess.PIPE)
        kwargs.setdefault("stderr", asyncio.subprocess.PIPE)
        process = await asyncio.create_subprocess_exec("ip", "netns", "exec", self.namespace(desk), *argv, **kwargs)
        self._processes.append(process)
        return process

    async def run(self, desk: int, argv: Sequence[str], limit_s: float = 20.0) -> tuple[int, str, str]:
        """Run argv in desk i to completion: (exit status, stdout, stderr); killed after `limit_s`."""
        process = await self.spawn(desk, argv)
        try:
            out, err = await asyncio.wait_for(process.communicate(), limit_s)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise
        assert process.returncode is not None
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def stop(process: asyncio.subprocess.Process, limit_s: float = 10.0) -> int:
    """Ask a spawned process to finish (SIGINT, as Ctrl-C would), killing it if it does not."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), limit_s)
        except TimeoutError:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode


def virtual_lan(n: int, *, name: str = "lan") -> Callable[..., AsyncIterator[VirtualLan]]:
    """A pytest fixture giving a fresh LAN of n desks, always removed afterwards."""

    @pytest_asyncio.fixture(name=name)
    async def fixture() -> AsyncIterator[VirtualLan]:
        lan = VirtualLan()
        unavailable = None
        try:
            await lan.down()  # leftovers of a crashed run that had the same prefix
            await lan.up(n)
        except LanUnavailable as e:
            unavailable = str(e)
        except BaseException:
            await _quiet_down(lan)
            raise
        if unavailable is not None:
            await _quiet_down(lan)
            pytest.fail(f"virtual LAN unavailable: {unavailable}", pytrace=False)
        try:
            yield lan
        finally:
            await lan.down()
            left = await lan.namespaces()
            assert not left, f"namespaces left behind: {left}"

    return fixture


async def _quiet_down(lan: VirtualLan) -> None:
    with contextlib.suppress(Exception):
        await lan.down()
