"""Running the gateway: event loop, listening socket, TLS, signals, graceful drain."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from router.app import STATE, create_app
from router.config.model import Rules

log = logging.getLogger("goproxy_router.serve")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    rules_paths: tuple[Path, ...]
    listen: str
    tls_cert: str | None = None
    tls_key: str | None = None
    redis: str | None = None
    workers: int = 1


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


async def run_gateway(rules: Rules, options: ServeOptions) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight requests and return."""
    app = create_app(rules, rules_paths=options.rules_paths, redis_url=options.redis)
    limits = rules.server
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=limits.shutdown_timeout,
        max_line_size=limits.max_header_bytes,
        max_field_size=limits.max_header_bytes,
    )
    await runner.setup()
    host, port = split_listen(options.listen)
    ctx = None
    if options.tls_cert and options.tls_key:
        ctx = server_ssl_context(options.tls_cert, options.tls_key)
    site = web.TCPSite(
        runner, host, port, ssl_context=ctx, backlog=1024, reuse_port=options.workers > 1
    )
    await site.start()
    scheme = "https" if ctx else "http"
    log.info("goproxy-router serving on %s://%s:%d", scheme, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    state = app[STATE]
    if state.reloader is not None:
        reloader = state.reloader
        loop.add_signal_handler(
            signal.SIGHUP, lambda: state.tasks.spawn(reloader.reload("SIGHUP"), name="reload")
        )
    await stop.wait()
    log.info("draining in-flight requests (at most %gs)", limits.shutdown_timeout)
    app[STATE].draining = True
    await runner.cleanup()
    log.info("stopped")


def run(rules: Rules, options: ServeOptions) -> int:
    """Run the gateway on uvloop (when installed) until it is told to stop."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    with runner:
        runner.run(run_gateway(rules, options))
    return 0
