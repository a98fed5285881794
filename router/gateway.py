"""Serving one GOPROXY request: walk the pool's upstreams, answer, stream.

This is the fetch -> answer half of the request flow. It takes an already
parsed request and a decided pool; it owns no policy of its own beyond the
pure fallback walk in `router.core.fallback`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from router.core.fallback import (
    Attempt,
    Failure,
    Outcome,
    Step,
    classify_status,
    final_failure,
    next_step,
)
from router.core.model import Pool
from router.core.protocol import MAX_BYTES, Kind, ModuleRequest, SumdbRequest
from router.tracing import TraceContext, Tracer
from router.upstream import UpstreamAnswer, UpstreamClient, UpstreamError

_PROPAGATE_ONLY = Tracer()

log = logging.getLogger("goproxy_router.gateway")

_CAUSE_OUTCOME = {
    "timeout": Outcome.TIMEOUT,
    "unreachable": Outcome.UNREACHABLE,
    "reset": Outcome.UNREACHABLE,
    "busy": Outcome.BUSY,
}
UPSTREAM_HEADER = "X-Router-Upstream"


@dataclass(slots=True)
class Served:
    """What happened to one request: for the access log and metrics."""

    upstream: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    status: int = 0
    bytes: int = 0
    pool: str | None = None
    route: str | None = None
    deadline: float = 600.0
    cache: str | None = None  # hit, stale, miss, coalesced
    transfer: tuple[int, float] | None = None  # (bytes, seconds) of a zip at upstream pace
    trace: TraceContext | None = None
    policy: str | None = None  # the policy rule that refused or warned (router.policygate)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An upstream's 200 that failed an acceptance check (checksum, tree head, body)."""

    reason: str
    cause: str  # metrics: checksum_mismatch, sumdb_inconsistent, truncated...
    fall_through: bool = True  # try the next upstream whatever the pool's fallback


Check = Callable[[UpstreamClient, UpstreamAnswer], Awaitable[Rejected | None]]
"""Accepts or rejects an upstream's 200 before anything of it reaches a client."""


def text_response(status: int, reason: str, *, upstream: str | None = None) -> web.Response:
    """A one-line text/plain answer, as the go command wants errors."""
    one_line = " ".join(reason.split())[:500]
    resp = web.Response(status=status, text=one_line + "\n", content_type="text/plain")
    resp.headers[UPSTREAM_HEADER] = upstream or "none"
    return resp


async def serve(
    http: web.Request,
    request: ModuleRequest | SumdbRequest,
    pool: Pool,
    clients: Sequence[UpstreamClient],
    served: Served,
    extra_headers: Mapping[str, str],
    tracer: Tracer = _PROPAGATE_ONLY,
) -> web.StreamResponse:
    """Answer `request` from the first upstream of `clients` that serves it, read whole
    (no cache; zips, which are streamed, go through the answer cache's tees)."""
    if isinstance(request, SumdbRequest) and request.is_supported_probe:
        return supported_probe(request, clients)
    result = await walk(
        request,
        pool,
        clients,
        served,
        method=http.method,
        stream=False,
        headers=extra_headers,
        tracer=tracer,
    )
    if isinstance(result, Failure):
        return failure_response(result)
    return await respond(http, result, served)


def supported_probe(request: SumdbRequest, clients: Sequence[UpstreamClient]) -> web.Response:
    """`/sumdb/NAME/supported`: 200 when an upstream of the pool proxies NAME."""
    if clients:
        return _local_ok(b"", "text/plain; charset=utf-8")
    return text_response(404, f"checksum database {request.db} is not proxied here")


def failure_response(failure: Failure) -> web.Response:
    return text_response(failure.status, failure.reason, upstream=failure.upstream)


