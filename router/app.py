"""The HTTP surface: handlers over the services of the composition root.

`create_app` builds the services (`router.services.build`), puts each under its typed
app key (`router.appkeys`) and starts and stops them with the application
(cleanup_ctx); the current `Runtime` (rules and what is compiled from them) is swapped
whole on reload, and every response gets X-Request-ID and X-Router-Upstream. The
request flow is parse -> identify -> decide -> fetch -> answer; errors from the core
are mapped to statuses here and only here.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import AbstractRoute, UrlMappingMatchInfo

from router import tracing
from router.appkeys import (
    ACCESS_LOG,
    ANSWERS,
    CHECKSUMS,
    JOBS,
    LIMITS,
    LIVE,
    METRICS,
    REDIS_SYNC,
    RELOADER,
    ROLLOUTS,
    SELECTION,
    TASKS,
    TRACER,
)
from router.checksums import ChecksumDatabase, Verification
from router.core.errors import ProtocolError
from router.core.fallback import Outcome
from router.core.jobviews import JOB_HEADER, JobTarget, split_job
from router.core.model import Pool, Rules, Server
from router.core.plan import Asked, Plan, Ranked, Refused, decide_once, rank
from router.core.protocol import Kind, ModuleRequest, SumdbRequest
from router.core.tenancy import REALM, Identity, Refusal, identify
from router.debug import (
    debug_abuse,
    debug_explain,
    debug_job_drop,
    debug_job_show,
    debug_purge,
    debug_rollout_reset,
    debug_store_gc,
    debug_upstreams,
)
from router.jobviews import Answer
from router.observability import status_class
from router.policygate import warning_header
from router.rollouts import RolloutPick
from router.runtime import Runtime, UpstreamFactory
from router.sending import abort
from router.services import Services, build, start, stop
from router.serving.cache import direct
from router.serving.job import Job
from router.serving.record import Served
from router.serving.responses import UPSTREAM_HEADER, text_response
from router.upstream import UpstreamClient
from router.warming import debug_warm

log = logging.getLogger("goproxy_router.app")

REQUEST_ID_HEADER = "X-Request-ID"
# Attempt outcomes that count against an upstream's health (not-found and 403 do not).
_HEALTH_FAILURES = frozenset({Outcome.ERROR, Outcome.TIMEOUT, Outcome.UNREACHABLE})
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


REQUEST_ID = web.RequestKey("request_id", str)
SERVED = web.RequestKey("served", Served)
STARTED = web.RequestKey("started", web.StreamResponse)
JOB = web.RequestKey("job", JobTarget)


def request_id(http: web.Request) -> str:
    """The client's X-Request-ID if it is sane, else a fresh one: 32 hex digits, a random
    prefix per process and a counter (unique without a system call per request)."""
    given = http.headers.get(REQUEST_ID_HEADER, "")
    if given and _VALID_REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFF_FFFF_FFFF:012x}"


_ID_PREFIX = uuid.uuid4().hex[:20]
_ID_COUNTER = itertools.count()


def guarded(handler: Handler) -> Handler:
    """Every response carries X-Request-ID and X-Router-Upstream, errors included; a
    failure after an answer has started breaks the connection instead of answering.
    (A wrapper per route rather than a middleware: aiohttp's middleware chain costs
    more per request than the whole cached answer.)"""

    @functools.wraps(handler)
    async def guard(request: web.Request) -> web.StreamResponse:
        rid = request_id(request)
        request[REQUEST_ID] = rid
        resp: web.StreamResponse
        try:
            if request.method == "CONNECT":
                resp = text_response(405, "CONNECT not allowed: this is not an open proxy")
                resp.headers["Allow"] = "GET, HEAD"
            elif not request.raw_path.startswith("/"):
                resp = text_response(
                    400, "request target must be a path: this is not an open proxy"
                )
            else:
                resp = await handler(request)
        except (asyncio.CancelledError, ConnectionError):
            raise
        except web.HTTPException as exc:
            _no_second_answer(request, exc)
            resp = text_response(exc.status, exc.reason)
        except Exception as exc:
            _no_second_answer(request, exc)
            # A bug must never show a traceback to a client: log it, answer one line.
            log.exception("unhandled error serving request %s", rid)
            resp = text_response(500, f"internal error (request {rid})")
        if not resp.prepared:
            headers = resp.headers
            headers[REQUEST_ID_HEADER] = rid
            if UPSTREAM_HEADER not in headers:
                headers[UPSTREAM_HEADER] = "none"
        return resp

    return guard


def _no_second_answer(http: web.Request, exc: BaseException) -> None:
    """Once an answer has started, an error cannot be answered: the connection is broken
    (the client sees a short body) rather than a second answer written after the first,
    which would hand every later request on the connection the previous one's answer."""
    if STARTED not in http:
        return
    log.error(
        "request %s failed after its answer started (%s): connection dropped",
        http.get(REQUEST_ID),
        type(exc).__name__,
        exc_info=not isinstance(exc, web.HTTPException),
    )
    abort(http)
    raise ConnectionResetError("answer already started") from exc


