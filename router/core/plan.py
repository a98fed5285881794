"""Every decision about one request, in one place: what the handler executes and what
`explain` prints.

Two pure steps, so that a cached answer costs no ranking:

- `decide`: visibility, route, pool, the upstreams allowed (private modules never go to
  public ones; a checksum-DB request only to upstreams proxying that DB), whether the
  answer is verified against the checksum DB, the policy, the cache key, whether the
  version's answers may be kept in the store and Redis (`core/admission`). A `Refused`
  when the request must be answered without any upstream.
  Also the L3 job view (`router.core.jobviews`): the request's job, whether its answer
  is pinned there, and whether it is served offline (only from what is cached).
- `rank`: the order to try those upstreams in (live RTT, cost, heat, health from a
  read-only selection view), the reason the first is first, rolled-back rollout
  candidates left out, and whether this request is compared in a rollout.

`plan` runs both. Nothing here does I/O; time and randomness come in as arguments.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from router.core.admission import Admission, admit_request, admit_rule
from router.core.jobviews import offline_mode, question
from router.core.lifetimes import cache_key
from router.core.model import Pool, Rules, Upstream, Weights
from router.core.modpath import match_prefix_patterns
from router.core.policy import Policy, resolve
from router.core.protocol import Kind, ModuleRequest, SumdbRequest
from router.core.rollout import RolloutTracker
from router.core.routing import Facts, RouteDecision, Router, verifies_checksums
from router.core.selection import Candidate, Ranking, Scored
from router.core.selection import rank as rank_scored
from router.core.selection import score as score_candidates
from router.core.tenancy import Identity, TenantIndex, Visibility, visibility

Request = ModuleRequest | SumdbRequest
FRESH_TIERS = ("L0", "L1")  # a route's prefer_fresh: these tiers first for list/@latest
_COMPARED_KINDS = (Kind.INFO, Kind.MOD, Kind.ZIP)


@dataclass(frozen=True, slots=True)
class Compiled:
    """One rule set and what is compiled from it once (tenant index, routes)."""

    rules: Rules
    tenants: TenantIndex
    router: Router
    sumdb_names: frozenset[str]  # checksum DBs the rules name: their answers are proven
    # The request headers `decide` reads (lower-case): a plan is the same for the same
    # target, identity, method and these values, so `decide_once` remembers plans.
    read_headers: tuple[str, ...] = ()
    plans: dict[tuple[object, ...], Plan | Refused] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def build(cls, rules: Rules) -> Compiled:
        checked = frozenset(db.name for db in rules.checksum_dbs)
        router = Router.build(rules)
        read = dict.fromkeys(["x-go-version", *(n for r in router.routes for n, _, _ in r.headers)])
        return cls(rules, TenantIndex.build(rules), router, checked, tuple(read))


@dataclass(frozen=True, slots=True)
class Asked:
    """What the client sent besides the target: the method and the headers routes read."""

    method: str
    headers: Mapping[str, str]  # a case-insensitive mapping (aiohttp's, or lower-case keys)
    job: str | None = None  # the CI job id (router.core.jobviews.split_job)
    job_offline: bool = False  # the job asked for hermetic mode (/job/ID/offline)

    @property
    def go_version(self) -> str | None:
        return self.headers.get("X-Go-Version") or self.headers.get("x-go-version")


@dataclass(frozen=True, slots=True)
class Refused:
    """Answered without any upstream: status, one-line reason, what to count."""

    status: int
    reason: str
    counted: str = ""  # access_denied, private_blocked (a metric), or nothing
    padded: bool = False  # delayed like a real not-found (another tenant's private module)


@dataclass(frozen=True, slots=True)
class Plan:
    """What serves a request that may go upstream."""

    rules: Rules = field(compare=False, repr=False)
    method: str
    request: Request
    identity: Identity
    route: RouteDecision
    pool: Pool  # with the fallback in effect (any-error for checksum-DB requests)
    upstreams: tuple[Upstream, ...]  # allowed, in the pool's order
    excluded: tuple[tuple[str, str], ...]  # (upstream, why it is not asked)
    private: bool  # the module matches the tenant's own private patterns
    access: Visibility
    verify: bool  # .mod/.zip checked against the checksum DB before serving
    sumdb_checked: bool  # a checksum-DB request whose answers are proven
    policy: Policy | None
    mode: str  # selection mode in effect
    prefer_fresh: bool
    transfer: bool  # a zip download: bandwidth counts in the ranking
    key: str  # the cache key of its answer
    admission: Admission  # kept in the artifact store and Redis, or memory only
    job: str | None = None  # the CI job whose view it belongs to
    pinned: bool = False  # a mutable question: the job's first answer is served again
    offline: str = ""  # why only cached answers are served (network, route, job); '' online

    @property
    def module(self) -> str | None:
        return self.request.module


@dataclass(frozen=True, slots=True)
class Ranked:
    """The order to try a plan's upstreams in, and whether the request is compared."""

    order: tuple[Scored, ...]
    reason: str  # see router.core.selection.Ranking
    rolled_back: tuple[str, ...]  # rollout candidates left out
    rollout: tuple[str, str] | None  # (candidate, baseline) when this request is compared

    @property
    def names(self) -> list[str]:
        return [s.candidate.name for s in self.order]


