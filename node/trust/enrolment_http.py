"""Enrolment over HTTP: the admin desk's routes under `/enrol/` and the joining desk's client.

Plain HTTP is acceptable here (and unavoidable: the joiner has no certificate yet to do mutual TLS
with, and no CA to check the admin's): every message is authenticated by the code (see `enrolment`),
nothing secret is sent, and a machine in the middle can at most block the enrolment, never divert it.
Pass an `ssl_context` to the client when the admin desk serves these routes over HTTPS anyway.

Routes for the joining desk need no sign-in (the code is the credential). Routes for the admin (create
a code, list and approve pending requests) are added only when an `admin_guard` is given: a coroutine
that raises an aiohttp HTTP error unless the request comes from a signed-in admin.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.trust.admissions import AdmissionStore, admit_with_code, approve_pending
from node.trust.ca import CertificateAuthority
from node.trust.enrolment import (
    EnrolmentAnswer,
    EnrolmentError,
    EnrolmentResult,
    JoinRequest,
    derive_code_key,
    make_join_request,
    new_code,
    open_answer,
)

log = logging.getLogger(__name__)

BODY_LIMIT = 16 * 1024
ANSWER_LIMIT = 64 * 1024
MAX_WAIT = 25.0
STATUS = {
    "malformed": 400,
    "wrong_code": 403,
    "unknown_request": 404,
    "used": 410,
    "expired": 410,
    "burnt": 410,
    "busy": 429,
}

AdminGuard = Callable[[web.Request], Awaitable[None]]


def _error(exc: EnrolmentError) -> web.Response:
    return web.json_response(
        {"error": {"code": exc.reason, "message": str(exc)}}, status=STATUS.get(exc.reason, 400)
    )


async def _read_json(request: web.Request) -> dict[str, object]:
    if request.content_length is not None and request.content_length > BODY_LIMIT:
        raise EnrolmentError("malformed", "the request body is too large")
    body = await request.content.read(BODY_LIMIT + 1)
    if len(body) > BODY_LIMIT:
        raise EnrolmentError("malformed", "the request body is too large")
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise EnrolmentError("malformed", "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise EnrolmentError("malformed", "the request body must be a JSON object")
    return data


def enrolment_routes(
    store: AdmissionStore, ca: CertificateAuthority, *, admin_guard: AdminGuard | None = None
) -> list[web.RouteDef]:
    """The admin desk's enrolment endpoints, for `app.add_routes(...)`.

    Joining desk: `POST /enrol/join` (code first), `POST /enrol/requests` and
    `GET /enrol/requests/{id}?wait=S` (request first, long-polled).
    Admin (with `admin_guard`): `POST /enrol/codes {role?}`, `GET /enrol/pending`,
    `POST /enrol/pending/{id}/approve {code, role?}`, `POST /enrol/pending/{id}/reject`.
    """
    decided = asyncio.Condition()

    async def notify() -> None:
        async with decided:
            decided.notify_all()

    async def join(request: web.Request) -> web.Response:
        try:
            join_request = JoinRequest.from_json(await _read_json(request))
            answer = admit_with_code(store, ca, join_request)
        except EnrolmentError as exc:
            log.warning("enrolment refused for %s: %s", request.remote, exc)
            return _error(exc)
        log.info("enrolled desk %r as node %s", join_request.desk_name, join_request.node_id)
        return web.json_response(answer.to_json())

    async def submit(request: web.Request) -> web.Response:
        try:
            join_request = JoinRequest.from_json(await _read_json(request))
            request_id = store.submit(join_request, request.remote or "")
            expires_at = store.find_pending(request_id).expires
        except EnrolmentError as exc:
            return _error(exc)
        return web.json_response({"request_id": request_id, "expires_at": expires_at}, status=201)

    async def poll(request: web.Request) -> web.Response:
        request_id = request.match_info["request_id"]
        try:
            wait = min(max(float(request.query.get("wait", "0")), 0.0), MAX_WAIT)
        except ValueError:
            wait = 0.0
        try:
            state, answer = store.status(request_id)
            if state == "pending" and wait > 0:
                async with decided:
                    try:
                        await asyncio.wait_for(
                            decided.wait_for(lambda: store.status(request_id)[0] != "pending"), wait
                        )
                    except TimeoutError:
                        pass
                state, answer = store.status(request_id)
        except EnrolmentError as exc:
            return _error(exc)
        body: dict[str, object] = {"state": state}
        if answer is not None:
            body["answer"] = answer.to_json()
        return web.json_response(body)

    routes = [
        web.post("/enrol/join", join),
        web.post("/enrol/requests", submit),
        web.get("/enrol/requests/{request_id}", poll),
    ]
    if admin_guard is None:
        return routes
    guard = admin_guard

    async def create_code(request: web.Request) -> web.Response:
        await guard(request)
        try:
            role = (await _read_json(request)).get("role", "desk")
            code = new_code()
            key = await asyncio.to_thread(derive_code_key, code)
            issued = store.add_code(code, key, role)  # type: ignore[arg-type]
        except EnrolmentError as exc:
            return _error(exc)
        return web.json_response(asdict(issued), status=201)

    async def list_pending(request: web.Request) -> web.Response:
        await guard(request)
        return web.json_response({"requests": [asdict(p) for p in store.pending()]})

    async def approve(request: web.Request) -> web.Response:
        await guard(request)
        try:
            data = await _read_json(request)
            code = data.get("code")
            if not isinstance(code, str):
                raise EnrolmentError("malformed", "type the code shown on the joining desk")
            key = await asyncio.to_thread(derive_code_key, code)
            view = approve_pending(
                store, ca, request.match_info["request_id"], key, data.get("role", "desk")  # type: ignore[arg-type]
            )
        except EnrolmentError as exc:
            await notify()  # a burnt request is final: wake its joiner
            return _error(exc)
        await notify()
        return web.json_response(asdict(view))

    async def reject(request: web.Request) -> web.Response:
        await guard(request)
        try:
            store.reject(request.match_info["request_id"])
        except EnrolmentError as exc:
            return _error(exc)
        await notify()
        return web.json_response({"state": "rejected"})

    return [
        *routes,
        web.post("/enrol/codes", create_code),
        web.get("/enrol/pending", list_pending),
        web.post("/enrol/pending/{request_id}/approve", approve),
        web.post("/enrol/pending/{request_id}/reject", reject),
    ]


# --- the joining desk -----------------------------------------------------------------------------


def admin_base_url(admin: str) -> str:
    """`HOST:PORT` as typed on the command line, or a full URL."""
    return admin.rstrip("/") if "://" in admin else f"http://{admin}"


async def _call(
    method: str, url: str, payload: object | None, ssl_context: ssl.SSLContext | None, http_timeout: float
) -> dict[str, object]:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=http_timeout)) as session,
            session.request(
                method, url, json=payload, ssl=ssl_context if ssl_context is not None else True
            ) as resp,
        ):
            body = await resp.content.read(ANSWER_LIMIT + 1)
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise EnrolmentError("unreachable", f"cannot reach the admin desk at {url}: {exc}") from None
    if len(body) > ANSWER_LIMIT:
        raise EnrolmentError("malformed", "the admin desk's answer is too large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise EnrolmentError("malformed", f"the admin desk answered HTTP {status} without JSON") from None
    if not isinstance(data, dict):
        raise EnrolmentError("malformed", "the admin desk's answer is not a JSON object")
    if status >= 400:
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            raise EnrolmentError(str(err["code"]), str(err.get("message", "")))
        raise EnrolmentError("malformed", f"the admin desk answered HTTP {status}")
    return data


async def request_enrolment(
    admin_url: str,
    code: str,
    node_key: Ed25519PrivateKey,
    desk_name: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    http_timeout: float = 30.0,
) -> EnrolmentResult:
    """Code first: `circmesh join --admin HOST:PORT --code CODE`. Raises EnrolmentError."""
    key = await asyncio.to_thread(derive_code_key, code)
    join_request = make_join_request(key, node_key, desk_name)
    data = await _call("POST", f"{admin_base_url(admin_url)}/enrol/join", join_request.to_json(),
                       ssl_context, http_timeout)
    return open_answer(key, join_request, EnrolmentAnswer.from_json(data))


@dataclass(frozen=True)
class PendingJoin:
    """A join request waiting for an admin: show `code` on this desk's screen."""

    admin_url: str
    request_id: str
    code: str
    expires_at: float
    code_key: bytes
    request: JoinRequest


