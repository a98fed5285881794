"""Sending bodies to clients.

Two rules hold for every streamed answer, whatever it streams from (an upstream, a
spool, the artifact store):

- a body that cannot be finished breaks the connection (the client sees a short body
  and retries; it never takes it for a whole one), and nothing else is ever written on
  that connection (`router.app` enforces it for every response);
- a client that does not take the next chunk within `stall` seconds is dropped, so a
  reader that never reads holds nothing for long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from aiohttp import web

from router.spooling import Reader, Tee, TeeBroken

log = logging.getLogger("goproxy_router.sending")

CHUNK = 256 << 10


class ClientStalled(Exception):
    """The client did not read for the stall timeout."""


def abort(http: web.Request) -> None:
    """Break the client's connection: nothing more is written on it."""
    transport = http.transport
    if transport is not None:
        transport.abort()


async def write_within(resp: web.StreamResponse, chunk: bytes, stall: float) -> None:
    """Write `chunk`, waiting at most `stall` seconds for the client to make room."""
    try:
        async with asyncio.timeout(stall):
            await resp.write(chunk)
    except TimeoutError:
        raise ClientStalled from None


async def send_tee(
    http: web.Request,
    tee: Tee,
    reader: Reader,
    *,
    headers: Mapping[str, str],
    stall: float,
    on_bytes: Callable[[int], None] = lambda n: None,
    on_stall: Callable[[], None] = lambda: None,
) -> web.StreamResponse:
    """Stream `tee` to the client from `reader` (attached by the caller, detached here)."""
    resp = web.StreamResponse(status=200, headers=headers)
    length = tee.expected if tee.expected is not None else (tee.written if tee.done else None)
    if length is not None:
        resp.content_length = length
    try:
        await resp.prepare(http)
        if http.method == "HEAD":
            await resp.write_eof()
            return resp
        while chunk := await tee.read(reader, CHUNK):
            await write_within(resp, chunk, stall)
            on_bytes(len(chunk))
        await resp.write_eof()
    except TeeBroken as exc:
        log.warning("zip from %s could not be finished: %s", tee.upstream, exc)
        abort(http)
    except ClientStalled:
        log.info("client %s stopped reading for %gs: dropped", http.remote, stall)
        on_stall()
        abort(http)
    finally:
        tee.detach(reader)
    return resp