class SelectionView(Protocol):
    """What ranking reads of the live selection state (nothing is changed)."""

    weights: Weights

    def candidate(self, up: Upstream, module: str | None, now: float) -> Candidate: ...


# ------------------------------------------------------------------ decide


def decide(
    compiled: Compiled, request: Request, who: Identity, asked: Asked, *, explain: bool = False
) -> Plan | Refused:
    """Everything about `request` that does not depend on live upstream state (with
    `explain`, the plan also says why each earlier route did not match)."""
    rules = compiled.rules
    module = request.module
    seen = visibility(compiled.tenants, who, module)
    if not seen.allowed:
        return Refused(403, f"forbidden: {seen.reason}", "access_denied")
    if seen.hidden:
        return Refused(404, f"not found: {module}", "private_blocked", padded=True)
    if isinstance(request, SumdbRequest) and module is not None:
        blocked = _sumdb_blocked(rules, module, seen.private)
        if blocked:
            return Refused(404, blocked)
    facts = Facts(
        tenant=who.tenant_id,
        kind=request.kind.value,
        module=module,
        go_version=asked.go_version,
        headers=asked.headers,
        job=asked.job,
    )
    route = compiled.router.decide(facts, explain=explain)
    pool = rules.pool(route.pool)
    admitted = admission_for(rules, pool, who, request)
    upstreams, excluded = _allowed(rules, pool, request, seen.private)
    if seen.private and not upstreams and excluded:
        reason = f"not found: {module} is private and pool {pool.name} has no private upstream"
        return Refused(404, reason, "private_blocked")
    checked = isinstance(request, SumdbRequest) and request.db in compiled.sumdb_names
    if isinstance(request, SumdbRequest):
        pool = Pool(pool.name, pool.upstreams, "any-error", pool.mode)  # every copy is checked
    verify = asked.method == "GET" and verifies_checksums(
        rules, route, who.tenant, request.kind.value, module, seen.private
    )
    return Plan(
        rules=rules,
        method=asked.method,
        request=request,
        identity=who,
        route=route,
        pool=pool,
        upstreams=upstreams,
        excluded=excluded,
        private=seen.private,
        access=seen,
        verify=verify,
        sumdb_checked=checked,
        policy=policy_for(rules, who.tenant_id, route.route),
        mode=pool.mode or rules.selection.mode,
        prefer_fresh=route.prefer_fresh and request.kind in (Kind.LIST, Kind.LATEST),
        transfer=request.kind is Kind.ZIP and asked.method == "GET",
        key=cache_key(request, pool.name, private=seen.private, verified=verify),
        admission=admitted,
        job=asked.job,
        pinned=asked.job is not None and asked.method == "GET" and question(request) is not None,
        offline=offline_mode(
            rules.network, route.route, _route_offline(rules, route.route), asked.job_offline
        ),
    )


PLANS_REMEMBERED = 16_384  # plans kept per rule set; all are forgotten when it fills


def decide_once(
    compiled: Compiled, request: Request, who: Identity, asked: Asked
) -> Plan | Refused:
    """`decide`, remembered per rule set: everything it reads is in the key (the target,
    the tenant and how it was identified, the method, the job, the headers routes read)."""
    headers = asked.headers
    key = (
        request,
        who.tenant_id,
        who.method,
        asked.method,
        asked.job,
        asked.job_offline,
        *[headers.get(name) for name in compiled.read_headers],
    )
    plans = compiled.plans
    found = plans.get(key)
    if found is None:
        found = decide(compiled, request, who, asked)
        if len(plans) >= PLANS_REMEMBERED:
            plans.clear()
        plans[key] = found
    return found


def _route_offline(rules: Rules, route: str | None) -> bool:
    return route is not None and any(r.offline for r in rules.routes if r.name == route)