async def _prepare_headers(http: web.Request, resp: web.StreamResponse) -> None:
    """At most one answer per request: a second one breaks the connection instead. Also
    stamps streamed responses (prepared inside handlers) just before they start."""
    started = http.get(STARTED)
    if started is not None and started is not resp:
        log.error(
            "request %s: a second answer after the first; connection dropped", http.get(REQUEST_ID)
        )
        abort(http)
        raise ConnectionResetError("answer already started")
    http[STARTED] = resp
    rid = http.get(REQUEST_ID)
    if rid is not None:
        resp.headers.setdefault(REQUEST_ID_HEADER, rid)
    resp.headers.setdefault(UPSTREAM_HEADER, "none")


async def healthz(http: web.Request) -> web.StreamResponse:
    return web.Response(text="ok\n")


async def readyz(http: web.Request) -> web.StreamResponse:
    """Ready while rules are loaded and not draining. A storage tier that cannot be
    written is reported but keeps the gateway ready: it serves without keeping."""
    live = http.app[LIVE]
    if not live.ready or live.draining:
        return web.Response(status=503, text="not ready\n")
    lines = ["ready"]
    for tier, why in http.app[ANSWERS].spools.health.degraded().items():
        lines.append(f"degraded: {tier} storage: {why} (serving without keeping)")
    return web.Response(text="\n".join(lines) + "\n")


async def metrics(http: web.Request) -> web.StreamResponse:
    body, ctype = http.app[METRICS].exposition()
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = ctype
    return resp


def _refusal_response(refusal: Refusal) -> web.Response:
    resp = text_response(refusal.status, refusal.reason)
    if refusal.challenge:
        resp.headers["WWW-Authenticate"] = f'Basic realm="{REALM}"'
    return resp