async def submit_join_request(
    admin_url: str,
    node_key: Ed25519PrivateKey,
    desk_name: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    http_timeout: float = 30.0,
) -> PendingJoin:
    """Request first: the desk makes up the code the admin will type to approve it."""
    code = new_code()
    key = await asyncio.to_thread(derive_code_key, code)
    join_request = make_join_request(key, node_key, desk_name)
    base = admin_base_url(admin_url)
    data = await _call("POST", f"{base}/enrol/requests", join_request.to_json(), ssl_context, http_timeout)
    request_id, expires_at = data.get("request_id"), data.get("expires_at")
    if not isinstance(request_id, str) or not isinstance(expires_at, int | float):
        raise EnrolmentError("malformed", "the admin desk did not file the request")
    return PendingJoin(base, request_id, code, float(expires_at), key, join_request)


async def wait_for_approval(
    pending: PendingJoin, *, give_up_after: float = 15 * 60.0, ssl_context: ssl.SSLContext | None = None
) -> EnrolmentResult:
    """Long-polls the admin desk until the request is approved, refused, or `give_up_after` s pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after
    url = f"{pending.admin_url}/enrol/requests/{pending.request_id}"
    while (remaining := deadline - loop.time()) > 0:
        wait = min(MAX_WAIT, remaining)
        data = await _call("GET", f"{url}?wait={wait:.1f}", None, ssl_context, wait + 10.0)
        state = data.get("state")
        if state == "approved":
            answer = EnrolmentAnswer.from_json(data.get("answer"))
            return open_answer(pending.code_key, pending.request, answer)
        if state != "pending":
            raise EnrolmentError(str(state), f"the admin desk did not admit this desk (request {state})")
    raise EnrolmentError("timeout", "no admin approved the join request in time")
