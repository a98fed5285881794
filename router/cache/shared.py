"""The shared metadata tier: small answers in Redis, so a new replica does not
stampede the upstreams, plus the cross-replica miss lock and purge broadcast.

Only asked on a local miss (never on a hit), with a short timeout: a slow or
dead Redis turns into a miss, never into an error for the client. After one failed
exchange the tier stops asking Redis on the request path altogether (a circuit
breaker) until a background ping gets an answer again, so a hung Redis costs each
request nothing, not a timeout or two.

Its keys (`meta:*`, `lock:*`, `modkeys:*`) are in `router.fleet.keys`; purges are
`router.fleet.purge`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from router.cache.memory import Entry
from router.fleet import keys

log = logging.getLogger("goproxy_router.shared")

LOCK_MS = 5000
_ERRORS = (RedisError, OSError, TimeoutError, ValueError)


def encode(entry: Entry) -> bytes:
    head = {
        "status": entry.status,
        "content_type": entry.content_type,
        "upstream": entry.upstream,
        "stored": entry.stored,
        "fresh_until": entry.fresh_until,
        "stale_until": entry.stale_until,
        "module": entry.module,
        "mutable": entry.mutable,
    }
    return json.dumps(head).encode() + b"\n" + entry.body


def decode(raw: bytes) -> Entry:
    head, _, body = raw.partition(b"\n")
    fields = json.loads(head)
    return Entry(body=body, **fields)


class Breaker:
    """Open after a failed exchange: requests skip Redis until a ping succeeds."""

    def __init__(self, on_change: Callable[[bool], None] = lambda is_open: None) -> None:
        self.open = False
        self._on_change = on_change

    def trip(self) -> None:
        if not self.open:
            self.open = True
            self._on_change(True)
            log.warning("redis did not answer: requests skip it until it answers a ping")

    def reset(self) -> None:
        if self.open:
            self.open = False
            self._on_change(False)
            log.warning("redis answers again: requests use the shared tier")


class SharedTier:
    """Metadata answers shared by every replica through Redis."""

    def __init__(
        self,
        client: Any,
        *,
        timeout: float = 0.1,
        on_error: Callable[[str], None],
        breaker: Breaker | None = None,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self._on_error = on_error
        self.breaker = breaker or Breaker()

    def _failed(self, op: str) -> None:
        self._on_error(op)
        self.breaker.trip()

    async def watch(self, interval: float = 0.5) -> None:
        """While the breaker is open, ping Redis; close it at the first answer."""
        while True:
            await asyncio.sleep(interval)
            if not self.breaker.open:
                continue
            try:
                async with asyncio.timeout(self.timeout * 5):
                    await self.client.ping()
            except _ERRORS:
                continue
            self.breaker.reset()

    async def get(self, key: str) -> Entry | None:
        if self.breaker.open:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                raw = await self.client.get(keys.meta(key))
            return decode(raw) if raw else None
        except _ERRORS:
            self._failed("meta_get")
            return None

    async def put(self, key: str, entry: Entry, ttl: float) -> bool:
        """Keep `entry` for `ttl` seconds; whether Redis took it."""
        if ttl <= 0 or self.breaker.open:
            return False
        name = keys.meta(key)
        ms = int(min(ttl, 30 * 86400) * 1000)
        try:
            async with asyncio.timeout(self.timeout * 5):
                pipe = self.client.pipeline(transaction=False)
                pipe.set(name, encode(entry), px=ms)
                if entry.module is not None and entry.mutable:
                    pipe.sadd(keys.modkeys(entry.module), name)
                    pipe.pexpire(keys.modkeys(entry.module), ms)
                await pipe.execute()
        except _ERRORS:
            self._failed("meta_put")
            return False
        return True

    async def forget(self, key: str) -> None:
        if self.breaker.open:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.delete(keys.meta(key))
        except _ERRORS:
            self._failed("meta_forget")

    async def lock(self, key: str, owner: str, ms: int = LOCK_MS) -> bool:
        """Try to become the one replica fetching `key` (for `ms` at most); True on a Redis
        error too (fetching ourselves is always safe)."""
        if self.breaker.open:
            return True
        try:
            async with asyncio.timeout(self.timeout):
                got = await self.client.set(keys.lock(key), owner, nx=True, px=ms)
            return bool(got)
        except _ERRORS:
            self._failed("lock")
            return True

    async def unlock(self, key: str) -> None:
        if self.breaker.open:
            return  # the lock expires by itself
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.delete(keys.lock(key))
        except _ERRORS:
            self._failed("unlock")

    async def wait_for(self, key: str, wait: float, interval: float = 0.05) -> Entry | None:
        """Poll for the entry another replica is fetching, for at most `wait` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline and not self.breaker.open:
            await asyncio.sleep(interval)
            entry = await self.get(key)
            if entry is not None:
                return entry
        return None
