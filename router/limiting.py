"""Rate limits and abusive-pull detection for the request flow, shared through Redis.

No Redis round trip on a request: each replica decides on its local buckets
and windows; `router.fleet.limits.LimitSync` sends what it allowed and counted every 250 ms and
charges in what the other replicas did. So the fleet-wide overshoot of a limit
is at most about what the other replicas allow in one sync period (plus their
bursts); it is documented in docs/security.md. With Redis unreachable each
replica enforces a fair share (1/N of every limit, N = replicas last seen).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from router.core.limits import Flag, Limit, Limiter, PullWindow
from router.core.model import Limits, Rules
from router.core.tenancy import Identity
from router.observability import Metrics

log = logging.getLogger("goproxy_router.limits")


@dataclass(frozen=True, slots=True)
class Throttled:
    """A request over a limit: 429 with Retry-After (whole seconds) and a reason."""

    retry_after: int
    reason: str
    kind: str  # tenant, anonymous, abuse


class StreamSlots:
    """How many downloads each client (tenant and address) has open: a hundred sockets
    from one client cannot hold every spool and upstream connection. A client over its
    share waits (first come, first served) for one of its downloads to end."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}

    async def take(self, key: str, limit: int, wait: float) -> bool:
        """A slot for `key`, waiting at most `wait` seconds; False when none came."""
        if self._held.get(key, 0) < limit and not self._waiting.get(key):
            self._held[key] = self._held.get(key, 0) + 1
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(key, deque())
        queue.append(future)
        try:
            async with asyncio.timeout(wait):
                await future  # give_back handed its slot over
            return True
        except TimeoutError:
            return False
        finally:
            if not future.done():
                future.cancel()
            if future in queue:
                queue.remove(future)
            if not queue:
                self._waiting.pop(key, None)

    def give_back(self, key: str) -> None:
        queue = self._waiting.get(key)
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes to the next in line
                return
        held = self._held.get(key, 1) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def __len__(self) -> int:
        return len(self._held)


class RequestLimits:
    """The limits of one rule set, applied to requests."""

    def __init__(self, metrics: Metrics, clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.clock = clock
        self.limiter = Limiter()
        self.pulls: PullWindow | None = None
        self.cfg: Limits | None = None
        self.tenant_limits: dict[str, Limit] = {}
        self.exempt_nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.exempt_tenants: set[str] = set()
        self.describe: dict[str, str] = {}
        self.tenant_default: Limit | None = None
        self.anonymous: Limit | None = None

    def apply_rules(self, rules: Rules) -> None:
        cfg = rules.limits
        self.cfg = cfg
        self.tenant_default = (
            Limit.of(cfg.tenant.rate, cfg.tenant.burst) if cfg and cfg.tenant else None
        )
        self.anonymous = (
            Limit.of(cfg.anonymous.rate, cfg.anonymous.burst) if cfg and cfg.anonymous else None
        )
        self.tenant_limits = {
            t.id: Limit.of(t.limit.rate, t.limit.burst) for t in rules.tenants if t.limit
        }
        abuse = cfg.abuse if cfg else None
        if abuse is None:
            self.pulls = None
            return
        if self.pulls is None or (self.pulls.window, self.pulls.threshold) != (
            abuse.window,
            abuse.pulls,
        ):
            self.pulls = PullWindow(abuse.window, abuse.pulls, abuse.cooldown)
        self.pulls.cooldown = abuse.cooldown
        self.exempt_nets, self.exempt_tenants = [], set()
        for item in abuse.exempt:
            try:
                self.exempt_nets.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                self.exempt_tenants.add(item)

    @property
    def enabled(self) -> bool:
        return self.cfg is not None or bool(self.tenant_limits)

    def check(
        self, who: Identity, peer: str | None, user_agent: str, is_pull: bool
    ) -> Throttled | None:
        """Apply the rate limit, then (for a .zip) the abuse window."""
        now = self.clock()
        tenant = who.tenant_id
        limit, key, kind = self._limit_for(tenant, peer)
        if limit is not None and key is not None:
            wait = self.limiter.check(key, limit, now)
            if wait > 0:
                what = f"tenant {tenant}" if tenant else "anonymous clients (per address)"
                return self._refuse(wait, f"rate limit {limit.text} for {what} exceeded", kind, who)
        if is_pull and self.pulls is not None and self.cfg is not None and self.cfg.abuse:
            return self._pull(who, peer, user_agent, now)
        return None

    def _limit_for(
        self, tenant: str | None, peer: str | None
    ) -> tuple[Limit | None, str | None, str]:
        if tenant is not None:
            limit = self.tenant_limits.get(tenant, self.tenant_default)
            return limit, "t:" + tenant, "tenant"
        if self.anonymous is not None and peer:
            return self.anonymous, "ip:" + peer, "anonymous"
        return None, None, "anonymous"

    def _pull(self, who: Identity, peer: str | None, ua: str, now: float) -> Throttled | None:
        abuse = self.cfg.abuse if self.cfg else None
        assert abuse is not None and self.pulls is not None
        if self._exempt(who, peer):
            return None
        parts = {"ip": peer or "-", "user_agent": ua[:200], "tenant": who.tenant_id or "-"}
        described = " ".join(f"{name}={parts[name]}" for name in abuse.by)
        key = hashlib.sha256(described.encode()).hexdigest()[:32]
        self.describe[key] = described
        if len(self.describe) > self.pulls.max_keys:
            self.describe.pop(next(iter(self.describe)))
        flag = self.pulls.record(key, now)
        if flag is not None:
            self.metrics.abuse_flagged.labels(abuse.action).inc()
            log.warning(
                "abusive pulling flagged: %s pulled %d zips in %gs (threshold %d); action %s",
                described,
                flag.count,
                abuse.window,
                abuse.pulls,
                abuse.action,
            )
        if abuse.action != "throttle" or not self.pulls.flagged(key, now):
            return None
        bucket = abuse.throttle
        limit = Limit.of(bucket.rate, bucket.burst) if bucket else Limit(1.0, 5.0, "1/s")
        wait = self.limiter.check(f"abuse:{key}", limit, now)
        if wait > 0:
            return self._refuse(wait, f"throttled to {limit.text}: abusive pulling", "abuse", who)
        return None

    def _exempt(self, who: Identity, peer: str | None) -> bool:
        if who.tenant_id is not None and who.tenant_id in self.exempt_tenants:
            return True
        if peer and self.exempt_nets:
            try:
                ip = ipaddress.ip_address(peer)
            except ValueError:
                return False
            return any(ip in net for net in self.exempt_nets)
        return False

    def _refuse(self, wait: float, reason: str, kind: str, who: Identity) -> Throttled:
        self.metrics.rate_limited.labels(who.tenant_id or "anonymous", kind).inc()
        return Throttled(max(1, math.ceil(wait)), reason, kind)

    def flags(self) -> list[dict[str, Any]]:
        if self.pulls is None:
            return []
        now = self.clock()
        return [_flag_view(f, self.describe.get(f.key, f.key), now) for f in self.pulls.active(now)]


def _flag_view(flag: Flag, described: str, now: float) -> dict[str, Any]:
    return {
        "client": described,
        "pulls": flag.count,
        "flagged_for_seconds": round(now - flag.since, 1),
        "cooldown_left_seconds": round(flag.until - now, 1),
    }
