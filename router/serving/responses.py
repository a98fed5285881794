"""The answers the gateway builds: one-line errors, whole bodies, cached entries.

Every answer carries `X-Router-Upstream`: the upstream that answered, `cache` for
an answer from a tier (with `Age`), `none` for one made here.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from router.cache.memory import Entry
from router.core.fallback import Failure
from router.core.protocol import SumdbRequest
from router.serving.record import Served
from router.upstream import UpstreamAnswer, UpstreamClient

UPSTREAM_HEADER = "X-Router-Upstream"


def text_response(status: int, reason: str, *, upstream: str | None = None) -> web.Response:
    """A one-line text/plain answer, as the go command wants errors."""
    one_line = " ".join(reason.split())[:500]
    resp = web.Response(status=status, text=one_line + "\n", content_type="text/plain")
    resp.headers[UPSTREAM_HEADER] = upstream or "none"
    return resp


def failure_response(failure: Failure) -> web.Response:
    return text_response(failure.status, failure.reason, upstream=failure.upstream)


def supported_probe(request: SumdbRequest, clients: Sequence[UpstreamClient]) -> web.Response:
    """`/sumdb/NAME/supported`: 200 when an upstream of the pool proxies NAME."""
    if clients:
        headers = {"Content-Type": "text/plain; charset=utf-8", UPSTREAM_HEADER: "none"}
        return web.Response(status=200, body=b"", headers=headers)
    return text_response(404, f"checksum database {request.db} is not proxied here")


def entry_response(entry: Entry, now: float) -> web.Response:
    """An answer from a tier (memory, Redis, a CI job's pin)."""
    headers = {UPSTREAM_HEADER: "cache", "Age": str(entry.age(now))}
    if entry.content_type:
        headers["Content-Type"] = entry.content_type
    return web.Response(status=entry.status, body=entry.body, headers=headers)


def busy(upstream: str) -> web.Response:
    """503 when a zip can be neither spooled nor streamed at a client's pace."""
    resp = text_response(
        503,
        f"upstream {upstream}: every connection it may use for downloads is held by slow "
        "clients and the spool is full; try again shortly",
    )
    resp.headers["Retry-After"] = "1"
    return resp


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
        served.answered(200)
        return head
    assert answer.body is not None, "streamed answers are served through a tee"
    served.answered(200, len(answer.body))
    return web.Response(status=200, body=answer.body, headers=headers)
