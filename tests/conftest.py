from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from node.desk import DeskConfig, DeskNode


@pytest.fixture
async def desk(tmp_path: Path) -> AsyncIterator[DeskNode]:
    """A real desk node in this process, on loopback ports chosen by the OS."""
    node = DeskNode(DeskConfig(data_dir=tmp_path / "desk", desk="Front desk", port=0, peer_port=0))
    await node.start()
    try:
        yield node
    finally:
        await node.stop()
