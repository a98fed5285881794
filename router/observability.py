"""Metric names in one place, on a registry owned by the application.

Labels only ever take values from bounded sets: tenant ids from the rules
(plus `anonymous`), upstream and pool names, request kinds, status classes.
Never a module path, version, token or client address.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client import Counter as _Counter
from prometheus_client import Histogram as _Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "goproxy_router_"
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    1.2,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    30.0,
    120.0,
)


_M = TypeVar("_M", bound="_RememberLabels")


class _RememberLabels:
    """`labels(...)` remembered: prometheus_client validates and locks on every call,
    which costs more per request than the rest of a cached answer. Children are never
    removed from these metrics (label values come from bounded sets)."""

    _remembered: dict[tuple[Any, ...], Any]

    def labels(self: _M, *values: Any, **named: Any) -> _M:
        if named:
            return super().labels(*values, **named)  # type: ignore[misc, no-any-return]
        try:
            return self._remembered[values]  # type: ignore[no-any-return]
        except AttributeError:
            self._remembered = {}
        except KeyError:
            pass
        child = self._remembered[values] = super().labels(*values)  # type: ignore[misc]
        return child  # type: ignore[no-any-return]


class Counter(_RememberLabels, _Counter):
    pass


class Histogram(_RememberLabels, _Histogram):
    pass


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class Metrics:
    """Every metric the gateway exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # same series, one worker or many
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            PREFIX + "requests_total",
            "Requests answered, by tenant, kind and status class.",
            ("tenant", "kind", "status"),
            registry=r,
        )
        self.request_seconds = Histogram(
            PREFIX + "request_duration_seconds",
            "Time to answer a request (whole body for streamed zips), by kind.",
            ("kind",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            PREFIX + "in_flight_requests",
            "Requests being served now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.upstream_seconds = Histogram(
            PREFIX + "upstream_request_duration_seconds",
            "Upstream time to first byte, by upstream.",
            ("upstream",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.upstream_errors = Counter(
            PREFIX + "upstream_errors_total",
            "Failed upstream attempts by upstream and cause.",
            ("upstream", "cause"),
            registry=r,
        )
        self.selections = Counter(
            PREFIX + "upstream_selections_total",
            "Answers served per upstream and pool.",
            ("pool", "upstream"),
            registry=r,
        )
        self.fallbacks = Counter(
            PREFIX + "fallbacks_total",
            "Moves from one upstream to the next, by pool and the upstream left.",
            ("pool", "upstream"),
            registry=r,
        )
        self.access_log_dropped = Counter(
            PREFIX + "access_log_dropped_total",
            "Access lines dropped because the buffer of lines waiting to be written was full.",
            registry=r,
        )
        self.auth_failures = Counter(
            PREFIX + "auth_failures_total",
            "Requests refused for identity, by status (401, 403).",
            ("status",),
            registry=r,
        )
        self.access_denied = Counter(
            PREFIX + "access_denied_total",
            "Requests refused by a tenant's allow/deny rules.",
            ("tenant",),
            registry=r,
        )
        self.private_blocked = Counter(
            PREFIX + "private_blocked_total",
            "Private-module requests answered 404 instead of reaching a public upstream.",
            ("tenant",),
            registry=r,
        )
        self.rules_reloads = Counter(
            PREFIX + "rules_reloads_total",
            "Rules reload attempts by result (ok, invalid).",
            ("result",),
            registry=r,
        )
        self.rules_last_reload_ok = Gauge(
            PREFIX + "rules_last_reload_success",
            "1 when the last rules (re)load was valid, 0 while the rules on disk are refused.",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.rules_generation = Gauge(
            PREFIX + "rules_generation",
            "How many rule sets were loaded since start.",
            registry=r,
            multiprocess_mode="livemax",
        )

        self.redis_up = Gauge(
            PREFIX + "redis_up",
            "1 when the last exchange with Redis worked.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.redis_errors = Counter(
            PREFIX + "redis_errors_total",
            "Failed Redis exchanges by operation.",
            ("op",),
            registry=r,
        )
        self.redis_seconds = Histogram(
            PREFIX + "redis_duration_seconds",
            "Time of each background Redis exchange by operation.",
            ("op",),
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=r,
        )
        self.upstream_bytes = Counter(
            PREFIX + "upstream_bytes_total",
            "Body bytes served from each upstream.",
            ("upstream",),
            registry=r,
        )
        self.upstream_spend = Counter(
            PREFIX + "upstream_spend_usd_total",
            "Estimated bandwidth spend: bytes served x the upstream's cost per GB.",
            ("upstream",),
            registry=r,
        )
        self.upstream_rtt = Gauge(
            PREFIX + "upstream_rtt_seconds",
            "Live RTT estimate (decayed median time to first byte).",
            ("upstream",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.upstream_cost = Gauge(
            PREFIX + "upstream_cost_per_gb",
            "Bandwidth cost in effect (rules or override).",
            ("upstream",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.upstream_ejected = Gauge(
            PREFIX + "upstream_ejected",
            "1 while an upstream is ejected.",
            ("upstream",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.upstream_score = Gauge(
            PREFIX + "upstream_score",
            "Score components per pool and upstream (heat is module-specific: not exported).",
            ("pool", "upstream", "component"),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.probes = Counter(
            PREFIX + "upstream_probes_total",
            "Active probes by upstream and result.",
            ("upstream", "result"),
            registry=r,
        )

        self.cache_requests = Counter(
            PREFIX + "cache_requests_total",
            "Cache lookups by kind and result (hit, stale, stale_if_error, miss, coalesced).",
            ("kind", "result"),
            registry=r,
        )
        # L2 admission (router/core/admission.py, router/admitting.py)
        self.cache_admission = Counter(
            PREFIX + "cache_admission_total",
            "Version answers offered to a shared tier (disk, redis), by result (admitted, "
            "not_admitted) and reason (release, prerelease, pseudo, regex).",
            ("tier", "result", "reason"),
            registry=r,
        )
        self.coalesced = Counter(
            PREFIX + "coalesced_requests_total",
            "Requests that waited for another request's identical fetch.",
            registry=r,
        )
        self.cache_entries = Gauge(
            PREFIX + "cache_entries",
            "Entries in the cache, by tier.",
            ("tier",),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_bytes = Gauge(
            PREFIX + "cache_bytes",
            "Bytes held by the cache, by tier.",
            ("tier",),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.cache_evictions = Counter(
            PREFIX + "cache_evictions",
            "Entries evicted to stay within the budget, by tier.",
            ("tier",),
            registry=r,
        )
        self.connections = Counter(
            PREFIX + "upstream_connections_total",
            "Upstream connections by upstream and event: opened (new connections) and used"
            " (requests sent); used - opened were served on reused keep-alive connections.",
            ("upstream", "event"),
            registry=r,
        )

        self.rate_limited = Counter(
            PREFIX + "rate_limited_total",
            "Requests answered 429, by tenant and reason (tenant, anonymous, abuse).",
            ("tenant", "reason"),
            registry=r,
        )
        self.abuse_flagged = Counter(
            PREFIX + "abuse_flagged_total",
            "Clients newly flagged for abusive pulling, by configured action.",
            ("action",),
            registry=r,
        )
        self.guard_events = Counter(
            PREFIX + "connection_guard_total",
            "Connections cut by the guard: connection_refused, header_timeout, header_too_large.",
            ("event",),
            registry=r,
        )

        self.checksum_mismatches = Counter(
            PREFIX + "checksum_mismatches_total",
            "Upstream .mod/.zip answers refused because the checksum DB has other hashes.",
            ("upstream",),
            registry=r,
        )
        self.verifications = Counter(
            PREFIX + "checksum_verifications_total",
            "Verify-before-serve checks by kind and result (ok, mismatch, unavailable).",
            ("kind", "result"),
            registry=r,
        )
        self.sumdb_inconsistent = Counter(
            PREFIX + "sumdb_inconsistent_total",
            "Checksum-DB answers refused: bad note signature, a fork, or tiles that do not prove.",
            ("sumdb", "reason"),
            registry=r,
        )
        self.sumdb_tree_size = Gauge(
            PREFIX + "sumdb_tree_size",
            "Records in the latest verified tree head of each checksum DB.",
            ("sumdb",),
            registry=r,
            multiprocess_mode="max",
        )
        self.rollout_state = Gauge(
            PREFIX + "rollout_state",
            "1 for a rollout candidate's current state (comparing, healthy, rolled_back).",
            ("upstream", "state"),
            registry=r,
            multiprocess_mode="max",
        )
        self.rollout_comparisons = Counter(
            PREFIX + "rollout_comparisons_total",
            "A/B comparisons of a rollout candidate with its baseline, by result.",
            ("upstream", "result"),
            registry=r,
        )
        self.policy_refusals = Counter(
            PREFIX + "policy_refusals_total",
            "Module versions refused by a policy gate (403 or left out of a list), by tenant "
            "and rule (licence, licence_unknown, age, age_unknown, vulnerability, "
            "vulndb_unavailable).",
            ("tenant", "rule"),
            registry=r,
        )
        self.policy_warnings = Counter(
            PREFIX + "policy_warnings_total",
            "Module versions a policy in warn mode would have refused and that were served, "
            "by tenant and rule.",
            ("tenant", "rule"),
            registry=r,
        )

        self.storage_errors = Counter(
            PREFIX + "storage_errors_total",
            "Failed writes to the artifact store (tier disk) or the spools (tier spool), by "
            "cause (disk_full, io_error, read_only, quota, ...); the client is served anyway.",
            ("tier", "cause"),
            registry=r,
        )
        self.storage_degraded = Gauge(
            PREFIX + "storage_degraded",
            "1 while the last write to a storage tier (disk, spool) failed.",
            ("tier",),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.bad_zips = Counter(
            PREFIX + "bad_zips_total",
            "Zips from upstreams that break Go's module zip rules (never kept), by cause.",
            ("upstream", "cause"),
            registry=r,
        )
        self.stalled_clients = Counter(
            PREFIX + "stalled_clients_total",
            "Downloads dropped because the client read nothing for server.stall_timeout.",
            registry=r,
        )
        self.redis_breaker_open = Gauge(
            PREFIX + "redis_breaker_open",
            "1 while requests skip Redis after a failed exchange (until a probe succeeds).",
            registry=r,
            multiprocess_mode="livemax",
        )
        # ---- L3 job views and offline mode (router.jobviews)
        self.job_views = Gauge(
            PREFIX + "job_views",
            "Live L3 job views (the fleet's, with Redis), as of the last collection.",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.job_pins = Counter(
            PREFIX + "job_pins_total",
            "Job-view answers: pinned (first answer recorded) or served (a pin answered).",
            ("event",),
            registry=r,
        )
        self.job_drops = Counter(
            PREFIX + "job_view_drops_total",
            "Job views dropped by reason: idle, count, bytes, admin.",
            ("reason",),
            registry=r,
        )
        self.offline_misses = Counter(
            PREFIX + "offline_misses_total",
            "Offline requests answered 404 because nothing was cached, by mode.",
            ("mode",),
            registry=r,
        )

        # ---- the bucket tier (docs/bucket.md) ----
        self.bucket_lookups = Counter(
            PREFIX + "bucket_lookups_total",
            "Zip lookups in the bucket after a disk miss, by result: hit (backfilled to disk), "
            "waited (after another replica fetched it), redirect (a presigned URL), miss.",
            ("result",),
            registry=r,
        )
        self.bucket_errors = Counter(
            PREFIX + "bucket_errors_total",
            "Failed bucket calls by op (head, get, put, presign, delete) and cause (unreachable, "
            "timeout, denied, not_found, corrupt, down, failed, no_room, source_gone); each is "
            "a miss or a skipped publish, never a client error.",
            ("op", "cause"),
            registry=r,
        )
        self.bucket_published = Counter(
            PREFIX + "bucket_published_total",
            "Zips offered to the bucket by result: published, already_there, failed, skipped.",
            ("result",),
            registry=r,
        )
        self.bucket_bytes = Counter(
            PREFIX + "bucket_bytes_total",
            "Artifact bytes moved to (up) and from (down) the bucket.",
            ("direction",),
            registry=r,
        )
        self.bucket_down = Gauge(
            PREFIX + "bucket_down",
            "1 while the bucket is not used (its endpoint failed; a probe checks it again).",
            registry=r,
            multiprocess_mode="livemax",
        )
        # ---- end bucket tier ----

        # Label sets alerts watch with increase(): present (at 0) from the start.
        for result in ("ok", "invalid"):
            self.rules_reloads.labels(result)
        for action in ("flag", "throttle"):
            self.abuse_flagged.labels(action)
        for tier in ("disk", "spool"):
            self.storage_degraded.labels(tier).set(0)
        self.rules_last_reload_ok.set(1)

    def exposition(self) -> tuple[bytes, str]:
        """The text format; with workers, the sum over every worker process."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
