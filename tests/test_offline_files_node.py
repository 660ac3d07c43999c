"""Offline files through a real desk process and the `circmesh export` / `circmesh import` commands."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from node.ilsbridge import formats
from tests.procs import TEST_PASSWORD, TEST_USER, DeskProcess, get_json, post_json

pytestmark = pytest.mark.multiprocess


async def circmesh(*argv: str) -> tuple[int, str, str]:
    env = os.environ | {"CIRCMESH_USER": TEST_USER, "CIRCMESH_PASSWORD": TEST_PASSWORD}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "node.cli", *argv, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.fixture
async def desk(tmp_path: Path):
    d = DeskProcess(tmp_path / "desk", "Front desk", [])
    await d.start()
    try:
        yield d
    finally:
        await d.stop()


async def test_export_in_every_format_round_trips(desk, tmp_path: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for path, body in [("checkouts", {"patron": "23000001", "item": "39000001"}),
                           ("checkouts", {"patron": "23000002", "item": "39000002"}),
                           ("checkins", {"item": "39000001"}),
                           ("renewals", {"item": "39000002"}),
                           ("payments", {"patron": "23000002", "amount": "1.20"})]:
            status, answer = await post_json(session, f"{desk.url}/api/v1/{path}", body)
            assert status == 201, answer
    for fmt, expected in [("koc", ["checkout", "checkout", "checkin", "payment"]),
                          ("offcirc", ["checkout", "checkout", "checkin"]),
                          ("evergreen", ["checkout", "checkout", "checkin", "renew"])]:
        out = tmp_path / f"export.{fmt}"
        code, _, err = await circmesh("export", "--desk", desk.url, "--format", fmt, "-o", str(out), "--tz", "UTC")
        assert code == 0, err
        parsed = formats.parse(fmt, out.read_bytes(), tz=UTC)
        assert parsed.errors == []
        assert [op.kind for _, op in parsed.operations] == expected, fmt
        assert [op.item for _, op in parsed.operations if op.kind == "checkout"] == ["39000001", "39000002"]
        if fmt != "koc":
            assert "left out" in err  # what the format cannot carry is reported, not silently dropped


async def test_import_reports_every_bad_line_and_records_nothing_unless_asked(desk, tmp_path: Path) -> None:
    koct = (
        "Version=1.0\tGenerator=koct\tGeneratorVersion=0.6\t\r\n"
        "2026-11-20 09:15:00\tissue\t23000009\t39000009\t\r\n"
        "2026-11-20 09:16:00\tlend\t23000009\t39000010\t\r\n"  # unknown action
        "2026-13-01 10:00:00\treturn\t39000011\t\r\n"  # no 13th month
        "2026-11-20 10:00:00\treturn\t39000009\t\r\n"
    )
    path = tmp_path / "desk2.koc"
    path.write_bytes(koct.encode())
    code, out, _ = await circmesh("import", str(path), "--desk", desk.url)
    assert code == 1
    assert "desk2.koc:3:" in out and "desk2.koc:4:" in out and '"recorded": 0' in out
    async with aiohttp.ClientSession() as session:
        assert (await get_json(session, f"{desk.url}/api/v1/events"))["total"] == 0
        code, out, _ = await circmesh("import", str(path), "--desk", desk.url, "--skip-errors")
        assert '"recorded": 2' in out and '"skipped": 2' in out
        events = (await get_json(session, f"{desk.url}/api/v1/events"))["events"]
        assert [(e["kind"], e["body"]["item"]) for e in events] == [("checkout", "39000009"), ("checkin", "39000009")]
        # the time the desk lent it, not the time of the import, is what the ILS will be told
        assert events[0]["at"] == int(datetime(2026, 11, 20, 9, 15, tzinfo=UTC).timestamp() * 1000)
        assert events[0]["body"]["imported"] == "desk2.koc"
        status = await get_json(session, f"{desk.url}/api/v1/status")
        assert status["upload"]["pending"] == 2  # imported operations upload like any scan
