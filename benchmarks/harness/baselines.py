"""The Python ceiling: the least an aiohttp + uvloop server can do for each answer.

    python -m benchmarks.harness.baselines forward PORT UPSTREAM_URL
    python -m benchmarks.harness.baselines dict PORT TREE

`forward`: one web.Application, one catch-all GET handler that forwards the path
through one pooled ClientSession and returns the body. `dict`: the same handler
answering from a dict loaded from TREE (a GOPROXY tree), 404 for anything else.
"""

from __future__ import annotations

import sys
from pathlib import Path

import uvloop
from aiohttp import ClientSession, TCPConnector, web

TYPES = {".info": "application/json", ".mod": "text/plain", ".zip": "application/zip"}


def forward_app(upstream: str) -> web.Application:
    app = web.Application()
    session: list[ClientSession] = []

    async def start(app: web.Application) -> None:
        session.append(ClientSession(connector=TCPConnector(limit=256), auto_decompress=False))

    async def stop(app: web.Application) -> None:
        await session[0].close()

    async def handle(request: web.Request) -> web.Response:
        async with session[0].get(upstream + request.raw_path) as resp:
            body = await resp.read()
            return web.Response(body=body, status=resp.status, content_type=resp.content_type)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/{tail:.*}", handle)
    return app


def dict_app(tree: Path) -> web.Application:
    answers = {
        "/" + str(p.relative_to(tree)): (p.read_bytes(), TYPES.get(p.suffix, "text/plain"))
        for p in tree.rglob("*")
        if p.is_file()
    }

    async def handle(request: web.Request) -> web.Response:
        found = answers.get(request.raw_path)
        if found is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=found[0], content_type=found[1])

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    return app


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in ("forward", "dict"):
        print(__doc__, file=sys.stderr)
        return 2
    kind, port, arg = argv
    app = forward_app(arg.rstrip("/")) if kind == "forward" else dict_app(Path(arg))
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(port), access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
