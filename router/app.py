"""The HTTP surface: one composition root, middlewares, handlers.

`create_app` builds the aiohttp application: upstream clients start and stop
with it (cleanup_ctx), the rules live in a holder that a reload swaps
atomically, and every response gets X-Request-ID and X-Router-Upstream.
Errors from the core are mapped to statuses here and only here.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

from router.config.model import Rules
from router.core.errors import ProtocolError
from router.core.protocol import parse_request_target
from router.gateway import UPSTREAM_HEADER, Served, candidates_for, serve, text_response
from router.tasks import TaskGroup
from router.upstream import UpstreamClient

log = logging.getLogger("goproxy_router.app")

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass(slots=True)
class GatewayState:
    """Everything a request needs, swapped as a whole when rules reload."""

    rules: Rules
    clients: dict[str, UpstreamClient] = field(default_factory=dict)
    ready: bool = False
    draining: bool = False
    tasks: TaskGroup = field(default_factory=TaskGroup)


STATE = web.AppKey("state", GatewayState)
REQUEST_ID = web.RequestKey("request_id", str)
SERVED = web.RequestKey("served", Served)


def request_id(http: web.Request) -> str:
    """The client's X-Request-ID if it is sane, else a fresh one."""
    given = http.headers.get(REQUEST_ID_HEADER, "")
    return given if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


@web.middleware
async def identity_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every response carries X-Request-ID and X-Router-Upstream, errors included."""
    rid = request_id(request)
    request[REQUEST_ID] = rid
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        resp = text_response(exc.status, exc.reason)
        for name in ("Allow",):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
    if not resp.prepared:
        resp.headers[REQUEST_ID_HEADER] = rid
        resp.headers.setdefault(UPSTREAM_HEADER, "none")
    return resp


async def _prepare_headers(http: web.Request, resp: web.StreamResponse) -> None:
    """Streamed responses are prepared inside handlers; stamp them just before."""
    rid = http.get(REQUEST_ID)
    if rid is not None:
        resp.headers.setdefault(REQUEST_ID_HEADER, rid)
    resp.headers.setdefault(UPSTREAM_HEADER, "none")


async def healthz(http: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n")


async def readyz(http: web.Request) -> web.StreamResponse:
    state = http.app[STATE]
    if state.ready and not state.draining:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready\n")


async def goproxy(http: web.Request) -> web.StreamResponse:
    """Every GOPROXY and checksum-database request."""
    if http.method not in ("GET", "HEAD"):
        resp = text_response(405, f"method {http.method} not allowed: only GET and HEAD")
        resp.headers["Allow"] = "GET, HEAD"
        return resp
    try:
        request = parse_request_target(http.raw_path)
    except ProtocolError as exc:
        return text_response(exc.status, exc.reason)
    state = http.app[STATE]
    rules = state.rules
    pool = rules.pool(rules.default_pool)
    clients = candidates_for(request, pool, state.clients)
    served = Served()
    http[SERVED] = served
    headers = {REQUEST_ID_HEADER: http[REQUEST_ID]}
    return await serve(http, request, pool, clients, served, headers)


async def _clients_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    for up in state.rules.upstreams:
        client = UpstreamClient(up)
        await client.start()
        state.clients[up.name] = client
    state.ready = True
    yield
    state.ready = False
    await state.tasks.close()
    for client in state.clients.values():
        await client.close()


def create_app(rules: Rules) -> web.Application:
    """The gateway application for a validated rule set."""
    app = web.Application(middlewares=[identity_headers], handler_args={})
    app[STATE] = GatewayState(rules=rules)
    app.on_response_prepare.append(_prepare_headers)
    app.cleanup_ctx.append(_clients_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_route("*", "/{tail:.*}", goproxy)
    return app
