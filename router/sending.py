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
import os
from collections.abc import Callable, Mapping

from aiohttp import web

from router.spooling import Reader, Tee, TeeBroken

log = logging.getLogger("goproxy_router.sending")

CHUNK = 256 << 10
# Zero-copy: bytes one sendfile call may send before the event loop gets a turn.
SENDFILE_SLICE = 4 << 20


async def _send_file(
    http: web.Request, tee: Tee, reader: Reader, stall: float, on_bytes: Callable[[int], None]
) -> bool:
    """Send what of the body is in a file straight from the page cache to the socket
    (plain HTTP; TLS needs the bytes in Python), at the client's pace. uvloop has no
    `loop.sendfile` (MagicStack/uvloop#228), so this calls sendfile(2) itself, only while
    the transport has nothing buffered, and waits for the socket to take more on a
    duplicate of its descriptor (the transport owns the original). A client that takes
    nothing for `stall` seconds raises ClientStalled; any other problem stops here and
    the usual path goes on from where this stopped. True when it sent anything."""
    found = tee.file_for(reader)
    transport = http.transport
    if found is None or transport is None or transport.get_extra_info("sslcontext") is not None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is None or transport.get_write_buffer_size() or transport.is_closing():
        return False
    fd, end = found
    out = sock.fileno()
    sent = False
    watch: int | None = None
    loop = asyncio.get_running_loop()
    try:
        while reader.offset < end:
            try:
                n = os.sendfile(out, fd, reader.offset, min(SENDFILE_SLICE, end - reader.offset))
            except (BlockingIOError, InterruptedError):
                if watch is None:
                    watch = os.dup(out)
                await _writable(loop, watch, stall)
                if transport.is_closing():
                    break
                continue
            except OSError:
                break  # the usual path reports what went wrong
            if n == 0:
                break  # the file is shorter than it was: the usual path says so
            reader.offset += n
            sent = True
            on_bytes(n)
            if reader.offset < end:
                await asyncio.sleep(0)  # a long zip does not hold the loop
    finally:
        if watch is not None:
            os.close(watch)
    return sent


async def _writable(loop: asyncio.AbstractEventLoop, fd: int, stall: float) -> None:
    """Wait until `fd` can take more bytes (ClientStalled after `stall` seconds)."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        async with asyncio.timeout(stall):
            await ready
    except TimeoutError:
        raise ClientStalled from None
    finally:
        loop.remove_writer(fd)


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
        direct = resp.content_length is not None and not resp.chunked  # raw bytes can go
        while True:
            if direct and await _send_file(http, tee, reader, stall, on_bytes):
                continue  # more may be in the file by now
            if direct and tee.file_for(reader) is None:
                await tee.wait(reader)  # the next bytes, in the file or not, or the end
                if tee.file_for(reader) is not None:
                    continue
            chunk = await tee.read(reader, CHUNK)
            if not chunk:
                break
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
