"""An admin gives the desk its patrons and items as files: `POST /api/v1/snapshot/import`, a multipart body
with a `patrons` part (Koha's patron export, or a CSV with its column names) and an optional `items` part
(node/snapshot/csvfile.py). The parts are streamed to files the desk alone may read, the snapshot is built
from them in the background (`/status.snapshot.file_import` follows it) and named in the log, and the files
are deleted."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from aiohttp import BodyPartReader, web

from node.api.auth import STAFF, require_admin
from node.api.errors import ApiError
from node.api.keys import IMPORTER, STATUS

routes = web.RouteTableDef()
MAX_FILE = 4 * 1024**3  # a million patrons is a few hundred MB


async def _save(part: BodyPartReader, path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    size = 0
    with os.fdopen(fd, "wb") as f:
        while chunk := await part.read_chunk(1 << 20):
            size += len(chunk)
            if size > MAX_FILE:
                raise ApiError(413, "body_too_large", f"a file larger than {MAX_FILE >> 30} GiB is not a snapshot")
            await asyncio.to_thread(f.write, chunk)


@routes.post("/api/v1/snapshot/import")
async def snapshot_import(request: web.Request) -> web.Response:
    require_admin(request)
    if not request.content_type.startswith("multipart/"):
        raise ApiError(400, "not_multipart", "send the files as multipart/form-data: a patrons part, items optional")
    importer = request.app[IMPORTER]
    if not importer.reserve():
        raise ApiError(409, "import_running", "a snapshot is being built from files already: wait for it")
    saved: dict[str, Path] = {}
    names: dict[str, str] = {}
    started = False
    try:
        importer.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader) or part.name not in ("patrons", "items") or (
                        part.name in saved):
                    raise ApiError(400, "bad_part", "the parts are `patrons` (required) and `items`, once each")
                fd, temp = tempfile.mkstemp(dir=importer.directory, prefix=f"{part.name}-", suffix=".csv")
                os.close(fd)  # made with mode 0600
                saved[part.name] = Path(temp)
                names[part.name] = _printable(part.filename or part.name)
                await _save(part, saved[part.name])
        except ConnectionError:
            raise ApiError(400, "upload_cut", "the upload ended before its last part: nothing was imported") from None
        except (ApiError, OSError):
            raise
        except Exception as e:  # aiohttp's multipart reader raises what the bytes lead it to
            raise ApiError(400, "bad_multipart", f"the body is not a multipart form this desk can read "
                                                 f"({type(e).__name__})") from None
        if "patrons" not in saved:
            raise ApiError(400, "no_patrons", "the patrons file is missing (a part named `patrons`)")
        importer.start(saved["patrons"], saved.get("items"), f"file {names['patrons']} ({_printable(request[STAFF])})")
        started = True
    finally:
        if not started:
            importer.release()
            for path in saved.values():
                path.unlink(missing_ok=True)
    return web.json_response(request.app[STATUS].report()["snapshot"], status=202)


def _printable(text: str) -> str:
    """A file or staff name as the snapshot's source, which the log's text rules check: printable only."""
    return "".join(ch for ch in text if ch.isprintable())[:80] or "?"
