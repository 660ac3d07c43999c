"""Admin screens' API for cluster membership: one-time codes, pending join requests, enrolled desks,
revocation. The joining desk itself talks to the admin desk's peer port (node/trust/enrolment_http.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from node.api.auth import ROLE, STAFF
from node.api.errors import ApiError, json_body
from node.api.keys import ADMISSIONS, LOG, MEMBERSHIP, NODE_ID, PEERS, REVOCATIONS, VIEWS
from node.trust.admissions import AdmissionStore, approve_pending
from node.trust.ca import CertificateAuthority
from node.trust.certs import TrustError, load_cert_pem, verify_node_certificate
from node.trust.enrolment import EnrolmentError, derive_code_key
from node.trust.identity import is_node_id

routes = web.RouteTableDef()


def _admin(request: web.Request) -> None:
    if request[ROLE] != "admin":
        raise ApiError(403, "admin_only", "only an admin may manage the cluster's desks")


def _ca_desk(request: web.Request) -> tuple[AdmissionStore, CertificateAuthority]:
    store, ca = request.app[ADMISSIONS], request.app[MEMBERSHIP].ca
    if store is None or ca is None:
        raise ApiError(409, "not_the_ca_desk", "this desk does not hold the cluster's CA: admit desks on the "
                       "desk where the cluster was created")
    return store, ca


def _store(request: web.Request) -> AdmissionStore:
    return _ca_desk(request)[0]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


@routes.post("/api/v1/enrolment/codes")
async def create_code(request: web.Request) -> web.Response:
    _admin(request)
    body = await json_body(request, {"role"}, set())
    role = body.get("role", "desk")
    if role not in ("desk", "admin"):
        raise ApiError(400, "bad_role", "role must be desk or admin")
    issued = _store(request).create_code(role)
    return web.json_response({"code": issued.code, "role": issued.role, "expires": _iso(issued.expires_at),
                              "expires_at": issued.expires_at}, status=201)


@routes.get("/api/v1/desks")
async def desks(request: web.Request) -> web.Response:
    """Every desk enrolled in the cluster (from the replicated node records), with its state here."""
    log, membership, admissions = request.app[LOG], request.app[MEMBERSHIP], request.app[ADMISSIONS]
    state = log.state
    linked = {info.node for info in request.app[PEERS].linked()}
    revocations = request.app[REVOCATIONS]
    revoked_by = revocations.revoked_by()
    out = []
    for record in sorted(log.records.values(), key=lambda r: r.desk):
        role, expires = "desk", None
        if record.cert:
            try:
                info = verify_node_certificate(load_cert_pem(record.cert), membership.ca_cert, set())
                role, expires = info.role, info.not_after.isoformat(timespec="seconds")
            except TrustError:
                role = "unknown"
        away = state.away.get(record.node)
        out.append({
            "node": record.node, "desk": record.desk, "role": role, "certificate_expires": expires,
            "me": record.node == request.app[NODE_ID], "connected": record.node in linked,
            "revoked": record.node in revocations, "revoked_by": revoked_by.get(record.node),
            "away": away is not None and log.vector.get(record.node, 0) <= away[0],
            "events": log.vector.get(record.node, 0),
        })
    body: dict[str, Any] = {"desks": out, "cluster": {"id": membership.cluster_id,
                                                      "name": membership.cluster_name}}
    if admissions is not None and request[ROLE] == "admin":
        now = time.time()
        body["codes"] = [{"code": c.code, "role": c.role, "expires": _iso(c.expires_at)}
                         for c in admissions.open_codes() if c.expires_at > now]
        body["pending"] = [{"id": p.request_id, "node": p.node_id, "desk": p.desk_name, "remote": p.remote,
                            "expires": _iso(p.expires_at)} for p in admissions.pending()]
    return web.json_response(body)


@routes.post("/api/v1/enrolment/pending/{id}/approve")
async def approve(request: web.Request) -> web.Response:
    _admin(request)
    store, ca = _ca_desk(request)
    body = await json_body(request, {"code", "role"}, {"code"})
    role = body.get("role", "desk")
    if role not in ("desk", "admin") or not isinstance(body["code"], str):
        raise ApiError(400, "bad_request", "code must be text and role desk or admin")
    try:
        key = derive_code_key(body["code"])
        view = approve_pending(store, ca, request.match_info["id"], key, role)
    except EnrolmentError as e:
        raise ApiError(400, f"enrolment_{e.reason}", str(e)) from None
    return web.json_response({"approved": view.node_id, "desk": view.desk_name})


@routes.post("/api/v1/enrolment/pending/{id}/reject")
async def reject(request: web.Request) -> web.Response:
    _admin(request)
    try:
        _store(request).reject(request.match_info["id"])
    except EnrolmentError as e:
        raise ApiError(404, f"enrolment_{e.reason}", str(e)) from None
    return web.json_response({"rejected": request.match_info["id"]})


def _other_desk(request: web.Request, self_message: str) -> str:
    """The node id in the path: an enrolled desk other than this one, not revoked."""
    target = request.match_info["node"]
    if not is_node_id(target) or target not in request.app[LOG].records:
        raise ApiError(404, "unknown_desk", "no enrolled desk has that node id")
    if target == request.app[NODE_ID]:
        raise ApiError(400, "this_desk", self_message)
    if target in request.app[REVOCATIONS]:
        raise ApiError(409, "already_revoked", "that desk is already revoked")
    return target


@routes.post("/api/v1/desks/{node}/away")
async def mark_away(request: web.Request) -> web.Response:
    """An admin says a desk is switched off for a while (the two-desk library): it counts as away until it
    writes anything new, so it needs no 'back' button."""
    _admin(request)
    log = request.app[LOG]
    await json_body(request, set(), set())
    target = _other_desk(request, "this desk is plainly here; mark the other desk away")
    event = await log.append("away", {"node": target, "upto": log.vector.get(target, 0)}, request[STAFF])
    return web.json_response({"event": request.app[VIEWS].event_json(event)}, status=201)


@routes.post("/api/v1/desks/{node}/revocation")
async def revoke(request: web.Request) -> web.Response:
    """Revokes a desk: every node drops its links and refuses what it writes from now on. Its events
    up to the last one this desk holds stay valid (they were written while it was trusted)."""
    _admin(request)
    log = request.app[LOG]
    body = await json_body(request, {"reason"}, set())
    target = _other_desk(request, "a desk cannot revoke itself; revoke it from another admin desk")
    reason = body.get("reason") or f"revoked by {request[STAFF]}"
    event = await log.append("revoke", {"node": target, "upto": log.vector.get(target, 0),
                                        "reason": str(reason)[:200]}, request[STAFF])
    return web.json_response({"event": request.app[VIEWS].event_json(event)}, status=201)
