"""Offline files through the desk: export the merged log as .koc, OffCirc.dat or pending.xacts, and import
such a file (from a desk that used the old tools) as events like any scan.

An import records nothing when any line is bad, unless `skip_errors=true`: then the good lines are
recorded and the bad ones reported. Either way the answer lists every bad line with its number and reason.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web

from node import __version__
from node.api.auth import STAFF
from node.api.errors import ApiError
from node.api.keys import NODE
from node.crdt.event import DESK_KINDS, EventError
from node.eventlog import StorageFailure
from node.ilsbridge import formats
from node.ilsbridge.bridge import sent_times
from node.ilsbridge.mapping import body_of, ils_times, operation_of, utc_to_ms

routes = web.RouteTableDef()
MAX_IMPORT = 32 * 1024 * 1024
FILENAMES = {"koc": "circmesh.koc", "offcirc": "OffCirc.dat", "evergreen": "pending.xacts"}


def _zone(request: web.Request) -> datetime.tzinfo:
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
    node = request.app[NODE]
    fmt = _format(request)
    state = node.log.state
    ordered = [e for e in node.log.ordered() if e.kind in DESK_KINDS and e.id not in state.voided]
    times = ils_times(ordered, node.clock_offset, sent_times(node.log, state))  # as the bridge would send them
    operations = [operation_of(e, times[e.id].at) for e in ordered]
    data, skipped = formats.export_report(fmt, operations, tz=_zone(request), generator="circmesh",
                                          generator_version=__version__)
    headers = {"Content-Disposition": f'attachment; filename="{FILENAMES[fmt]}"',
               "X-Circmesh-Skipped": str(len(skipped))}
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


@routes.post("/api/v1/imports")
async def import_file(request: web.Request) -> web.Response:
    node = request.app[NODE]
    if request.content_length is not None and request.content_length > MAX_IMPORT:
        raise ApiError(413, "body_too_large", "offline files are limited to 32 MiB")
    data = await request.content.read(MAX_IMPORT + 1)
    if len(data) > MAX_IMPORT:
        raise ApiError(413, "body_too_large", "offline files are limited to 32 MiB")
    fmt = _format(request, data)
    skip = request.query.get("skip_errors", "false").lower() == "true"
    parsed = formats.parse(fmt, data, tz=_zone(request))
    errors = [{"line": e.line, "reason": e.reason, "text": e.text} for e in parsed.errors]
    if errors and not skip:
        return web.json_response({"format": fmt, "recorded": 0, "errors": errors, "skipped": len(errors),
                                  "message": "nothing recorded: the file has bad lines (import again with "
                                             "skip_errors=true to record the good ones)"}, status=422)
    source = (request.query.get("name") or f"offline file ({fmt})")[:80]
    recorded = []
    for line, op in parsed.operations:
        body = body_of(op) | {"imported": source}
        try:
            event = await node.log.append(op.kind, body, request[STAFF], at=utc_to_ms(op.at))
        except EventError as e:
            errors.append({"line": line, "reason": str(e), "text": ""})
            continue
        except StorageFailure as e:
            raise ApiError(503, "storage_failure", f"this desk cannot save: {e}; {len(recorded)} recorded") from None
        recorded.append(event.id)
    return web.json_response({"format": fmt, "recorded": len(recorded), "events": recorded, "errors": errors,
                              "skipped": len(errors)}, status=201 if recorded or not errors else 422)
