"""An admin settles a conflict: `POST /api/v1/conflicts/{id}/resolution {action, event?, note?}`.

Settling is one `resolve` event in the log, so it replicates and the conflict disappears on every desk;
the fold derives what it implies (state.settlements_in):
- `void`: the named event of the conflict is voided;
- `keep`: the named event is kept and every other event of the conflict is voided;
- `accept_ils`: nothing of the conflict is uploaded as it stands; the ILS's own state wins;
- `apply`: the events are uploaded anyway, in causal order;
- `acknowledge`: a warning that holds nothing back (a desk's clock ahead) is noted.
Two admins who answered differently without seeing each other's answer leave a `resolutions_disagree`
conflict: settling it (with one of the original conflict's options) answers the original conflict anew,
after both answers, so that answer stands.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api.auth import STAFF, require_admin
from node.api.errors import ApiError
from node.api.keys import LOG, REFRESHER, STATUS, VIEWS
from node.api.schemas import EmptyRequest, ResolutionRequest, read_json
from node.crdt import conflicts as c
from node.crdt.conflicts import Conflict
from node.crdt.event import Event, EventError
from node.storage.gate import StorageFailure

routes = web.RouteTableDef()
ACTIONS = ("void", "keep", "accept_ils", "apply", "acknowledge")


def plan(conflict: Conflict, action: str, event: str | None, note: str | None) -> tuple[str, dict[str, Any]]:
    """The event (kind, body) that settles `conflict` this way; raises ApiError if it cannot."""
    if action not in ACTIONS:
        raise ApiError(400, "bad_action", f"action must be one of {', '.join(ACTIONS)}")
    body: dict[str, Any] = {"conflict": conflict.id, "action": action}
    if action in ("void", "keep"):
        if not isinstance(event, str) or event not in conflict.events:
            raise ApiError(400, "bad_event", f"event must be one of this conflict's events: "
                           f"{', '.join(conflict.events)}")
        if action == "keep" and len(conflict.events) < 2:
            raise ApiError(400, "nothing_to_void", "this conflict has no other event to void")
        body["event"] = event
    elif event is not None:
        raise ApiError(400, "bad_event", f"{action} takes no event")
    if action == "acknowledge" and conflict.needs_admin:
        raise ApiError(400, "bad_action", "only a warning can be acknowledged: this conflict needs settling")
    if note:
        body["note"] = note
    return ("resolve", body)


@routes.post(r"/api/v1/conflicts/{conflict:.+}/resolution")
async def resolution(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_json(request, ResolutionRequest)
    log = request.app[LOG]
    conflict_id = request.match_info["conflict"]
    state = log.state
    conflict = state.conflicts.get(conflict_id)
    if conflict is None or conflict not in state.open_conflicts():
        if conflict is not None and conflict_id in state.settled:
            raise ApiError(409, "already_settled", "this conflict was already settled")
        raise ApiError(404, "no_such_conflict", f"no open conflict {conflict_id[:300]!r} on this desk")
    if conflict.kind == c.RESOLUTIONS_DISAGREE and conflict.about:
        # the admins' answers disagree: a new answer to the conflict they are about, given after both
        about = state.conflicts.get(conflict.about)
        if about is None:
            raise ApiError(404, "no_such_conflict", "the conflict the answers are about is not on this desk")
        conflict = about
    note = body.note.strip() if body.note else None
    kind, event_body = plan(conflict, body.action, body.event, note)
    try:
        recorded: Event = await log.append(kind, event_body, request[STAFF])
    except EventError as e:
        raise ApiError(400, "bad_request", str(e)) from None
    except StorageFailure as e:
        raise ApiError(503, "storage_failure", f"this desk cannot save: {e}") from None
    return web.json_response({"conflict": conflict_id, "events": [request.app[VIEWS].event_json(recorded)]},
                             status=201)


@routes.post("/api/v1/snapshot/refresh")
async def snapshot_refresh(request: web.Request) -> web.Response:
    """Staff changed a patron at the ILS (a block lifted, a card renewed) and want the desks to know now."""
    require_admin(request)
    await read_json(request, EmptyRequest)
    refresher = request.app[REFRESHER]
    if refresher is None:
        raise ApiError(409, "not_the_bridge", "only the bridge desk reads the ILS: ask there")
    refresher.request()
    return web.json_response(request.app[STATUS].report()["snapshot"], status=202)