async def goproxy(svc: Services, http: web.Request) -> web.StreamResponse:
    """Every GOPROXY and checksum-database request: parse, identify, decide, fetch."""
    started = time.monotonic()
    served = Served(trace=tracing.parse(http.headers))
    http[SERVED] = served
    request: ModuleRequest | SumdbRequest | None = None
    who: Identity | None = None
    resp: web.StreamResponse | None = None
    try:
        if http.method not in ("GET", "HEAD"):
            resp = text_response(405, f"method {http.method} not allowed: only GET and HEAD")
            resp.headers["Allow"] = "GET, HEAD"
            return resp
        job = http[JOB] = split_job(http.raw_path, http.headers.get(JOB_HEADER))
        if job.problem is not None:  # /job/ID/... or X-CI-Job-ID (router.core.jobviews)
            resp = text_response(400, job.problem)
            return resp
        try:
            request = svc.parse(job.path)
        except ProtocolError as exc:
            resp = text_response(exc.status, exc.reason)
            return resp
        rt = svc.live.current
        found = identify(
            rt.tenants,
            authorization=http.headers.get("Authorization"),
            tenant_header=http.headers.get("X-Tenant-ID"),
            peer=http.remote,
            cert_names=peer_cert_names(http),
        )
        if isinstance(found, Refusal):
            svc.metrics.auth_failures.labels(str(found.status)).inc()
            resp = _refusal_response(found)
            return resp
        who = found
        pull = request.kind is Kind.ZIP and http.method == "GET"
        if svc.limits.enabled:
            over = svc.limits.check(who, http.remote, http.headers.get("User-Agent", ""), pull)
            if over is not None:
                resp = text_response(429, over.reason)
                resp.headers["Retry-After"] = str(over.retry_after)
                return resp
        slot = f"{who.tenant_id or ''}|{http.remote}" if pull else None
        server = rt.rules.server
        if slot is not None and not await svc.streams.take(
            slot, server.streams_per_client, server.stall_timeout
        ):
            slot = None  # none was taken
            resp = _too_many_streams(svc, who, server)
            return resp
        svc.metrics.in_flight.inc()
        try:
            attrs = {"goproxy.kind": request.kind.value, "goproxy.tenant": who.tenant_id or ""}
            with svc.tracer.request(served.trace, "goproxy.request", attrs) as ctx:
                served.trace = ctx
                resp = await _decide_and_serve(http, svc, rt, who, request, served)
        finally:
            svc.metrics.in_flight.dec()
            if slot is not None:
                svc.streams.give_back(slot)
        _observe(svc, who, request, served, resp.status, time.monotonic() - started)
        return resp
    finally:
        _access_log(svc, http, request, who, served, resp, time.monotonic() - started)


def _too_many_streams(svc: Services, who: Identity, server: Server) -> web.Response:
    svc.metrics.rate_limited.labels(who.tenant_id or "anonymous", "streams").inc()
    resp = text_response(
        429,
        f"too many downloads at once from this client: {server.streams_per_client} "
        f"(server.streams_per_client) were still running after {server.stall_timeout:g}s",
    )
    resp.headers["Retry-After"] = "1"
    return resp


def peer_cert_names(http: web.Request) -> list[str]:
    """CN and DNS/URI SANs of a verified client certificate (mutual TLS), if any."""
    transport = http.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return []
    names: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.append(value)
    for kind, value in cert.get("subjectAltName", ()):
        if kind in ("DNS", "URI"):
            names.append(value)
    return names


def _body_length(resp: web.StreamResponse | None) -> int:
    if isinstance(resp, web.Response) and resp.body_length:
        return int(resp.body_length)
    return 0


def _access_log(
    svc: Services,
    http: web.Request,
    request: ModuleRequest | SumdbRequest | None,
    who: Identity | None,
    served: Served,
    resp: web.StreamResponse | None,
    seconds: float,
) -> None:
    if not svc.access_log.enabled:
        return
    status = served.status if served.status >= 500 else (resp.status if resp is not None else 499)
    svc.access_log.emit_safely(
        {
            "request_id": http.get(REQUEST_ID),
            "method": http.method,
            "tenant": who.tenant_id if who is not None else None,
            "kind": request.kind.value if request is not None else None,
            "module": request.module if request is not None else None,
            "version": request.version if request is not None else None,
            "route": served.route,
            "pool": served.pool,
            "upstream": served.upstream,
            "cache": served.cache,
            "status": status,
            "bytes": served.bytes or _body_length(resp),
            "duration_ms": round(seconds * 1000, 2),
            "attempts": [f"{a.upstream}:{a.outcome.value}" for a in served.attempts],
            "fallbacks": max(0, len(served.attempts) - 1),
            "client": http.remote,
            "user_agent": http.headers.get("User-Agent", "")[:200],
            "trace_id": served.trace.trace_id if served.trace is not None else None,
            "ci_job": http[JOB].logged if JOB in http else None,
            "policy": served.policy,
        }
    )


