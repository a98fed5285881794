"""HTTP/1.1 over a raw socket: exactly the bytes sent, and every byte that comes back.

For tests that must see what a connection carries after an answer: pipelined requests
on one keep-alive connection, read until the server closes it.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RawAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    complete: bool  # the whole Content-Length arrived


def get(target: str, *, host: str = "gw", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(
    port: int,
    requests: list[bytes],
    *,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
    rcvbuf: int | None = None,
) -> bytes:
    """Send `requests` at once on one connection; everything read until it closes (or
    `timeout` passes, or enough answers arrived)."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ssl_context, server_hostname="localhost" if ssl_context else None
    )
    if rcvbuf is not None:
        sock = writer.get_extra_info("socket")
        import socket

        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    writer.write(b"".join(requests))
    await writer.drain()
    data = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    chunk = await reader.read(1 << 16)
                except (ConnectionError, ssl.SSLError):
                    break
                if not chunk:
                    break
                data += chunk
                if len(parse(bytes(data))) >= len(requests) and _all_complete(bytes(data)):
                    break
    except TimeoutError:
        pass
    finally:
        writer.close()
    return bytes(data)


def _all_complete(data: bytes) -> bool:
    return all(a.complete for a in parse(data))


def parse(data: bytes) -> list[RawAnswer]:
    """Every answer in `data`, in order; the last may be incomplete."""
    out: list[RawAnswer] = []
    rest = data
    while rest:
        head, sep, after = rest.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = after[:length]
        out.append(RawAnswer(status, headers, body, len(body) == length))
        rest = after[length:]
    return out
