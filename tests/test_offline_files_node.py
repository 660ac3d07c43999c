"""Offline files through a real desk process and the `circmesh export` / `circmesh import` commands; a desk that
joins after a 100,000-line import gets that history in journal runs."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from node.api.files import MAX_IMPORT
from node.ilsbridge import formats
from tests.procs import TEST_PASSWORD, TEST_USER, DeskProcess, get_json, post_json, wait_for

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


# ---- large files: the whole body is read, and the whole file is recorded or none of it

HEADER = "Version=1.0\tGenerator=koct\tGeneratorVersion=0.6\t\r\n"


def koc_lines(n: int, *, first: int = 0) -> list[str]:
    """n KOCT lines (issue and return, by turns) on distinct barcodes: every line is a recordable event."""
    out = []
    for i in range(first, first + n):
        stamp = f"2026-11-{20 + i // 86_400 % 8:02d} {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
        if i % 2 == 0:
            out.append(f"{stamp}\tissue\t23{i:08d}\t39{i:08d}\t\r\n")
        else:
            out.append(f"{stamp}\treturn\t39{i - 1:08d}\t\r\n")
    return out


async def in_small_chunks(data: bytes, seed: int):
    """The body as a browser or a slow link sends it: many small pieces, so the desk sees pauses."""
    rng = random.Random(seed)
    at = 0
    while at < len(data):
        size = rng.randint(1, 16 * 1024)
        yield data[at:at + size]
        at += size
        await asyncio.sleep(0)


async def import_chunked(session: aiohttp.ClientSession, desk: DeskProcess, data: bytes, *, seed: int = 1,
                         **params: str) -> tuple[int, dict]:
    async with session.post(f"{desk.url}/api/v1/imports", params={"format": "koc", **params},
                            data=in_small_chunks(data, seed), headers=desk.headers,
                            timeout=aiohttp.ClientTimeout(total=240)) as r:
        return r.status, await r.json()


async def recorded_events(session: aiohttp.ClientSession, desk: DeskProcess) -> tuple[int, int]:
    """The desk's event count as the events API and as /status see it."""
    total = (await get_json(session, f"{desk.url}/api/v1/events?after=0&limit=1"))["total"]
    status = await get_json(session, f"{desk.url}/api/v1/status")
    return total, status["node"]["events"]


async def test_a_file_of_megabytes_in_small_chunks_is_recorded_whole_or_not_at_all(desk) -> None:
    n = 100_000
    good = koc_lines(n)
    async with aiohttp.ClientSession() as session:
        # a bad last line (a return whose barcode is missing): nothing recorded, that line blamed
        data = (HEADER + "".join(good) + "2026-11-28 10:00:00\treturn\t\r\n").encode()
        assert len(data) > 4_000_000
        status, answer = await import_chunked(session, desk, data)
        assert status == 422, answer
        assert [(e["line"], e["reason"]) for e in answer["errors"]] == [(n + 2, "missing item barcode")]
        assert answer["recorded"] == 0 and await recorded_events(session, desk) == (0, 0)

        # a line the format takes but the log refuses (a payment it would have to round to 0.00), half way
        middle = n // 2
        lines = [*good[:middle], "2026-11-24 10:00:00\tpayment\t23000000\t0.001\t\r\n", *good[middle:]]
        status, answer = await import_chunked(session, desk, (HEADER + "".join(lines)).encode(), seed=2)
        assert status == 422, answer
        assert [e["line"] for e in answer["errors"]] == [middle + 2] and "amount" in answer["errors"][0]["reason"]
        assert await recorded_events(session, desk) == (0, 0)

        # every line good: every line recorded, in file order
        data = (HEADER + "".join(good)).encode()
        started = time.monotonic()
        status, answer = await import_chunked(session, desk, data, seed=3, name="day.koc")
        took = time.monotonic() - started
        assert status == 201, answer
        assert answer["recorded"] == n and answer["errors"] == []
        assert await recorded_events(session, desk) == (n + 1, n + 1)  # and the seal a large import is written with
        last = (await get_json(session, f"{desk.url}/api/v1/events?after={n - 1}&limit=5"))["events"]
        assert [(e["kind"], e["body"].get("item")) for e in last] == [("checkin", f"39{n - 2:08d}"), ("seal", None)]
        print(f"import of {len(data) / 1e6:.1f} MB ({n} lines) in small chunks: {took:.1f} s")

        # A desk joining with an empty journal gets this history of 100,000 events by the bulk path (a file
        # that large is written with a seal of its own, so no document carries it) and shows the same state.
        newcomer = DeskProcess(desk.data.parent / "newcomer", "Newcomer", [desk.peer_address])
        await newcomer.start()
        try:
            async def holds_it_all() -> bool:
                return await recorded_events(session, newcomer) == (n + 1, n + 1)

            await wait_for(holds_it_all, within=120, what="the newcomer holds the 100,000 events")
            peers = (await get_json(session, f"{newcomer.url}/api/v1/status"))["peers"]
            assert sum(p["run_events_in"] for p in peers) == n + 1
            for path in ("loans", "items/3900000000", f"items/39{n // 2:08d}", f"items/39{n - 2:08d}"):
                mine = await get_json(session, f"{newcomer.url}/api/v1/{path}")
                assert mine == await get_json(session, f"{desk.url}/api/v1/{path}"), path
                assert path == "loans" or mine["returned_by"], (path, mine)  # each lent, then returned

            async def last_written() -> list[str]:  # the pages read the journal: its last commit may lag
                page = await get_json(session, f"{newcomer.url}/api/v1/events?after={n - 1}&limit=5")
                return [e["id"] for e in page["events"]]

            await wait_for(lambda: _equal(last_written(), [e["id"] for e in last]), what="the last rows written")
        finally:
            await newcomer.stop()


