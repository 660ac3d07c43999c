"""The desk's web UI: the static files of `web/` at `/`, the list of languages, and the desk's UI settings.

The UI is plain files (no build step). Every answer carries a strict Content-Security-Policy: scripts and
styles only from this desk, no inline code, no framing, connections only back to this desk.
Optional desk settings live in `ui.json` in the node's data directory:
`{"patron_pattern": "^23", "currency": "EUR"}` — which scans are patron cards, and the currency of fines.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from aiohttp import web

from node.api.keys import CONFIG, NODE_ID

log = logging.getLogger(__name__)
routes = web.RouteTableDef()
WEB_ENV = "CIRCMESH_WEB"
UI_SETTINGS = "ui.json"
TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".json": "application/json",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".wav": "audio/wav",
         ".txt": "text/plain"}
FOLDERS = ("css", "js", "i18n", "img", "sound")


def web_root() -> Path:
    """`web/` next to the `node` package (a source checkout or an editable install), unless the
    environment names another folder."""
    configured = os.environ.get(WEB_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / "web"


def _headers(request: web.Request) -> dict[str, str]:
    ws = ("wss://" if request.secure else "ws://") + request.host
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self' {ws}; media-src 'self' data:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }


def _file(request: web.Request, relative: str) -> web.StreamResponse:
    root = web_root().resolve()
    path = (root / relative).resolve()
    if root not in path.parents or not path.is_file() or path.suffix not in TYPES:
        raise web.HTTPNotFound()
    response = web.FileResponse(path, headers=_headers(request))
    response.content_type = TYPES[path.suffix]
    if path.suffix in (".html", ".css", ".js", ".json"):
        response.charset = "utf-8"
    return response


@routes.get("/")
async def index(request: web.Request) -> web.StreamResponse:
    return _file(request, "index.html")


@routes.get("/favicon.ico")
async def favicon(request: web.Request) -> web.StreamResponse:
    return _file(request, "img/favicon.svg")


@routes.get("/i18n/index.json")
async def languages(request: web.Request) -> web.Response:
    """The languages there are files for, each with its own name for itself, so that adding a
    language is adding one file."""
    return web.json_response({"languages": list_languages(web_root() / "i18n")}, headers=_headers(request))


@routes.get(r"/{folder:(" + "|".join(FOLDERS) + r")}/{name:[A-Za-z0-9_.\-/]+}")
async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if ".." in name.split("/"):
        raise web.HTTPNotFound()
    return _file(request, f"{request.match_info['folder']}/{name}")


@routes.get("/api/v1/ui-config")
async def ui_config(request: web.Request) -> web.Response:
    """What the sign-in screen and the desk screen need before anyone is signed in."""
    config = request.app[CONFIG]
    settings = load_settings(Path(config.data_dir))
    return web.json_response({"desk": config.desk, "node": request.app[NODE_ID], **settings})


def list_languages(folder: Path) -> list[dict[str, str]]:
    out = []
    for path in sorted(folder.glob("*.json")):
        if path.name == "index.json":
            continue
        try:
            strings = json.loads(path.read_text(encoding="utf-8"))
            out.append({"code": path.stem, "name": str(strings["language"]["name"])})
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("language file %s is unreadable; left out", path)
    return out


def load_settings(data_dir: Path) -> dict[str, Any]:
    """The desk's UI settings; anything unreadable or invalid is left out (and logged), never guessed."""
    path = data_dir / UI_SETTINGS
    settings: dict[str, Any] = {"patron_pattern": None, "currency": None}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return settings
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable: %s", path, e)
        return settings
    if not isinstance(raw, dict):
        return settings
    pattern = raw.get("patron_pattern")
    if isinstance(pattern, str) and len(pattern) <= 200:
        try:
            re.compile(pattern)
            settings["patron_pattern"] = pattern
        except re.error:
            log.warning("%s: patron_pattern is not a regular expression", path)
    currency = raw.get("currency")
    if isinstance(currency, str) and re.fullmatch(r"[A-Z]{3}", currency):
        settings["currency"] = currency
    return settings

