"""Every desk keeps the document small (node/sealer.py): the bridge seals first, the others only as a
fallback, so that a cluster without a bridge, or cut off from it, still seals."""

from __future__ import annotations

import asyncio
from pathlib import Path

from node.sealer import Sealer, threshold
from tests.test_epochs import close_all, doc_events, same_everywhere, scans, settle, started


def test_the_bridge_seals_first_and_the_others_by_rank() -> None:
    nodes = ["c" * 32, "a" * 32, "b" * 32]
    assert threshold(1000, "c" * 32, nodes, bridge=True) == 1000
    assert [threshold(1000, n, nodes, bridge=False) for n in sorted(nodes)] == [1500, 1750, 2000]
    assert threshold(1000, "d" * 32, nodes, bridge=False) == 2250  # a desk whose record is not in yet: last
    assert threshold(0, "a" * 32, nodes, bridge=True) == 0  # never


async def until_sealed(sealers: list[Sealer]) -> None:
    """The sealers are tasks woken by arrivals, and a seal is written like a scan: until none is due."""
    for _ in range(200):
        await asyncio.sleep(0.01)
        if not any(sealer.threshold and sealer.log.doc_events >= sealer.threshold for sealer in sealers):
            return
    raise AssertionError("a sealer stayed due")


async def test_desks_without_a_bridge_seal_and_converge(tmp_path: Path) -> None:
    logs = await started(tmp_path, ["A", "B", "C"])
    sealers = [Sealer(log, log.identity.node_id, 20) for log in logs]
    try:
        await settle(logs)  # every desk holds every node record: the ranks are known
        for sealer in sealers:
            sealer.start()
        written: list[str] = []
        for k in range(12):
            for log, prefix in zip(logs, "ABC", strict=True):
                written += await scans(log, 4, f"{prefix}{k}-")
            await until_sealed(sealers)
            await settle(logs)
            await until_sealed(sealers)
            assert all(len(doc_events(log)) <= 40 + 12 for log in logs)  # the highest fallback, and a round
        await settle(logs)
        same_everywhere(logs)
        assert logs[0].epoch.number >= 3
        assert sum(s.sealed for s in sealers) >= logs[0].epoch.number  # (which desk seals depends on when
        # each entered the epoch: a scan written in the old one travels in a run and is in no new document)
        held = {e.id for e in logs[0].ordered()}
        assert set(written) <= held
    finally:
        for sealer in sealers:
            await sealer.stop()
        close_all(logs)


async def test_a_bridge_seals_before_any_fallback(tmp_path: Path) -> None:
    logs = await started(tmp_path, ["bridge", "front"])
    sealers = [Sealer(logs[0], logs[0].identity.node_id, 20, bridge=True),
               Sealer(logs[1], logs[1].identity.node_id, 20)]
    try:
        await settle(logs)
        for sealer in sealers:
            sealer.start()
        for _ in range(5):
            await scans(logs[1], 10, "F")
            await settle(logs)
            await until_sealed(sealers)
        await settle(logs)
        same_everywhere(logs)
        assert sealers[0].sealed >= 2 and sealers[1].sealed == 0
    finally:
        for sealer in sealers:
            await sealer.stop()
        close_all(logs)


async def test_a_desk_that_stops_while_sealing_keeps_its_storage_and_the_seal(tmp_path: Path) -> None:
    [log] = await started(tmp_path, ["alone"])
    try:
        await scans(log, 5, "S")  # linked (make_log): in the document
        sealer = Sealer(log, log.identity.node_id, 3, bridge=True)
        sealer.start()
        for _ in range(1000):  # until the seal is built (seq 6): its commit is then being awaited
            if log.seq > 5:
                break
            await asyncio.sleep(0)
        else:
            raise AssertionError("the sealer never began its seal")
        async with asyncio.timeout(5):  # a cancel swallowed inside the seal would keep the task alive
            await sealer.stop()
        await log.store.commit([])
        assert log.failed is None  # a cancel is not a storage failure
        assert log.epoch.number == 1  # and the seal was written whole
    finally:
        close_all([log])
