"""Errors the desk API answers with: `{error: {code, message}}` and a 4xx/5xx status, nothing recorded."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from node.crdt.bounds import BoundsError, DeskLimits

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}, **extra}, status=status)


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, e.code, e.message, **e.extra)
    except web.HTTPRequestEntityTooLarge:
        return error_response(413, "body_too_large", f"request body is larger than {MAX_BODY // 1024} KiB")
    except web.HTTPException as e:
        if e.status >= 400 and request.path.startswith("/api/"):
            return error_response(e.status, e.reason.lower().replace(" ", "_"), e.reason)
        raise
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return error_response(500, "internal", "unexpected error on this desk; look at the live feed to see "
                                               "whether the scan was recorded before scanning again")


def barcode_or_400(value: object, what: str, limits: DeskLimits | None = None) -> str:
    """A barcode from a request, trimmed, or a 400 saying what is wrong with it."""
    try:
        return (limits or DeskLimits()).check_barcode(value, what)  # type: ignore[arg-type]
    except BoundsError as e:
        raise ApiError(400, "bad_barcode", str(e)) from None


async def json_body(request: web.Request, allowed: set[str], required: set[str]) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "body_too_large", f"request body is larger than {MAX_BODY // 1024} KiB")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, "bad_json", f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "request body must be a JSON object")
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    missing = {k for k in required if body.get(k) in (None, "")}
    if missing:
        raise ApiError(400, "missing_field", f"missing field(s): {', '.join(sorted(missing))}")
    return body
