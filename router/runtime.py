"""One loaded rule set with everything compiled from it, swapped whole on reload."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aiohttp import web

from router.core.model import Rules, Upstream
from router.core.plan import Compiled
from router.core.tenancy import TenantIndex
from router.upstream import UpstreamClient

log = logging.getLogger("goproxy_router.runtime")


@dataclass(frozen=True, slots=True)
class Runtime:
    """A request takes the current runtime when it starts and keeps it to the end,
    so a reload never changes the rules under a request in flight."""

    compiled: Compiled
    clients: Mapping[str, UpstreamClient]
    generation: int

    @property
    def rules(self) -> Rules:
        return self.compiled.rules

    @property
    def tenants(self) -> TenantIndex:
        return self.compiled.tenants


@dataclass(slots=True)
class Live:
    """What changes while the gateway runs: the current `Runtime` (the rules and what is
    compiled from them, swapped whole on reload), readiness and draining."""

    runtime: Runtime | None = None
    ready: bool = False
    draining: bool = False

    @property
    def current(self) -> Runtime:
        if self.runtime is None:
            raise web.HTTPServiceUnavailable(reason="not ready")
        return self.runtime


ConnectionCounter = Callable[[str, str], None]
"""Counts a connection event (`upstream`, `event`) of an upstream's client."""
UpstreamFactory = Callable[[Upstream, ConnectionCounter | None], UpstreamClient]
"""Makes the client of one upstream (`UpstreamClient`; tests may hand in their own)."""


async def build_runtime(
    rules: Rules,
    generation: int,
    previous: Runtime | None = None,
    on_connection: Callable[[str, str], None] | None = None,
    make_client: UpstreamFactory = UpstreamClient,
) -> tuple[Runtime, list[UpstreamClient]]:
    """A runtime for `rules`, reusing clients whose upstream did not change.

    Returns the runtime and the previous clients that are no longer used (the
    caller closes them once in-flight requests had time to finish)."""
    old = dict(previous.clients) if previous else {}
    clients: dict[str, UpstreamClient] = {}
    for up in rules.upstreams:
        reused = old.get(up.name)
        if reused is not None and reused.config == up:
            clients[up.name] = reused
            del old[up.name]
            continue
        client = make_client(up, on_connection)
        await client.start()
        clients[up.name] = client
    runtime = Runtime(compiled=Compiled.build(rules), clients=clients, generation=generation)
    return runtime, list(old.values())


async def close_later(clients: list[UpstreamClient], delay: float) -> None:
    """Close retired clients after in-flight requests had `delay` seconds to finish."""
    if not clients:
        return
    await asyncio.sleep(delay)
    for client in clients:
        await client.close()
