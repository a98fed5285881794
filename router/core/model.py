"""The rules as typed, frozen values: what the rest of the gateway reads.

Built by `router.config.loader` from a checked document; every object that
an operator names (upstream, pool, tenant, route) remembers where it was
defined so later checks can point at FILE:LINE. Part of the pure core: the
decisions in `router.core` take these values, and nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from router.core.admission import DEFAULT_RULE, AdmitRule
from router.core.bucketing import BucketConfig
from router.core.policy import PolicyBlock

# The way to a key or list item inside a value: ("match", "tenant", 0).
LinePath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Where:
    """The file and line a value came from, and the lines of what is written inside it."""

    file: str
    line: int
    inner: Mapping[LinePath, int] = field(default_factory=dict, compare=False, repr=False)

    def at(self, *path: str | int) -> Where:
        """Where the key or list item at `path` was written, e.g. at("upstreams", 1).

        A path that was not written (a default) falls back to the nearest key
        around it that was, and at last to this value's own line.
        """
        while path:
            line = self.inner.get(path)
            if line is not None:
                return Where(self.file, line)
            path = path[:-1]
        return Where(self.file, self.line)


@dataclass(frozen=True, slots=True)
class Rate:
    """A token rate: `per_second` tokens are added every second."""

    per_second: float
    text: str


Tier = Literal["L0", "L1", "L2", "L3"]
Fallback = Literal["not-found", "any-error"]

NOWHERE = Where("<defaults>", 0)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Deadlines for one upstream, in seconds."""

    connect: float = 2.0
    first_byte: float = 10.0
    metadata: float = 30.0
    total: float = 600.0
    idle: float = 30.0


@dataclass(frozen=True, slots=True)
class UpstreamAuth:
    """Where an upstream's credentials come from (never the secret itself)."""

    bearer_env: str | None = None
    bearer_file: str | None = None
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Upstream:
    """One GOPROXY backend."""

    name: str
    url: str
    tier: Tier = "L1"
    cost_per_gb: float = 0.0
    sumdb: tuple[str, ...] = ()
    public: bool = True
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_connections: int = 100
    auth: UpstreamAuth | None = None
    tls: UpstreamTLS | None = None
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class Pool:
    """An ordered list of upstreams and how to move from one to the next."""

    name: str
    upstreams: tuple[str, ...]
    fallback: Fallback = "not-found"
    mode: Literal["best", "weighted", "ordered"] | None = None
    admit: AdmitRule | None = None  # overrides cache.admit for this pool
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket: `rate` tokens per second, at most `burst` saved up."""

    rate: Rate
    burst: int


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    tokens: tuple[str, ...] = ()
    pool: str | None = None
    private: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    verify_checksums: bool = False
    client_certs: tuple[str, ...] = ()
    limit: Bucket | None = None
    policy: PolicyBlock | None = None
    admit: AdmitRule | None = None  # overrides the pool's and cache.admit
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    """Exact text, or a regex searched in the header's value."""

    name: str
    exact: str | None = None
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    tenant: tuple[str, ...] = ()
    go_version: str | None = None
    module: tuple[str, ...] = ()
    kind: tuple[str, ...] = ()
    header: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    pool: str
    match: RouteMatch = field(default_factory=RouteMatch)
    prefer_fresh: bool = False
    verify_checksums: bool | None = None
    policy: PolicyBlock | None = None
    offline: bool = False  # hermetic: only what is cached is served (router.core.jobviews)
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class Weights:
    rtt: float = 0.40
    cost: float = 0.35
    heat: float = 0.25


@dataclass(frozen=True, slots=True)
class Ejection:
    consecutive_failures: int = 5
    base: float = 30.0
    max: float = 300.0


@dataclass(frozen=True, slots=True)
class Selection:
    weights: Weights = field(default_factory=Weights)
    mode: Literal["best", "weighted", "ordered"] = "weighted"
    probe_interval: float = 10.0
    rtt_decay: float = 10.0
    heat_window: float = 3600.0
    ejection: Ejection = field(default_factory=Ejection)


@dataclass(frozen=True, slots=True)
class CacheTTL:
    list: float = 60.0
    latest: float = 60.0
    not_found: float = 30.0