async def walk(
    request: ModuleRequest | SumdbRequest,
    pool: Pool,
    clients: Sequence[UpstreamClient],
    served: Served,
    *,
    method: str,
    stream: bool,
    headers: Mapping[str, str],
    tracer: Tracer = _PROPAGATE_ONLY,
    check: Check | None = None,
) -> UpstreamAnswer | Failure:
    """Ask `clients` in order with the pool's fallback rule: the first 200 (body read
    whole, or left open when `stream`) that `check` accepts, else the go command's
    preferred failure. A rejected answer is discarded; the walk goes on to the next
    upstream whatever the fallback rule when the rejection says so (a checksum mismatch)."""
    limit = MAX_BYTES[request.kind]
    path = request.upstream_path()
    for client in clients:
        began = time.monotonic()
        try:
            with tracer.attempt(served.trace, client.name) as trace_headers:
                answer = await client.fetch(
                    path,
                    method=method,
                    stream=stream,
                    limit=limit,
                    headers={**headers, **trace_headers},
                )
        except UpstreamError as exc:
            outcome = _CAUSE_OUTCOME.get(exc.cause, Outcome.ERROR)
            # a timeout still tells how slow the upstream was: it counts in the latency
            waited = time.monotonic() - began if exc.cause == "timeout" else None
            served.attempts.append(
                Attempt(client.name, outcome, None, exc.reason, exc.cause, waited)
            )
        else:
            outcome = classify_status(answer.status)
            seconds = answer.first_byte_seconds
            rejected = None
            if outcome is Outcome.OK and check is not None:
                try:
                    rejected = await check(client, answer)
                except BaseException:
                    answer.close()
                    raise
            if rejected is not None:
                answer.close()
                reason, cause = rejected.reason, rejected.cause
                served.attempts.append(
                    Attempt(client.name, Outcome.ERROR, 200, reason, cause, seconds)
                )
                if rejected.fall_through:
                    continue
                outcome = Outcome.ERROR
            elif outcome is Outcome.OK:
                served.upstream = client.name
                served.attempts.append(Attempt(client.name, outcome, 200, "", "", seconds))
                served.deadline = client.config.timeouts.total
                return answer
            else:
                cause = "not_found" if outcome is Outcome.NOT_FOUND else f"{answer.status // 100}xx"
                served.attempts.append(
                    Attempt(client.name, outcome, answer.status, _reason(answer), cause, seconds)
                )
                answer.close()
        fall = client.config.tier == "L3"
        if next_step(pool.fallback, outcome, always_fall_through=fall) is Step.STOP:
            break
    failure = final_failure(served.attempts)
    served.upstream = failure.upstream
    return failure


def _local_ok(body: bytes, content_type: str) -> web.Response:
    resp = web.Response(status=200, body=body, headers={"Content-Type": content_type})
    resp.headers[UPSTREAM_HEADER] = "none"
    return resp


def _reason(answer: UpstreamAnswer) -> str:
    """A one-line reason from an upstream's error answer (its text if it is plain text)."""
    text = ""
    ctype = (answer.content_type or "").lower()
    if answer.body and (not ctype or ctype.startswith("text/plain")):
        lines = answer.body.decode("utf-8", "replace").strip().splitlines()
        text = "".join(ch for ch in lines[0] if ch.isprintable())[:300] if lines else ""
    if answer.status in (404, 410):
        return text or "not found"
    return f"{answer.status} {text}".strip()


class Spooled(Protocol):
    """A file a body is copied into (`router.cache.disk.Spool`)."""

    failed: bool
    no_room: bool

    async def write(self, chunk: bytes) -> None: ...

    def close(self, *, sync: bool) -> None: ...

    def discard(self) -> None: ...


async def spool_body(answer: UpstreamAnswer, spool: Spooled, deadline: float) -> Rejected | None:
    """Copy a streamed 200 whole into `spool` and close it; on a broken, stalled or
    oversized body (or a failed write) the spool is discarded and the reason returned."""
    problem: Rejected | None = None
    try:
        async with asyncio.timeout(deadline):
            async for chunk in answer.iter_body(MAX_BYTES[Kind.ZIP]):
                await spool.write(chunk)
        answer.release()
    except TimeoutError:
        problem = Rejected(f"transfer exceeded {deadline:g}s", "timeout", False)
    except UpstreamError as exc:
        problem = Rejected(exc.reason, exc.cause, False)
    except BaseException:
        answer.close()
        spool.discard()
        raise
    if problem is None:
        await asyncio.to_thread(spool.close, sync=False)
        if spool.failed:
            why = "no room in cache.spool" if spool.no_room else "the disk write failed"
            problem = Rejected(f"cannot spool the body: {why}", "spool", False)
    if problem is not None:
        answer.close()
        spool.discard()
    return problem


async def respond(http: web.Request, answer: UpstreamAnswer, served: Served) -> web.StreamResponse:
    """Answer the client with an upstream's 200 read whole (or the head of one, for HEAD).
    Streamed bodies (zips) go through `router.spooling.Tee` instead."""
    headers = {UPSTREAM_HEADER: answer.upstream}
    if answer.content_type:
        headers["Content-Type"] = answer.content_type
    if http.method == "HEAD":
        head = web.StreamResponse(status=200, headers=headers)
        if answer.content_length is not None:
            head.content_length = answer.content_length
        await head.prepare(http)
        await head.write_eof()
        served.status = 200
        return head
    assert answer.body is not None, "streamed answers are served through a tee"
    served.status, served.bytes = 200, len(answer.body)
    return web.Response(status=200, body=answer.body, headers=headers)
