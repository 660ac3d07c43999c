from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from node.desk import DeskConfig, DeskNode
from tests.ilssim import Sim, start_simulator
from tests.procs import TEST_PASSWORD, TEST_USER, add_user
from tests.provision import provision


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[DeskNode]:
    """A real desk node in this process, on loopback ports chosen by the OS."""
    add_user(tmp_path / "desk", TEST_USER, TEST_PASSWORD, "admin")  # tests sign in: tests.procs.sign_in
    provision(tmp_path / "desk", "Front desk")
    node = DeskNode(DeskConfig(data_dir=tmp_path / "desk", desk="Front desk", port=0, peer_port=0, mdns=False))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """One ILS simulator process shared by a test module; `sim_reset` puts it back online after each test."""
    s = start_simulator(tmp_path_factory.mktemp("ils"))
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
async def sim_reset(sim: Sim) -> AsyncIterator[None]:
    yield
    await sim.reset()
