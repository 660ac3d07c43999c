"""Offline files through the desk: export the merged log as .koc, OffCirc.dat or pending.xacts, and import
such a file (from a desk that used the old tools) as events like any scan.

An import records nothing when any line is bad, unless `skip_errors=true`: then the good lines are
recorded and the bad ones reported. Either way the answer lists every bad line with its number and reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from node import __version__
from node.api.auth import STAFF
from node.api.errors import ApiError
from node.api.keys import CLOCKS, CONFIG, LOG
from node.crdt.event import DESK_KINDS, EventError, check_body
from node.ilsbridge import formats
from node.ilsbridge.bridge import recorded_times
from node.ilsbridge.mapping import body_of, ils_times, operation_of, utc_to_ms
from node.storage.gate import StorageFailure

routes = web.RouteTableDef()
MIB = 1024 * 1024
MAX_IMPORT = 32 * MIB  # by default; a desk may take more or less (DeskConfig.max_import, --max-import-mib)
FILENAMES = {"koc": "circmesh.koc", "offcirc": "OffCirc.dat", "evergreen": "pending.xacts"}


def _zone(request: web.Request) -> tzinfo:
    name = request.query.get("tz")
    if not name:
        return datetime.now().astimezone().tzinfo or UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ApiError(400, "bad_tz", f"unknown time zone {name!r}") from None


def _format(request: web.Request, data: bytes | None = None) -> str:
    fmt = request.query.get("format") or (formats.detect(data) if data is not None else None)
    if fmt not in formats.FORMATS:
        raise ApiError(400, "bad_format", f"format must be one of {', '.join(formats.FORMATS)}"
                       + (" (could not tell from the file)" if data is not None else ""))
    return fmt


@routes.get("/api/v1/export")
async def export(request: web.Request) -> web.Response:
    log = request.app[LOG]
    fmt = _format(request)
    state = log.state
    history = list(log.in_order())  # the whole log, history read from the journal
    ordered = [e for e in history if e.problem is None and e.kind in DESK_KINDS and e.id not in state.voided]
    # as the bridge sends them; the times it recorded, even of outcomes that left memory with the fold's base
    times = ils_times(ordered, request.app[CLOCKS].offset, recorded_times(history, state.voided))
    operations = [operation_of(e, times[e.id].at) for e in ordered]
    data, skipped = formats.export_report(fmt, operations, tz=_zone(request), generator="circmesh",
                                          generator_version=__version__)
    headers = {"Content-Disposition": f'attachment; filename="{FILENAMES[fmt]}"',
               "X-Circmesh-Skipped": str(len(skipped))}
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


async def _read_upload(request: web.Request, limit: int) -> bytes:
    """The whole body, however it arrives. `content.read(n)` returns what is buffered so far, not n bytes:
    a large upload was cut wherever the network paused. The app's client_max_size does not apply to
    reading the stream, so the limit is enforced here; past it nothing is kept (413)."""
    too_large = ApiError(413, "body_too_large", f"offline files are limited to {limit / MIB:g} MiB")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    data = bytearray()
    async for chunk in request.content.iter_any():
        data += chunk
        if len(data) > limit:
            raise too_large
    return bytes(data)


@dataclass(frozen=True)
class _Prepared:
    entries: Sequence[tuple[int, str, dict[str, Any], int]]  # line, kind, body, at
    errors: list[dict[str, Any]]


def _prepare(fmt: str, data: bytes, tz: tzinfo, source: str) -> _Prepared:
    """Parse the file and build every event body, checked as the log will check it. A line the format
    accepts but the log would refuse (an amount it would have to round, a date before 1970) is a bad line
    like any other, so the all-or-nothing rule holds before a single event is written. Pure (run in a
    thread: a large file takes seconds)."""
    parsed = formats.parse(fmt, data, tz=tz)
    errors: list[dict[str, Any]] = [{"line": e.line, "reason": e.reason, "text": e.text} for e in parsed.errors]
    entries = []
    for line, op in parsed.operations:
        body = body_of(op) | {"imported": source}
        at = utc_to_ms(op.at)
        try:
            check_body(op.kind, body, at)
        except EventError as e:
            errors.append({"line": line, "reason": str(e), "text": ""})
            continue
        entries.append((line, op.kind, body, at))
    errors.sort(key=lambda e: e["line"])
    return _Prepared(entries, errors)


@routes.post("/api/v1/imports")
async def import_file(request: web.Request) -> web.Response:
    data = await _read_upload(request, request.app[CONFIG].max_import)
    fmt = _format(request, data)
    skip = request.query.get("skip_errors", "false").lower() == "true"
    source = (request.query.get("name") or f"offline file ({fmt})")[:80]
    prepared = await asyncio.to_thread(_prepare, fmt, data, _zone(request), source)
    errors = prepared.errors
    if errors and not skip:
        return web.json_response({"format": fmt, "recorded": 0, "errors": errors, "skipped": len(errors),
                                  "message": "nothing recorded: the file has bad lines (import again with "
                                             "skip_errors=true to record the good ones)"}, status=422)
    try:
        entries: list[tuple[str, dict[str, Any], int | None]] = [(k, b, at) for _, k, b, at in prepared.entries]
        events = await request.app[LOG].append_many(entries, request[STAFF])
    except StorageFailure as e:
        raise ApiError(503, "storage_failure", f"this desk cannot save: {e}; nothing recorded") from None
    recorded = [e.id for e in events]
    return web.json_response({"format": fmt, "recorded": len(recorded), "events": recorded, "errors": errors,
                              "skipped": len(errors)}, status=201 if recorded or not errors else 422)