async def _decide_and_serve(
    http: web.Request,
    svc: Services,
    rt: Runtime,
    who: Identity,
    request: ModuleRequest | SumdbRequest,
    served: Served,
) -> web.StreamResponse:
    """Execute the plan `router.core.plan` makes for this request: decisions are all
    there; this only looks up caches, fetches and answers."""
    job = http[JOB]
    asked = Asked(http.method, http.headers, job.job, job.offline)
    decided = decide_once(rt.compiled, request, who, asked)
    if isinstance(decided, Refused):
        return await _refused(svc, who, decided)
    served.decided(decided.pool.name, decided.route.route)
    answer = functools.partial(_gated, http, svc, rt, who, decided, served)
    return await _in_job_view(http, svc, decided, served, answer)


async def _in_job_view(
    http: web.Request, svc: Services, decided: Plan, served: Served, answer: Answer
) -> web.StreamResponse:
    """Through the request's CI job view (router.jobviews) when its answer is pinned
    there or served offline; else `answer()` as it is."""
    if decided.pinned or decided.offline:
        return await svc.jobs.serve(http, decided, served, answer, svc.answers)
    return await answer()


async def _gated(
    http: web.Request,
    svc: Services,
    rt: Runtime,
    who: Identity,
    decided: Plan,
    served: Served,
) -> web.StreamResponse:
    """Under a policy, the answer the caches and upstreams give, judged and filtered."""
    if decided.policy is not None:
        execute = functools.partial(_execute, http, svc, rt, decided, served)
        lookup = functools.partial(_lookup, http, svc, rt, who, served)
        return await svc.policy.serve(http, decided, served, execute, lookup)
    return await _execute(http, svc, rt, decided, served)


async def _execute(
    http: web.Request, svc: Services, rt: Runtime, decided: Plan, served: Served
) -> web.StreamResponse:
    """A decided request through the caches, then the upstreams."""
    hit = svc.answers.fast_hit(decided.request, decided.key, served)
    if hit is not None:
        return hit  # a fresh cache hit needs no upstream ranking
    sel = svc.selection
    with svc.tracer.span(served.trace, "selection", {"goproxy.pool": decided.pool.name}):
        ranked = rank(decided, sel, svc.rollouts.trackers, sel.rng, sel.now())
    return await _fetch(http, svc, rt, decided, ranked, served)


async def _lookup(
    http: web.Request,
    svc: Services,
    rt: Runtime,
    who: Identity,
    served: Served,
    request: ModuleRequest,
) -> web.StreamResponse:
    """A GET of `request` (an .info or a list the policy needs) as this client would be
    served it: decided, then cached and coalesced like any request; never prepared."""
    job = http[JOB]
    decided = decide_once(
        rt.compiled, request, who, Asked("GET", http.headers, job.job, job.offline)
    )
    if isinstance(decided, Refused):
        return text_response(decided.status, decided.reason)
    inner = http if http.method == "GET" else http.clone(method="GET")
    looked = Served(trace=served.trace)
    answer = functools.partial(_execute, inner, svc, rt, decided, looked)
    return await _in_job_view(inner, svc, decided, looked, answer)  # as the job sees it


async def _refused(svc: Services, who: Identity, refused: Refused) -> web.Response:
    tenant = who.tenant_id or "anonymous"
    if refused.counted == "access_denied":
        svc.metrics.access_denied.labels(tenant).inc()
    elif refused.counted == "private_blocked":
        svc.metrics.private_blocked.labels(tenant).inc()
    if refused.padded:  # timed like a real not-found: it must not tell them apart
        await asyncio.sleep(svc.not_found_timer.sample())
    return text_response(refused.status, refused.reason)


