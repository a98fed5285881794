"""What happened to one request, for its access line and its metrics.

One `Served` per client request, created by the handler. The serving path does
not poke its fields: a fetch returns what it did (`router.serving.walk.Walked`) and
the record takes it in one place (`took`); the caches say which tier answered
(`from_cache`), the senders what went out (`answered`, `sent`), the policy gate what it
judged (`judged`). `app._observe` and the access log read it once the answer is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from router.core.fallback import Attempt

if TYPE_CHECKING:
    from router.serving.walk import Walked
    from router.tracing import TraceContext

CACHE_ANSWERS = frozenset({"hit", "stale", "stale_if_error", "bucket", "pinned"})
"""Cache results that answer without an upstream (`X-Router-Upstream: cache`)."""


@dataclass(slots=True)
class Served:
    """One request's record."""

    upstream: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    status: int = 0
    bytes: int = 0
    pool: str | None = None
    route: str | None = None
    deadline: float = 600.0  # the serving upstream's whole-transfer timeout
    cache: str | None = None  # hit, stale, stale_if_error, miss, coalesced, bucket, ...
    transfer: tuple[int, float] | None = None  # (bytes, seconds) of a zip at upstream pace
    trace: TraceContext | None = None
    policy: str | None = None  # the policy rule that refused or warned (router.policygate)

    def took(self, walked: Walked) -> None:
        """A pool walk made for this request: its attempts, and who answered."""
        self.attempts.extend(walked.attempts)
        self.upstream = walked.upstream
        if walked.deadline is not None:
            self.deadline = walked.deadline

    def decided(self, pool: str, route: str | None) -> None:
        """The plan's pool and route for this request."""
        self.pool, self.route = pool, route

    def follows(self, upstream: str) -> None:
        """Answered with what another request's walk fetched (coalesced): its upstream."""
        if self.upstream is None:
            self.upstream = upstream

    def paced(self, size: int, seconds: float) -> None:
        """The zip this request led came at the upstream's own pace (selection learns
        the upstream's bandwidth from it)."""
        self.transfer = (size, seconds)

    def from_cache(self, result: str) -> None:
        """What the caches made of this request (`CACHE_ANSWERS`: answered from one)."""
        self.cache = result
        if result in CACHE_ANSWERS:
            self.upstream = "cache"

    def answered(self, status: int, size: int = 0) -> None:
        """The status (and body size) this request is answered with."""
        self.status = status
        if size:
            self.bytes = size

    def sent(self, size: int) -> None:
        """`size` more bytes of a streamed body went out."""
        self.bytes += size

    def judged(self, rule: str, *, refused: bool) -> None:
        """A policy rule warned about this request, or refused it."""
        self.policy = rule
        if refused:
            self.status = 403

    def broke(self, attempt: Attempt) -> None:
        """The serving upstream's body broke after its 200 went out."""
        self.status = 502
        self.attempts.append(attempt)
