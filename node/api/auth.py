"""Who is at the desk. The one middleware where staff sign-in and CSRF checks slot in (the UI issue);
until then every request acts as the desk's own staff account."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

STAFF = web.RequestKey("staff", str)
ROLE = web.RequestKey("role", str)


@web.middleware
async def staff_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request[STAFF] = "desk"
    request[ROLE] = "admin"
    return await handler(request)