async def _fetch(
    http: web.Request,
    svc: Services,
    rt: Runtime,
    plan: Plan,
    ranked: Ranked,
    served: Served,
) -> web.StreamResponse:
    request = plan.request
    ordered = [rt.clients[n] for n in ranked.names if n in rt.clients]
    check = None
    if isinstance(request, SumdbRequest):
        db = svc.checksums.get(request.db) if plan.sumdb_checked else None
        if db is not None:
            ordered = db.sources(ordered)  # its url too; liars ejected
            check = functools.partial(db.check_proxied, request)
    headers = {REQUEST_ID_HEADER: http[REQUEST_ID]}
    rollout = _rollout_pick(svc, rt, ranked)
    answers = svc.answers
    plain = not plan.verify and rollout is None and check is None
    job = Job(
        request,
        plan.pool,
        ordered,
        served,
        headers,
        plan.private,
        check=check,
        rollout=rollout,
        admission=plan.admission,  # L2 admission: kept in the store and Redis, or not
        tracer=svc.tracer,
    )
    if plain and answers.keeps_nothing and not plan.transfer:
        return await direct(http, job)
    if plan.verify and svc.checksums.primary is not None:
        assert isinstance(request, ModuleRequest) and request.version is not None
        job.verification = _verification(svc, rt, plan.pool, request, svc.checksums.primary)
    return await answers.serve(http, job)


def _rollout_pick(svc: Services, rt: Runtime, ranked: Ranked) -> RolloutPick | None:
    if ranked.rollout is None:
        return None
    candidate, baseline = ranked.rollout
    tracker = svc.rollouts.trackers.get(candidate)
    cand, base = rt.clients.get(candidate), rt.clients.get(baseline)
    if tracker is None or cand is None or base is None:
        return None
    return RolloutPick(tracker, cand, base)


def _verification(
    svc: Services, rt: Runtime, pool: Pool, request: ModuleRequest, db: ChecksumDatabase
) -> Verification:
    pool_clients = [rt.clients[n] for n in pool.upstreams if n in rt.clients]
    assert request.version is not None
    return Verification(
        db=db,
        sources=db.sources(pool_clients),
        module=request.module,
        version=request.version,
        kind=request.kind,
        metrics=svc.metrics,
        tasks=svc.tasks,
    )


def _observe(
    svc: Services,
    who: Identity,
    request: ModuleRequest | SumdbRequest,
    served: Served,
    status: int,
    seconds: float,
) -> None:
    m = svc.metrics
    kind = request.kind.value
    m.requests.labels(who.tenant_id or "anonymous", kind, status_class(status)).inc()
    m.request_seconds.labels(kind).observe(seconds)
    pool = served.pool or ""
    sel = svc.selection
    for i, attempt in enumerate(served.attempts):
        if attempt.seconds is not None:
            m.upstream_seconds.labels(attempt.upstream).observe(attempt.seconds)
        if attempt.cause:
            m.upstream_errors.labels(attempt.upstream, attempt.cause).inc()
        if attempt.cause == "checksum_mismatch":
            m.checksum_mismatches.labels(attempt.upstream).inc()
            sel.penalise(attempt.upstream)
        if i < len(served.attempts) - 1:
            m.fallbacks.labels(pool, attempt.upstream).inc()
        failed = attempt.outcome in _HEALTH_FAILURES
        # selection: RTT from small answers' first byte; zips teach bandwidth instead
        rtt = attempt.seconds if request.kind is not Kind.ZIP else None
        sel.observe(attempt.upstream, failed=failed, rtt=rtt)
    if served.upstream and served.upstream != "cache" and status == 200:
        m.selections.labels(pool, served.upstream).inc()
        sel.served(served.upstream, request.module, served.bytes)
        if served.transfer is not None:  # a zip spooled at the upstream's own pace
            sel.transferred(served.upstream, *served.transfer)
        if served.bytes:
            m.upstream_bytes.labels(served.upstream).inc(served.bytes)
            m.upstream_spend.labels(served.upstream).inc(
                served.bytes / 1e9 * sel.cost(served.upstream)
            )
    if status in (404, 410) and served.attempts:
        svc.not_found_timer.record(seconds)


