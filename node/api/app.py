"""The desk's web application: the JSON API under /api/v1, the live feed, and (later) the web UI."""

from __future__ import annotations

from aiohttp import web

from node.api import circulation, queries
from node.api.auth import staff_middleware
from node.api.errors import MAX_BODY, error_middleware
from node.api.keys import NODE


def build_app(node: object) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[error_middleware, staff_middleware])
    app[NODE] = node
    app.add_routes(circulation.routes)
    app.add_routes(queries.routes)
    app.router.add_get("/api/v1/live", node.live.handle)  # type: ignore[attr-defined]
    return app


def build_peer_app(node: object) -> web.Application:
    """The peer port serves nothing but peer links."""
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/peer", node.peers.handle)  # type: ignore[attr-defined]
    return app
