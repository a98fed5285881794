"""A loopback HTTP proxy in front of the test S3 server that adds what rclone lacks: conditional
writes. rclone accepts `If-None-Match: *` on a PUT and overwrites anyway; AWS S3 (and MinIO)
answer 412 when the key exists, and some servers answer 501 to the header. This proxy plays
either, so the bucket layer's handling of both is tested over real HTTP against the real server.

Requests are forwarded byte for byte with their Host header, so SigV4 signatures (made for the
proxy's address) still verify at the server. Whether a key exists is read from the server's data
folder: this is a test tool, not an S3 implementation.
"""

from __future__ import annotations

from typing import Literal

import aiohttp
from aiohttp import web

from support.s3_server import S3Server

Mode = Literal["honour", "reject"]
_HOP = {"transfer-encoding", "connection", "keep-alive", "content-length", "content-encoding"}


def _error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


class ConditionalProxy:
    def __init__(self, server: S3Server, mode: Mode) -> None:
        self.server = server
        self.mode = mode
        self.refused = 0  # 412s and 501s answered
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> ConditionalProxy:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _exists(self, path: str) -> bool:
        return (self.server.data_dir / path.lstrip("/")).is_file()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        writes = request.method == "PUT" or (
            request.method == "POST" and "uploadId" in request.query
        )
        if writes and "If-None-Match" in request.headers:
            if self.mode == "reject":
                self.refused += 1
                return _error(501, "NotImplemented", "conditional writes are not implemented")
            if request.headers["If-None-Match"] == "*" and self._exists(request.path):
                self.refused += 1
                return _error(412, "PreconditionFailed", "At least one precondition failed")
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        assert self._session is not None
        async with self._session.request(
            request.method,
            f"{self.server.endpoint}{request.rel_url}",
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                out["Content-Length"] = upstream.headers["Content-Length"]
                return web.Response(status=upstream.status, headers=out)
            return web.Response(status=upstream.status, headers=out, body=payload)
