"""Typed keys for what the web application and its requests carry.

Each handler takes from the application only the parts it uses, each typed by what it reads: the log as the
`DeskLog` seam (node/ports.py), the views and warnings (which read the log through `CirculationView`), the
peers as `LinkedPeers`, revocations as the log has them. No handler sees the desk node itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # types only: node.desk imports the API
    from node.clock_suspects import ClockSuspects
    from node.cluster import Membership
    from node.desk import DeskConfig
    from node.due_dates import DueDates
    from node.live_lookup import LiveLookup
    from node.ports import DeskLog, LinkedPeers
    from node.revocation import Revocations
    from node.scan_warnings import ScanWarnings
    from node.snapshot.importer import SnapshotImport
    from node.snapshot.refresh import Refresher
    from node.status import DeskStatus
    from node.trust.admissions import AdmissionStore
    from node.views import CirculationViews

NODE_ID: web.AppKey[str] = web.AppKey("node_id")  # this desk's node id
CONFIG: web.AppKey[DeskConfig] = web.AppKey("config")  # its name, data directory, limits, loan days
LOG: web.AppKey[DeskLog] = web.AppKey("log")
VIEWS: web.AppKey[CirculationViews] = web.AppKey("views")
WARNINGS: web.AppKey[ScanWarnings] = web.AppKey("warnings")
CLOCKS: web.AppKey[ClockSuspects] = web.AppKey("clocks")
STATUS: web.AppKey[DeskStatus] = web.AppKey("status")
PEERS: web.AppKey[LinkedPeers] = web.AppKey("peers")
REVOCATIONS: web.AppKey[Revocations] = web.AppKey("revocations")
MEMBERSHIP: web.AppKey[Membership] = web.AppKey("membership")
ADMISSIONS: web.AppKey[AdmissionStore | None] = web.AppKey("admissions")  # only on the desk holding the CA
IMPORTER: web.AppKey[SnapshotImport] = web.AppKey("importer")  # a snapshot built from files an admin gives
LIVE: web.AppKey[LiveLookup] = web.AppKey("live")  # the ILS asked at scan time, at a desk that can reach it
DUE_DATES: web.AppKey[DueDates] = web.AppKey("due_dates")  # when a loan is due unless staff say
REFRESHER: web.AppKey[Refresher | None] = web.AppKey("refresher")  # the snapshot refresh, on the bridge only
