"""Who is at the desk: staff sign-in, sessions, CSRF, and the one middleware every request passes.

- The browser signs in with `POST /api/v1/session {name, password}` and gets an HttpOnly, SameSite=Strict
  session cookie named after this node (two desks on one host do not overwrite each other's cookie),
  plus a CSRF token that the page sends as `X-CSRF-Token` on every unsafe request.
- Scripts send the same session's token as `Authorization: Bearer TOKEN`; browsers never attach that
  header by themselves, so it needs no CSRF token.
- The web UI's files and the sign-in itself are public; everything else under /api/ needs a session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import hdrs, web

from node.api.errors import ApiError, json_body
from node.api.sessions import Session, SessionStore, SignInThrottle, csrf_matches
from node.api.users import UserStore

STAFF = web.RequestKey("staff", str)
ROLE = web.RequestKey("role", str)
SESSIONS: web.AppKey[SessionStore] = web.AppKey("sessions", SessionStore)
USERS: web.AppKey[UserStore] = web.AppKey("users", UserStore)
THROTTLES: web.AppKey[tuple[SignInThrottle, SignInThrottle]] = web.AppKey("throttles", tuple)
COOKIE: web.AppKey[str] = web.AppKey("cookie", str)
HASHING: web.AppKey[asyncio.Semaphore] = web.AppKey("hashing", asyncio.Semaphore)

CSRF_HEADER = "X-CSRF-Token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PUBLIC_API = frozenset({("POST", "/api/v1/session"), ("GET", "/api/v1/ui-config"), ("GET", "/api/v1/openapi.json")})
ADDRESS_FREE_FAILURES = 20  # one desk PC is one address: let a few people mistype before it slows down

routes = web.RouteTableDef()


def setup_auth(app: web.Application, data_dir: Path, node_id: str,
               sessions: SessionStore | None = None) -> None:
    app[USERS] = UserStore(data_dir)
    app[SESSIONS] = sessions or SessionStore()
    app[THROTTLES] = (SignInThrottle(), SignInThrottle(free=ADDRESS_FREE_FAILURES))
    app[COOKIE] = f"circmesh_{node_id[:16]}"
    app[HASHING] = asyncio.Semaphore(2)  # argon2 takes 64 MiB and tens of ms: at most two at a time


def _bearer(request: web.Request) -> str | None:
    value = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _same_origin(request: web.Request) -> bool:
    """False only when the browser says the request comes from another site."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return True
    return origin == f"{request.scheme}://{request.host}"


def _current(request: web.Request) -> tuple[Session | None, bool]:
    """The request's session and whether it came by cookie (which needs the CSRF check)."""
    sessions = request.app[SESSIONS]
    token = _bearer(request)
    if token is not None:
        return sessions.get(token), False
    cookie = request.cookies.get(request.app[COOKIE])
    return (sessions.get(cookie), True) if cookie else (None, False)


def _still_allowed(request: web.Request, session: Session) -> bool:
    """A user removed or given another role since signing in loses the session at the next request."""
    user = request.app[USERS].get(session.name)
    if user is None:
        return False
    session.role = user.role
    return True


@web.middleware
async def staff_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    path = request.path
    if not path.startswith("/api/"):
        return await handler(request)  # the web UI's own files
    if (request.method, path) in PUBLIC_API:
        if request.method in UNSAFE and not _same_origin(request):
            raise ApiError(403, "cross_site", "sign-in from another site is refused")
        return await handler(request)
    session, by_cookie = _current(request)
    if session is None or not _still_allowed(request, session):
        raise ApiError(401, "signed_out", "sign in first: no session, or it has expired")
    if by_cookie:
        if not _same_origin(request):
            raise ApiError(403, "cross_site", "requests from another site are refused")
        if request.method in UNSAFE and not csrf_matches(session, request.headers.get(CSRF_HEADER)):
            raise ApiError(403, "csrf", f"the {CSRF_HEADER} header is missing or wrong; reload the page")
    request[STAFF] = session.name
    request[ROLE] = session.role
    return await handler(request)


def require_admin(request: web.Request) -> None:
    if request[ROLE] != "admin":
        raise ApiError(403, "admin_only", "only an admin can do this")


def _session_json(request: web.Request, session: Session) -> dict[str, object]:
    store = request.app[SESSIONS]
    return {"name": session.name, "role": session.role, "csrf": session.csrf,
            "idle_s": store.idle_s, "absolute_s": store.absolute_s}


@routes.post("/api/v1/session")
async def sign_in(request: web.Request) -> web.Response:
    body = await json_body(request, {"name", "password"}, {"name", "password"})
    name, password = body["name"], body["password"]
    if not isinstance(name, str) or not isinstance(password, str) or len(name) > 200 or len(password) > 1024:
        raise ApiError(400, "bad_request", "name and password must be text")
    by_name, by_address = request.app[THROTTLES]
    keys_name, keys_addr = [f"name:{name.strip().casefold()}"], [f"addr:{request.remote or '?'}"]
    wait = max(by_name.wait_s(keys_name), by_address.wait_s(keys_addr))
    if wait > 0:
        seconds = int(wait) + 1
        raise ApiError(429, "throttled", f"too many wrong passwords: try again in {seconds} s",
                       retry_after=seconds)
    async with request.app[HASHING]:
        user = await asyncio.to_thread(request.app[USERS].verify, name, password)
    if user is None:
        wait = max(by_name.failed(keys_name), by_address.failed(keys_addr))
        extra = {"retry_after": int(wait) + 1} if wait > 0 else {}
        raise ApiError(401, "bad_password", "wrong name or password", **extra)
    by_name.succeeded(keys_name)
    by_address.succeeded(keys_addr)
    issued = request.app[SESSIONS].create(user.name, user.role)
    answer = {"token": issued.token, "role": user.role, **_session_json(request, issued.session)}
    response = web.json_response(answer)
    response.set_cookie(request.app[COOKIE], issued.token, httponly=True, samesite="Strict", path="/",
                        secure=request.secure)
    return response


@routes.get("/api/v1/session")
async def who(request: web.Request) -> web.Response:
    session, _ = _current(request)
    assert session is not None  # the middleware let it through
    return web.json_response(_session_json(request, session))


@routes.delete("/api/v1/session")
async def sign_out(request: web.Request) -> web.Response:
    token = _bearer(request) or request.cookies.get(request.app[COOKIE])
    request.app[SESSIONS].end(token)
    response = web.json_response({"signed_out": True})
    response.del_cookie(request.app[COOKIE], path="/")
    return response
