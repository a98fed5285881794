"""Running the gateway: event loop, listening socket, TLS, signals, graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from router.app import create_app
from router.appkeys import LIVE, METRICS, RELOADER, TASKS
from router.config.loader import load_rules
from router.core.model import Rules
from router.guard import Guard, GuardedSite, GuardLimits

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


def server_ssl_context(
    cert: str, key: str, client_ca: str | None = None, client_auth: str = "none"
) -> ssl.SSLContext:
    """TLS for clients; with `client_ca`, mutual TLS (`require`: no certificate, no
    handshake; `optional`: a certificate, when sent, must verify)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["http/1.1"])
    if client_ca and client_auth != "none":
        ctx.load_verify_locations(cafile=client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if client_auth == "require" else ssl.CERT_OPTIONAL
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
        keepalive_timeout=15,
        max_line_size=limits.max_header_bytes + 1024,
        max_field_size=limits.max_header_bytes + 1024,
    )
    await runner.setup()
    host, port = split_listen(options.listen)
    ctx = None
    if options.tls_cert and options.tls_key:
        tls = rules.tls
        ctx = server_ssl_context(
            options.tls_cert,
            options.tls_key,
            tls.client_ca if tls else None,
            tls.client_auth if tls else "none",
        )
    metrics = app[METRICS]
    guard = Guard(
        GuardLimits(limits.max_connections, limits.header_timeout, limits.max_header_bytes),
        on_event=lambda event: metrics.guard_events.labels(event).inc(),
    )
    site = GuardedSite(
        runner, guard, host, port, ssl_context=ctx, backlog=1024, reuse_port=options.workers > 1
    )
    await site.start()
    scheme = "https" if ctx else "http"
    log.info("goproxy-router serving on %s://%s:%d", scheme, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloader, tasks = app[RELOADER], app[TASKS]
    if reloader is not None:
        loop.add_signal_handler(
            signal.SIGHUP, lambda: tasks.spawn(reloader.reload("SIGHUP"), name="reload")
        )
    await stop.wait()
    log.info("draining in-flight requests (at most %gs)", limits.shutdown_timeout)
    app[LIVE].draining = True
    await runner.cleanup()
    log.info("stopped")


def run(rules: Rules, options: ServeOptions) -> int:
    """Run the gateway: one process, or a parent and `workers` processes sharing the port."""
    if options.workers > 1:
        return run_workers(rules, options)
    return run_one(rules, options)


def run_one(rules: Rules, options: ServeOptions) -> int:
    """Run the gateway on uvloop (when installed) until it is told to stop."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.Runner()
    with runner:
        runner.run(run_gateway(rules, options))
    return 0


def run_workers(rules: Rules, options: ServeOptions) -> int:
    """A pre-fork parent: N children serve the same port (SO_REUSEPORT); the parent
    forwards SIGTERM/SIGINT (drain) and SIGHUP (reload), restarts a child that dies,
    and exits 0 once every child has drained. Metrics are aggregated across the
    children (Prometheus multiprocess mode), so one scrape through the port is right."""
    children: dict[int, int] = {}  # pid -> worker index
    stopping = False

    def spawn(index: int, current: Rules) -> None:
        pid = os.fork()
        if pid == 0:  # the child: serve until told to stop
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            code = 1
            try:
                code = run_one(current, options)
            finally:
                os._exit(code)
        children[pid] = index

    def forward(sig: int, _frame: object) -> None:
        nonlocal stopping
        if sig in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if sig == signal.SIGINT else sig)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for index in range(options.workers):
        spawn(index, rules)
    log.info("goproxy-router: %d workers on %s", options.workers, options.listen)
    failed = False
    deadline: float | None = None
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if stopping and deadline is None:
                deadline = time.monotonic() + rules.server.shutdown_timeout + 5
            if deadline is not None and time.monotonic() > deadline:
                for child in list(children):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
            time.sleep(0.05)
            continue
        index = children.pop(pid)
        _mark_dead(pid)
        code = os.waitstatus_to_exitcode(status)
        if stopping:
            failed |= code != 0
        else:
            log.error("worker %d (pid %d) exited with %d; restarting it", index, pid, code)
            time.sleep(0.5)
            if not stopping:  # a stop that came meanwhile would never reach a new one
                spawn(index, _rules_now(rules, options))
    return 1 if failed else 0


def _rules_now(started: Rules, options: ServeOptions) -> Rules:
    """The rules as their files say now, for a worker started again: the others may have
    reloaded since the start (else it would serve routes and tokens they dropped). The
    rules the process started with when the files are not valid now."""
    if not options.rules_paths:
        return started
    result = load_rules(list(options.rules_paths))
    if result.rules is None:
        log.error("the rules are not valid now: the restarted worker serves those of the start")
        return started
    return result.rules


def _mark_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