@dataclass(frozen=True, slots=True)
class Cache:
    memory: int = 256 << 20
    dir: str = ""
    disk: int = 10 << 30
    spool: int = 512 << 20
    bad_zips: Literal["serve", "refuse"] = "serve"
    ttl: CacheTTL = field(default_factory=CacheTTL)
    stale_if_error: float = 86400.0
    decay: float = 0.999
    k: int = 2
    crp: float = 0.3
    admit: AdmitRule = DEFAULT_RULE  # versions kept in the store and Redis (core/admission)
    bucket: BucketConfig | None = None  # the object-storage tier behind `dir`


@dataclass(frozen=True, slots=True)
class Default:
    pool: str | None = None
    anonymous: bool = True
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class Abuse:
    pulls: int = 50
    window: float = 300.0
    by: tuple[str, ...] = ("ip", "user_agent")
    action: Literal["flag", "throttle"] = "flag"
    throttle: Bucket | None = None
    cooldown: float = 900.0
    exempt: tuple[str, ...] = ()  # IP networks or tenant ids
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class Limits:
    tenant: Bucket | None = None
    anonymous: Bucket | None = None
    abuse: Abuse | None = None


@dataclass(frozen=True, slots=True)
class ChecksumDB:
    name: str
    key: str
    url: str | None = None
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class Rollout:
    upstream: str
    compare_with: str
    sample: float = 0.1
    max_mismatch: float = 0.05
    window: float = 30.0
    where: Where = field(default=NOWHERE, compare=False)


@dataclass(frozen=True, slots=True)
class Admin:
    networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Server:
    header_timeout: float = 10.0
    max_header_bytes: int = 16 << 10
    max_connections: int = 10000
    shutdown_timeout: float = 30.0
    stall_timeout: float = 60.0
    streams_per_client: int = 32


@dataclass(frozen=True, slots=True)
class Logging:
    level: str = "info"
    access: bool = True
    sample: float = 1.0


@dataclass(frozen=True, slots=True)
class Tracing:
    enabled: bool = False
    endpoint: str | None = None
    service_name: str = "goproxy-router"
    sample: float = 1.0
    export_timeout: float = 5.0
    batch_size: int = 512


@dataclass(frozen=True, slots=True)
class ServerTLS:
    cert: str | None = None
    key: str | None = None
    client_ca: str | None = None
    client_auth: Literal["none", "optional", "require"] = "none"


@dataclass(frozen=True, slots=True)
class Jobs:
    """L3 job views (router.core.jobviews): idle lifetime and bounds."""

    ttl: float = 3600.0
    max_views: int = 10000
    max_bytes: int = 256 << 20


@dataclass(frozen=True, slots=True)
class Rules:
    """A whole, validated rule set."""

    upstreams: tuple[Upstream, ...]
    pools: tuple[Pool, ...]
    default: Default = field(default_factory=Default)
    tenants: tuple[Tenant, ...] = ()
    routes: tuple[Route, ...] = ()
    listen: str | None = None
    tls: ServerTLS | None = None
    trusted_proxies: tuple[str, ...] = ()
    redis: str | None = None
    selection: Selection = field(default_factory=Selection)
    cache: Cache = field(default_factory=Cache)
    limits: Limits | None = None
    checksum_dbs: tuple[ChecksumDB, ...] = ()
    nosumdb: tuple[str, ...] = ()
    rollouts: tuple[Rollout, ...] = ()
    admin: Admin = field(default_factory=Admin)
    server: Server = field(default_factory=Server)
    logging: Logging = field(default_factory=Logging)
    tracing: Tracing = field(default_factory=Tracing)
    jobs: Jobs = field(default_factory=Jobs)
    network: Literal["online", "offline"] = "online"  # offline: serve only what is cached
    sources: tuple[str, ...] = ()

    def upstream(self, name: str) -> Upstream:
        for up in self.upstreams:
            if up.name == name:
                return up
        raise KeyError(name)

    def pool(self, name: str) -> Pool:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    @property
    def default_pool(self) -> str:
        """The pool used when no route and no tenant pool applies."""
        if self.default.pool is not None:
            return self.default.pool
        return self.pools[0].name
