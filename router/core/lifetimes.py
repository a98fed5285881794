"""What is cached, under which key, for how long. Pure.

- 200 `.info`/`.mod`/`.zip` of a canonical version, a full sumdb tile: fresh
  until evicted.
- 200 `list`, `@latest`, `.info` of a query, sumdb lookup/latest: fresh for
  `ttl.list` / `ttl.latest` (60 s); then served stale while one background
  refresh runs; when every upstream fails, served stale up to `stale_if_error`
  (24 h).
- 404 / 410: fresh for `ttl.not_found` (30 s), then gone.
- anything else (5xx, 403, truncated): never cached.

Keys carry the pool name: nothing cached for one pool is served to another.
"""

from __future__ import annotations

from dataclasses import dataclass

from router.core.model import Cache
from router.core.protocol import Kind, ModuleRequest, SumdbRequest

Request = ModuleRequest | SumdbRequest


@dataclass(frozen=True, slots=True)
class Lifetime:
    """How long an answer stays fresh and how long it may then be served stale."""

    fresh: float  # seconds; inf = until evicted
    stale_while_revalidate: bool
    stale_if_error: float


def cache_key(request: Request, pool: str, *, private: bool, verified: bool = False) -> str:
    """The cache key: the pool and the request's canonical upstream path.

    Every answer is kept per pool, immutable ones included: by the protocol a
    version's bytes are the same everywhere, but pools exist precisely because
    operators do not want one pool's answers (a legacy mirror, a private
    Athens) to reach another's clients. Answers checked against the checksum DB
    live under their own keys: a verifying tenant never gets an unverified copy."""
    scope = f"{pool}+private" if private else pool
    if verified:
        scope += "+verified"
    return f"{scope}|{request.upstream_path()}"


def lifetime(request: Request, status: int, cfg: Cache) -> Lifetime | None:
    """How long to keep an answer; None when it must not be cached."""
    if status in (404, 410):
        return Lifetime(cfg.ttl.not_found, False, 0.0)
    if status != 200:
        return None
    if isinstance(request, SumdbRequest) and request.is_supported_probe:
        return None
    if request.immutable:
        return Lifetime(float("inf"), False, 0.0)
    ttl = cfg.ttl.latest if request.kind is Kind.LATEST else cfg.ttl.list
    return Lifetime(ttl, True, cfg.stale_if_error)


def memory_cacheable(request: Request, size: int, limit: int) -> bool:
    """Metadata always; a .zip only when small (large ones go to the disk store)."""
    if request.kind is Kind.ZIP:
        return size <= limit
    return True
