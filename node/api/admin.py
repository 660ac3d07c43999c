"""An admin settles a conflict: `POST /api/v1/conflicts/{id}/resolution {action, event?, note?}`.

Settling is itself an event in the log, so it replicates and the conflict disappears on every desk:
- `void`: the named event of the conflict is voided (a `void` event; the fold then ignores it).
- `keep`: the named event is kept and every other event of the conflict is voided.
- `accept_ils`: nothing of the conflict is uploaded as it stands; the ILS's own state wins (`resolve`).
- `apply`: the events are uploaded anyway, in causal order (`resolve`).
- `acknowledge`: a warning that holds nothing back (a desk's clock ahead) is noted (`resolve`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from node.api.auth import STAFF, require_admin
from node.api.errors import ApiError, json_body
from node.api.keys import NODE
from node.crdt.conflicts import Conflict
from node.crdt.event import Event, EventError
from node.eventlog import StorageFailure

routes = web.RouteTableDef()
ACTIONS = ("void", "keep", "accept_ils", "apply", "acknowledge")
MAX_NOTE = 500


def plan(conflict: Conflict, action: str, event: str | None, note: str | None
         ) -> list[tuple[str, dict[str, Any]]]:
    """The events (kind, body) that settle `conflict` this way; raises ApiError if it cannot."""
    if action not in ACTIONS:
        raise ApiError(400, "bad_action", f"action must be one of {', '.join(ACTIONS)}")
    if action in ("void", "keep"):
        if not isinstance(event, str) or event not in conflict.events:
            raise ApiError(400, "bad_event", f"event must be one of this conflict's events: "
                           f"{', '.join(conflict.events)}")
        doomed = [event] if action == "void" else [e for e in conflict.events if e != event]
        if not doomed:
            raise ApiError(400, "nothing_to_void", "this conflict has no other event to void")
        reason = note or (f"conflict {conflict.id}: voided" if action == "void"
                          else f"conflict {conflict.id}: kept {event}")
        return [("void", {"event": e, "reason": reason[:MAX_NOTE]}) for e in doomed]
    if event is not None:
        raise ApiError(400, "bad_event", f"{action} takes no event")
    if action == "acknowledge" and conflict.needs_admin:
        raise ApiError(400, "bad_action", "only a warning can be acknowledged: this conflict needs settling")
    body: dict[str, Any] = {"conflict": conflict.id, "action": action}
    if note:
        body["note"] = note
    return [("resolve", body)]


def _note(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_NOTE or any(ord(c) < 32 for c in value):
        raise ApiError(400, "bad_note", f"note must be text of at most {MAX_NOTE} printable characters")
    return value.strip() or None


@routes.post(r"/api/v1/conflicts/{conflict:.+}/resolution")
async def resolution(request: web.Request) -> web.Response:
    require_admin(request)
    body = await json_body(request, {"action", "event", "note"}, {"action"})
    node = request.app[NODE]
    conflict_id = request.match_info["conflict"]
    state = node.log.state
    conflict = state.conflicts.get(conflict_id)
    if conflict is None:
        raise ApiError(404, "no_such_conflict", f"no open conflict {conflict_id!r} on this desk")
    if conflict_id in state.settled:
        raise ApiError(409, "already_settled", "this conflict was already settled")
    steps = plan(conflict, body["action"], body.get("event"), _note(body.get("note")))
    recorded: list[Event] = []
    try:
        for kind, event_body in steps:
            recorded.append(await node.log.append(kind, event_body, request[STAFF]))
        still_open = any(c.id == conflict_id for c in node.log.state.open_conflicts())
        if body["action"] in ("void", "keep") and still_open:
            # A rule that still sees the conflict after the voids: settle it explicitly too.
            recorded.append(await node.log.append(
                "resolve", {"conflict": conflict_id, "action": body["action"]}, request[STAFF]))
    except EventError as e:
        raise ApiError(400, "bad_request", str(e)) from None
    except StorageFailure as e:
        raise ApiError(503, "storage_failure", f"this desk cannot save: {e}") from None
    return web.json_response({"conflict": conflict_id, "events": [node.event_json(e) for e in recorded]},
                             status=201)