def _lifetime(svc: Services) -> Callable[[web.Application], AsyncIterator[None]]:
    """The services started with the application and stopped with it."""

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        try:
            await start(svc)
        except BaseException:
            await stop(svc)  # what started (loops, clients, the exporter) stops again
            raise
        yield
        await stop(svc)

    return lifetime


def _skip_route_walk(router: web.UrlDispatcher, goproxy_route: AbstractRoute) -> None:
    """aiohttp's router walks every route prefix of a path; only the admin endpoints
    (every route registered besides the catch-all) need that: every other path is a
    GOPROXY request for the catch-all route."""
    walk = router.resolve
    admin = tuple(r.canonical for r in router.resources() if r is not goproxy_route.resource)

    async def resolve(request: web.Request) -> UrlMappingMatchInfo:
        if request.raw_path.startswith(admin):
            return await walk(request)
        return UrlMappingMatchInfo({}, goproxy_route)

    router.resolve = resolve  # type: ignore[method-assign]


def create_app(
    rules: Rules,
    *,
    rules_paths: tuple[Path, ...] = (),
    redis_url: str | None = None,
    clock: Callable[[], float] = time.time,
    make_client: UpstreamFactory = UpstreamClient,
) -> web.Application:
    """The gateway application for a validated rule set (state shared through
    Redis when `redis_url` is given, else embedded in this process). Tests hand in
    `clock` (cache lifetimes and selection read it) and `make_client` (the client of
    each upstream)."""
    svc = build(
        rules, rules_paths=rules_paths, redis_url=redis_url, clock=clock, make_client=make_client
    )
    app = web.Application()
    app[LIVE] = svc.live
    app[METRICS] = svc.metrics
    app[TASKS] = svc.tasks
    app[SELECTION] = svc.selection
    app[LIMITS] = svc.limits
    app[ROLLOUTS] = svc.rollouts
    app[CHECKSUMS] = svc.checksums
    app[ANSWERS] = svc.answers
    app[JOBS] = svc.jobs
    app[TRACER] = svc.tracer
    app[ACCESS_LOG] = svc.access_log
    app[REDIS_SYNC] = svc.redis_sync
    app[RELOADER] = svc.reloader
    serve_goproxy = functools.partial(goproxy, svc)  # no extra coroutine per request
    app.on_response_prepare.append(_prepare_headers)
    app.on_response_prepare.append(warning_header)
    app.cleanup_ctx.append(_lifetime(svc))
    app.router.add_get("/healthz", guarded(healthz))
    app.router.add_get("/readyz", guarded(readyz))
    app.router.add_get("/metrics", guarded(metrics))
    app.router.add_get("/debug/upstreams", guarded(debug_upstreams))
    app.router.add_post("/debug/purge", guarded(debug_purge))
    app.router.add_post("/debug/explain", guarded(debug_explain))
    app.router.add_get("/debug/abuse", guarded(debug_abuse))
    app.router.add_post("/debug/rollouts/reset", guarded(debug_rollout_reset))
    app.router.add_get("/debug/jobs", guarded(debug_job_show))
    app.router.add_post("/debug/jobs/drop", guarded(debug_job_drop))
    app.router.add_post("/debug/store/gc", guarded(debug_store_gc))
    app.router.add_post("/debug/warm", guarded(debug_warm))
    # Any path at all, line breaks included: aiohttp matches routes on the decoded path,
    # and a `.*` there sent a decoded %0a to aiohttp's own 404 instead of the 400 below.
    catch_all = app.router.add_route("*", r"/{tail:[\s\S]*}", guarded(serve_goproxy))
    _skip_route_walk(app.router, catch_all)
    return app