def _allowed(
    rules: Rules, pool: Pool, request: Request, private: bool
) -> tuple[tuple[Upstream, ...], tuple[tuple[str, str], ...]]:
    """The pool's upstreams this request may go to, in order, and why others may not."""
    allowed: list[Upstream] = []
    excluded: list[tuple[str, str]] = []
    for name in pool.upstreams:
        up = rules.upstream(name)
        if isinstance(request, SumdbRequest) and request.db not in up.sumdb:
            excluded.append((name, f"does not proxy checksum database {request.db}"))
        elif private and up.public:
            excluded.append((name, "public upstream: a private module is never sent to it"))
        else:
            allowed.append(up)
    return tuple(allowed), tuple(excluded)


def _sumdb_blocked(rules: Rules, module: str, private: bool) -> str | None:
    """Checksum-DB lookups for private or nosumdb paths are never forwarded anywhere."""
    if private or any(match_prefix_patterns(p, module) for p in rules.nosumdb):
        return (
            f"not found: {module} is private here; its checksum is not looked up "
            "(set GOPRIVATE or GONOSUMDB for it)"
        )
    return None


def admission_for(rules: Rules, pool: Pool, who: Identity, request: Request) -> Admission:
    """L2 admission: the tenant's `admit`, else the pool's, else `cache.admit`."""
    tenant_rule = who.tenant.admit if who.tenant is not None else None
    return admit_request(admit_rule(rules.cache.admit, pool.admit, tenant_rule), request)


def policy_for(rules: Rules, tenant: str | None, route: str | None) -> Policy | None:
    """The policy a request of `tenant` matched by `route` is under (None: no gate)."""
    tenant_block = next((t.policy for t in rules.tenants if t.id == tenant), None)
    route_block = next((r.policy for r in rules.routes if r.name == route), None)
    return resolve(tenant, tenant_block, route, route_block)


# ------------------------------------------------------------------ rank


def rank(
    plan: Plan,
    view: SelectionView,
    rollouts: Mapping[str, RolloutTracker],
    rng: random.Random,
    now: float,
) -> Ranked:
    """The order to try `plan`'s upstreams in, from the live state in `view`."""
    ups, rolled_back = _without_rolled_back(plan.upstreams, rollouts)
    if len(ups) < 2 or isinstance(plan.request, SumdbRequest):
        # nothing to rank (checksum DB mirrors: the pool's order; liars are ejected there)
        order = tuple(Scored(view.candidate(u, None, now), 1.0, 1.0, 0.0, 1.0) for u in ups)
        ranking = Ranking(list(order), "ordered")
    else:
        module = plan.module if plan.mode != "ordered" else None
        scored = score_candidates(
            [view.candidate(u, module, now) for u in ups], view.weights, transfer=plan.transfer
        )
        fresh = FRESH_TIERS if plan.prefer_fresh else ()
        ranking = rank_scored(scored, mode=plan.mode, rng=rng, fresh_tiers=fresh)
    order = tuple(ranking.order)
    return Ranked(order, ranking.reason, rolled_back, _compared(plan, order, rollouts, rng))


def _without_rolled_back(
    ups: Sequence[Upstream], rollouts: Mapping[str, RolloutTracker]
) -> tuple[list[Upstream], tuple[str, ...]]:
    """`ups` without rolled-back rollout candidates (unless nothing else is left)."""
    if not rollouts:
        return list(ups), ()
    out = [u for u in ups if not _rolled_back(rollouts, u.name)]
    if not out:
        return list(ups), ()
    return out, tuple(u.name for u in ups if _rolled_back(rollouts, u.name))


def _rolled_back(rollouts: Mapping[str, RolloutTracker], name: str) -> bool:
    tracker = rollouts.get(name)
    return tracker is not None and tracker.rolled_back_at is not None


def _compared(
    plan: Plan,
    order: Sequence[Scored],
    rollouts: Mapping[str, RolloutTracker],
    rng: random.Random,
) -> tuple[str, str] | None:
    """Whether this request is compared: an immutable GET whose first upstream is a
    rollout candidate, drawn with the rollout's `sample`. A verified request is never
    compared, nor a private module with a public baseline (its name would leak)."""
    request = plan.request
    if not rollouts or not order or plan.verify or not isinstance(request, ModuleRequest):
        return None
    if request.kind not in _COMPARED_KINDS or not request.immutable:
        return None
    if plan.method != "GET":
        return None  # a HEAD has no body to compare
    tracker = rollouts.get(order[0].candidate.name)
    if tracker is None or not tracker.sampled(rng.random()):
        return None
    baseline = tracker.config.compare_with
    base = next((u for u in plan.rules.upstreams if u.name == baseline), None)
    if base is None or (plan.private and base.public):
        return None
    return (tracker.upstream, baseline)
