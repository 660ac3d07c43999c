"""The desk API described as OpenAPI 3.1, built from the same msgspec types that validate requests.

Served at `/api/v1/openapi.json` (public, like the web UI's files: it holds nothing about the library).
Every operation lists every status it can answer: schemathesis checks that against a running desk in
`scripts/test`, so an answer the document does not promise is a failing test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from node import __version__
from node.api import schemas as s

JSON = "application/json"
ERRORS = {
    400: "the request is malformed or out of bounds; nothing was recorded",
    401: "no session, or it has expired",
    403: "refused: another site, a missing CSRF token, or not an admin",
    413: "the body is too large",
    429: "too many attempts: wait and try again",
    503: "this desk cannot save: nothing more is recorded here",
}


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    summary: str
    answers: dict[int, tuple[str, type | None]]
    request: type | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw_request: str | None = None  # a content type whose body is not JSON (offline files)
    raw_answer: str | None = None
    public: bool = False


MULTIPART = "multipart/form-data"
_BARCODE_PARAM = {"type": "string", "minLength": 1, "maxLength": 72}
_INT = {"type": "string", "pattern": r"^[0-9]{1,19}$"}

OPERATIONS = [
    Op("post", "/api/v1/session", "Sign in: a session cookie for the browser, a bearer token for scripts",
       {200: ("signed in", s.SessionAnswer), 401: ("wrong name or password", s.ErrorAnswer)},
       s.SignInRequest, public=True),
    Op("get", "/api/v1/session", "Who is signed in", {200: ("the session", s.SessionAnswer)}),
    Op("delete", "/api/v1/session", "Sign out", {200: ("signed out", None)}),
    Op("post", "/api/v1/checkouts", "Lend an item to a patron",
       {201: ("recorded (durable on this desk)", s.ScanAnswer),
        409: ("needs a deliberate override: staff must see the warnings first", s.ErrorAnswer)},
       s.CheckoutRequest),
    Op("post", "/api/v1/checkins", "Check an item in", {201: ("recorded", s.ScanAnswer)}, s.CheckinRequest),
    Op("post", "/api/v1/renewals", "Renew a loan", {201: ("recorded", s.ScanAnswer)}, s.RenewalRequest),
    Op("post", "/api/v1/payments", "Record a payment", {201: ("recorded", s.ScanAnswer)}, s.PaymentRequest),
    Op("post", "/api/v1/in-house-uses", "Record an in-house use", {201: ("recorded", s.ScanAnswer)},
       s.InHouseUseRequest),
    Op("post", "/api/v1/registrations", "Register a patron offline", {201: ("recorded", s.ScanAnswer)},
       s.RegistrationRequest),
    Op("get", "/api/v1/loans", "Open loans, from every desk", {200: ("loans", s.LoansAnswer)},
       query={"patron": _BARCODE_PARAM, "item": _BARCODE_PARAM}),
    Op("get", "/api/v1/patrons/{barcode}", "A patron as this desk knows them", {200: ("the patron", s.PatronAnswer)},
       path_params={"barcode": _BARCODE_PARAM}),
    Op("get", "/api/v1/patrons", "Find patrons by name", {200: ("matches", s.PatronSearchAnswer)},
       query={"q": {"type": "string", "minLength": 1, "maxLength": 100}}),
    Op("get", "/api/v1/items/{barcode}", "An item as this desk knows it", {200: ("the item", s.ItemAnswer)},
       path_params={"barcode": _BARCODE_PARAM}),
    Op("get", "/api/v1/events", "Events that arrived after a cursor, in causal order",
       {200: ("a page of events", s.EventsPage)}, query={"after": _INT, "limit": _INT}),
    Op("get", "/api/v1/conflicts", "Open conflicts, quarantined events and disagreeing answers",
       {200: ("conflicts", s.ConflictsAnswer)}),
    Op("post", "/api/v1/conflicts/{conflict}/resolution", "Settle a conflict (admins)",
       {201: ("the settling event, recorded", s.ResolutionAnswer),
        404: ("no such open conflict", s.ErrorAnswer), 409: ("already settled", s.ErrorAnswer)},
       s.ResolutionRequest, path_params={"conflict": {"type": "string", "minLength": 1, "maxLength": 300}}),
    Op("get", "/api/v1/status", "This desk, its peers, the bridge, the upload", {200: ("status", s.StatusAnswer)}),
    Op("get", "/api/v1/outcomes", "The upload report: the ILS's answer to every event",
       {200: ("rows, newest first", s.OutcomesAnswer)},
       query={"status": {"type": "string", "enum": ["", "applied", "refused", "pending"]},
              "q": {"type": "string", "maxLength": 100}, "limit": _INT}),
    Op("get", "/api/v1/export", "The merged log as an offline file",
       {200: ("the file", None)}, query={"format": {"type": "string", "enum": ["koc", "offcirc", "evergreen"]},
                                         "tz": {"type": "string", "maxLength": 64}},
       raw_answer="application/octet-stream"),
    Op("post", "/api/v1/imports", "Import an offline file: every line or none (unless skip_errors=true)",
       {201: ("recorded", s.ImportAnswer), 422: ("bad lines: nothing recorded", s.ImportAnswer)},
       query={"format": {"type": "string", "enum": ["koc", "offcirc", "evergreen"]},
              "skip_errors": {"type": "string", "enum": ["true", "false"]},
              "tz": {"type": "string", "maxLength": 64}, "name": {"type": "string", "maxLength": 80}},
       raw_request="application/octet-stream"),
    Op("get", "/api/v1/desks", "The cluster's desks and join requests", {200: ("desks", None)}),
    Op("post", "/api/v1/enrolment/codes", "A one-time code for a new desk (admins, on the CA desk)",
       {201: ("the code", s.CodeAnswer), 409: ("this desk does not hold the CA", s.ErrorAnswer)},
       s.CodeRequest),
    Op("post", "/api/v1/enrolment/pending/{id}/approve", "Approve a desk's join request (admins)",
       {200: ("approved", None), 404: ("no such request", s.ErrorAnswer),
        409: ("this desk does not hold the CA", s.ErrorAnswer)},
       s.ApproveRequest, path_params={"id": {"type": "string", "maxLength": 100}}),
    Op("post", "/api/v1/enrolment/pending/{id}/reject", "Reject a desk's join request (admins)",
       {200: ("rejected", None), 404: ("no such request", s.ErrorAnswer),
        409: ("this desk does not hold the CA", s.ErrorAnswer)},
       path_params={"id": {"type": "string", "maxLength": 100}}),
    Op("post", "/api/v1/desks/{node}/away", "Mark a desk away (admins)",
       {201: ("recorded", s.EventAnswer), 404: ("no such desk", s.ErrorAnswer),
        409: ("already revoked", s.ErrorAnswer)},
       s.EmptyRequest, path_params={"node": {"type": "string", "maxLength": 64}}),
    Op("post", "/api/v1/desks/{node}/revocation", "Revoke a desk (admins)",
       {201: ("recorded", s.EventAnswer), 404: ("no such desk", s.ErrorAnswer),
        409: ("already revoked", s.ErrorAnswer)},
       s.RevocationRequest, path_params={"node": {"type": "string", "maxLength": 64}}),
    Op("post", "/api/v1/snapshot/refresh", "Refresh the ILS snapshot of patrons and items now (admins, on the bridge)",
       {202: ("started", s.SnapshotStatus), 409: ("this desk is not the bridge", s.ErrorAnswer)}, s.EmptyRequest),
    Op("post", "/api/v1/snapshot/import", "Build the snapshot from files: a patrons part (Koha's patron export "
       "columns) and an optional items part, CSV (admins)",
       {202: ("started", s.SnapshotStatus), 400: ("not the parts asked for", s.ErrorAnswer),
        409: ("a build from files is running", s.ErrorAnswer)}, raw_request=MULTIPART),
    Op("get", "/api/v1/ui-config", "Settings the desk screens need", {200: ("settings", None)}, public=True),
]


def _parameters(op: Op) -> list[dict[str, Any]]:
    out = [{"name": name, "in": "path", "required": True, "schema": schema}
           for name, schema in op.path_params.items()]
    out += [{"name": name, "in": "query", "required": False, "schema": schema} for name, schema in op.query.items()]
    return out


def build_openapi() -> dict[str, Any]:
    types = sorted({t for op in OPERATIONS for t in [op.request, *(a[1] for a in op.answers.values()),
                                                     s.ErrorAnswer] if t is not None}, key=lambda t: t.__name__)
    refs, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    ref_of = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        responses: dict[str, Any] = {}
        for status, (text, kind) in sorted(op.answers.items()):
            content: dict[str, Any] = {}
            if op.raw_answer and status < 300:
                content = {op.raw_answer: {"schema": {"type": "string", "format": "binary"}}}
            else:
                content = {JSON: {"schema": ref_of[kind] if kind else {"type": "object"}}}
            responses[str(status)] = {"description": text, "content": content}
        error = {JSON: {"schema": ref_of[s.ErrorAnswer]}}
        for status, text in ERRORS.items():
            responses.setdefault(str(status), {"description": text, "content": error})
        if op.path_params:
            responses.setdefault("404", {"description": "not found", "content": error})
        entry: dict[str, Any] = {"summary": op.summary, "operationId": f"{op.method}_{op.path}",
                                 "responses": responses}
        if not op.public:
            entry["security"] = [{"bearer": []}, {"session": []}]
        else:
            entry["security"] = []
        params = _parameters(op)
        if params:
            entry["parameters"] = params
        if op.request is not None:
            entry["requestBody"] = {"required": True, "content": {JSON: {"schema": ref_of[op.request]}}}
        elif op.raw_request == MULTIPART:
            files = {"type": "object", "required": ["patrons"], "properties": {
                "patrons": {"type": "string", "format": "binary"}, "items": {"type": "string", "format": "binary"}}}
            entry["requestBody"] = {"required": True, "content": {MULTIPART: {"schema": files}}}
        elif op.raw_request:
            entry["requestBody"] = {"required": True,
                                    "content": {op.raw_request: {"schema": {"type": "string", "format": "binary"}}}}
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "circmesh desk API", "version": __version__,
                 "description": "The API every circmesh desk serves on its own address. Sign in with "
                                "POST /api/v1/session, then send Authorization: Bearer TOKEN."},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                "session": {"type": "apiKey", "in": "cookie", "name": "circmesh_session"}},
        },
    }


routes = web.RouteTableDef()
_DOCUMENT: dict[str, Any] | None = None


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = build_openapi()
    return web.json_response(_DOCUMENT)
