"""Running the gateway for tests: in-process on a real port, or as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from router.app import create_app
from router.appkeys import ACCESS_LOG, ANSWERS
from router.config import load_or_raise


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_rules(
    dest: Path,
    upstreams: Sequence[Mapping[str, Any]],
    pools: Mapping[str, Mapping[str, Any]],
    **extra: Any,
) -> Path:
    """Write a rules file; `extra` adds top-level keys (default, tenants, routes, cache...)."""
    doc: dict[str, Any] = {"version": 1, "upstreams": [dict(u) for u in upstreams]}
    doc["pools"] = {name: dict(p) for name, p in pools.items()}
    doc.update(extra)
    dest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


def one_pool_rules(
    dest: Path,
    urls: Mapping[str, str],
    *,
    fallback: str = "not-found",
    mode: str = "ordered",
    upstream_extra: Mapping[str, Mapping[str, Any]] | None = None,
    **extra: Any,
) -> Path:
    """Rules with one pool `main` over the given name -> url upstreams; `mode: ordered`
    (the pool's own order) and no cache unless told otherwise, so fallback tests know
    who is first and every request reaches an upstream."""
    ups = []
    for name, url in urls.items():
        ups.append({"name": name, "url": url, **(upstream_extra or {}).get(name, {})})
    extra.setdefault("default", {"pool": "main"})
    extra.setdefault("cache", {"memory": 0})
    pool = {"upstreams": list(urls), "fallback": fallback, "mode": mode}
    return write_rules(dest, ups, {"main": pool}, **extra)


@dataclass(slots=True)
class RunningGateway:
    url: str
    app: web.Application | None = None

    def flush_access_log(self) -> None:
        """Write the access lines still buffered (they are written in batches)."""
        if self.app is not None:
            self.app[ACCESS_LOG].flush()


@asynccontextmanager
async def gateway_in_process(
    rules_path: Path,
    *,
    ssl_context: ssl.SSLContext | None = None,
    watch: bool = False,
    redis_url: str | None = None,
    redis_timeout: float | None = None,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[RunningGateway]:
    """The real application on a real loopback port, in this event loop.
    With `watch`, the rules file is watched and reloaded like in `serve`; `clock` is
    the time its caches and selection read (a `support.clock.Clock` to move by hand).
    `redis_timeout` replaces the 0.1 s each call of its shared (Redis) tier may take: the
    gateway shares the test's event loop, whose lag on a loaded machine is not Redis's,
    and a call that times out is a miss and opens the breaker (tests that need Redis's
    answer give it seconds)."""
    app = create_app(
        load_or_raise([rules_path]),
        rules_paths=(rules_path,) if watch else (),
        redis_url=redis_url,
        clock=clock,
    )
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ssl_context)
    await site.start()
    if redis_timeout is not None:
        shared = app[ANSWERS].tiers.shared
        assert shared is not None, "redis_timeout without a shared tier"
        shared.timeout = redis_timeout
    scheme = "https" if ssl_context else "http"
    try:
        yield RunningGateway(url=f"{scheme}://127.0.0.1:{port}", app=app)
    finally:
        await runner.cleanup()


class GatewayProcess:
    """`python -m router serve` as a child process, for what must be measured from outside
    (memory, signals) or needs its own process."""

    def __init__(
        self,
        rules_path: Path,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        scheme: str = "http",
    ) -> None:
        self.port = free_port()
        self.scheme = scheme
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "router",
            "serve",
            "--rules",
            str(rules_path),
            "--listen",
            f"127.0.0.1:{self.port}",
            *args,
        ]
        # Output goes to a file, never a pipe: an unread pipe would fill up and
        # block the gateway's logging (and so the gateway) mid-test.
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix="gateway-", suffix=".log", delete=False
        )
        self.proc = subprocess.Popen(
            cmd,
            env={**os.environ, **(env or {})},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 15.0, ssl_context: ssl.SSLContext | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.output()}")
            try:
                with urllib.request.urlopen(
                    f"{self.url}/readyz", timeout=1, context=ssl_context
                ) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("gateway did not become ready")

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()  # the process is gone; output() reads the file by name
        return self.proc.returncode

    def output(self) -> str:
        return Path(self._log.name).read_text(errors="replace")


@contextmanager
def gateway_process(rules_path: Path, **kwargs: Any) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(rules_path, **kwargs)
    try:
        gw.wait_ready()
        yield gw
    finally:
        gw.stop()


async def until_equal(get: Any, want: Any, timeout: float = 30.0, interval: float = 0.02) -> None:
    """Poll the coroutine function `get` until it returns `want` (AssertionError naming
    the last value after `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = await get()
        if seen == want:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"wanted {want!r}, last saw {seen!r}")


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll until `predicate()` is true (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(interval)
    raise TimeoutError("condition not met in time")
