"""The desk's web application: the JSON API under /api/v1, the live feed, sign-in, and the web UI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from node.api import admin, auth, circulation, enrolment, files, openapi, queries, snapshot_import, ui
from node.api.auth import setup_auth, staff_middleware
from node.api.errors import MAX_BODY, error_middleware
from node.api.keys import (
    ADMISSIONS,
    CLOCKS,
    CONFIG,
    DUE_DATES,
    IMPORTER,
    LIVE,
    LOG,
    MEMBERSHIP,
    NODE_ID,
    PEERS,
    REFRESHER,
    REVOCATIONS,
    STATUS,
    VIEWS,
    WARNINGS,
)
from node.trust.enrolment_http import enrolment_routes

if TYPE_CHECKING:
    from node.desk import DeskNode  # node.desk builds these apps: only the type checker imports it here


def build_app(node: DeskNode) -> web.Application:
    """The desk's parts, each under its own key (keys.py), so that each handler sees only what it uses."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[error_middleware, staff_middleware])
    app[NODE_ID] = node.node_id
    app[CONFIG] = node.config
    app[LOG] = node.log
    app[VIEWS] = node.views
    app[WARNINGS] = node.warnings
    app[CLOCKS] = node.clocks
    app[STATUS] = node.status
    app[PEERS] = node.peers
    app[REVOCATIONS] = node.revocations
    app[MEMBERSHIP] = node.membership
    app[ADMISSIONS] = node.admissions
    app[REFRESHER] = node.refresher
    app[DUE_DATES] = node.due_dates
    app[IMPORTER] = node.importer
    app[LIVE] = node.live_lookup
    setup_auth(app, Path(node.config.data_dir), node.node_id)
    app.add_routes(auth.routes)
    app.add_routes(circulation.routes)
    app.add_routes(queries.routes)
    app.add_routes(admin.routes)
    app.add_routes(files.routes)
    app.add_routes(snapshot_import.routes)
    app.add_routes(enrolment.routes)
    app.add_routes(openapi.routes)
    app.router.add_get("/api/v1/live", node.live.handle)
    app.add_routes(ui.routes)
    return app


def build_peer_app(node: DeskNode) -> web.Application:
    """The peer port serves nothing but peer links."""
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_get("/peer", node.peers.handle)
    admissions, ca = node.admissions, node.membership.ca
    if admissions is not None and ca is not None:  # this desk holds the cluster CA: it admits joining desks
        app.add_routes(enrolment_routes(admissions, ca))
    return app