async def _equal(got, expected) -> bool:
    return await got == expected


async def test_a_file_over_the_limit_is_refused_whole(desk, tmp_path: Path) -> None:
    """The real 32 MiB default: a file one byte over it, sent in chunks without a length, records nothing."""
    lines = koc_lines(1_000)
    body = (HEADER + "".join(lines)).encode()
    data = body * (MAX_IMPORT // len(body)) + b"\r\n" * ((MAX_IMPORT % len(body)) // 2 + 1)
    assert len(data) == MAX_IMPORT + 1 or len(data) == MAX_IMPORT + 2
    async with aiohttp.ClientSession() as session:
        status, answer = await import_chunked(session, desk, data)
        assert status == 413 and answer["error"]["code"] == "body_too_large", answer
        # announced by its length, it is refused before it is read
        async with session.post(f"{desk.url}/api/v1/imports", params={"format": "koc"}, data=data,
                                headers=desk.headers) as r:
            assert r.status == 413, await r.text()
        assert await recorded_events(session, desk) == (0, 0)
        # the desk still takes a file after refusing one
        status, answer = await import_chunked(session, desk, body)
        assert (status, answer["recorded"]) == (201, 1_000)


async def test_a_desk_limit_holds_to_the_byte_and_the_command_says_so(tmp_path: Path) -> None:
    d = DeskProcess(tmp_path / "small", "Small desk", [], extra=["--max-import-mib", "1"])
    await d.start()
    try:
        limit = 1024 * 1024
        body = (HEADER + "".join(koc_lines(20_000))).encode()[:limit]
        body = body[:body.rindex(b"\r\n") + 2]
        exact = body + b"\r\n" * ((limit - len(body)) // 2)
        exact += b" " * (limit - len(exact))
        assert len(exact) == limit
        lines = exact.count(b"\tissue\t") + exact.count(b"\treturn\t")
        async with aiohttp.ClientSession() as session:
            status, answer = await import_chunked(session, d, exact + b" ")
            assert status == 413 and "1 MiB" in answer["error"]["message"]
            over = tmp_path / "over.koc"
            over.write_bytes(exact + b"\r\n")
            code, out, err = await circmesh("import", str(over), "--desk", d.url)
            assert code == 1 and "limited to 1 MiB" in err, (out, err)
            assert await recorded_events(session, d) == (0, 0)
            exact_file = tmp_path / "exact.koc"
            exact_file.write_bytes(exact)
            code, out, err = await circmesh("import", str(exact_file), "--desk", d.url)
            assert code == 0 and f'"recorded": {lines}' in out, (out, err)
            assert await recorded_events(session, d) == (lines + 1, lines + 1)  # and its seal
    finally:
        await d.stop()


async def test_a_large_import_reaches_the_peers_in_journal_runs(tmp_path: Path) -> None:
    """A file's events as one Automerge change would reach a peer as one sync message, and a link drops a
    message over its 64 MiB frame limit (a 10 MB .koc never arrived). A large import is sealed as it is
    written and travels in journal runs of at most 4 MiB instead."""
    a = DeskProcess(tmp_path / "a", "A", [])
    b = DeskProcess(tmp_path / "b", "B", [a.peer_address])
    await a.start()
    await b.start()
    try:
        async with aiohttp.ClientSession() as session:
            n = 230_000  # about 10 MB of .koc, some 70 MiB of events
            status, answer = await import_chunked(session, a, (HEADER + "".join(koc_lines(n))).encode())
            assert (status, answer["recorded"]) == (201, n), answer

            async def at_b() -> bool:
                return await recorded_events(session, b) == (n + 1, n + 1)  # and the seal

            await wait_for(at_b, within=240, what=f"the {n} imported events at the peer")
            mine = await get_json(session, f"{b.url}/api/v1/status")
            assert mine["epoch"]["number"] == 1 and sum(p["run_events_in"] for p in mine["peers"]) >= n
    finally:
        await a.stop()
        await b.stop()
