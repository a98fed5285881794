"""`goproxy-router explain`: the plan the gateway would execute, as plain data.

The same pure `router.core.plan` a request goes through (identify, then decide and
rank), without a server, network or Redis: against a fresh selection state, or a live
gateway's (`/debug/explain`, `explain --gateway URL`). Never includes a token.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from multidict import CIMultiDict

from router.core.errors import ProtocolError
from router.core.jobviews import JOB_HEADER, split_job
from router.core.model import Rules
from router.core.plan import Asked, Compiled, Plan, Ranked, Refused, decide, rank
from router.core.policy import format_age
from router.core.protocol import ModuleRequest, SumdbRequest, parse_request_target
from router.core.rollout import RolloutTracker
from router.core.tenancy import Refusal, identify, visibility
from router.state.local import SelectionState


@dataclass(frozen=True, slots=True)
class Question:
    module: str
    version: str | None = None
    kind: str | None = None
    tenant: str | None = None
    token: str | None = None
    go_version: str | None = None
    headers: Mapping[str, str] | None = None
    peer: str | None = None


def question_from(doc: Any) -> Question:
    """A question from its JSON form (the body of `/debug/explain`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("module"), str):
        raise ValueError("a JSON object with at least a 'module' string")
    fields = ("version", "kind", "tenant", "token", "go_version", "peer")
    extra = {k: doc[k] for k in fields if isinstance(doc.get(k), str)}
    headers = doc.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError("'headers' must be an object")
    return Question(
        module=doc["module"], headers={str(k): str(v) for k, v in headers.items()}, **extra
    )


def question_doc(q: Question) -> dict[str, Any]:
    """The JSON form of a question."""
    doc: dict[str, Any] = {"module": q.module, "headers": dict(q.headers or {})}
    for name in ("version", "kind", "tenant", "token", "go_version", "peer"):
        value = getattr(q, name)
        if value is not None:
            doc[name] = value
    return doc


def _request(q: Question, target: str) -> ModuleRequest | SumdbRequest:
    from router.core import modpath
    from router.core.protocol import parse_module_path

    if target.startswith("/"):  # a request target as a client sends it (sumdb too)
        return parse_request_target(target)
    kind = q.kind or ("zip" if q.version else "list")
    escaped = modpath.escape_path(q.module)
    if kind == "list":
        return parse_module_path(f"{escaped}/@v/list")
    if kind == "latest":
        return parse_module_path(f"{escaped}/@latest")
    if q.version is None:
        raise ProtocolError(f"--kind {kind} needs MODULE@VERSION", status=400)
    return parse_module_path(f"{escaped}/@v/{modpath.escape_version(q.version)}.{kind}")


def _authorization(q: Question) -> str | None:
    if q.token is None:
        return None
    if q.tenant is not None:
        raw = f"{q.tenant}:{q.token}".encode()
        return "Basic " + base64.b64encode(raw).decode()
    return f"Bearer {q.token}"


def explain(
    rules: Rules,
    q: Question,
    *,
    view: SelectionState | None = None,
    rollouts: Mapping[str, RolloutTracker] | None = None,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """The plan for one question, as JSON-ready data: the decision of `router.core.plan`,
    against `view` (a live gateway's selection state) or, by default, a fresh one."""
    headers = CIMultiDict({k: v for k, v in (q.headers or {}).items()})
    job = split_job(q.module, headers.get(JOB_HEADER))  # /job/ID/... or X-CI-Job-ID
    if job.problem is not None:
        return {"answer": {"status": 400, "reason": job.problem}}
    try:
        request = _request(q, job.path if q.module.startswith("/") else q.module)
    except ProtocolError as exc:
        return {"answer": {"status": exc.status, "reason": exc.reason}}
    out: dict[str, Any] = {"request": _request_view(request)}
    if q.go_version:
        headers["X-Go-Version"] = q.go_version
    compiled = Compiled.build(rules)
    who = identify(
        compiled.tenants,
        authorization=_authorization(q),
        tenant_header=q.tenant if q.token is None else headers.get("x-tenant-id"),
        peer=q.peer,
    )
    if isinstance(who, Refusal):
        out["answer"] = {"status": who.status, "reason": who.reason}
        return out
    out["tenant"] = {"id": who.tenant_id, "identified_by": who.method}
    asked = Asked("GET", headers, job.job, job.offline)
    decided = decide(compiled, request, who, asked, explain=True)
    if isinstance(decided, Refused):
        seen = visibility(compiled.tenants, who, request.module)
        out["access"] = {"allowed": seen.allowed, "private": seen.private, "reason": seen.reason}
        out["answer"] = {"status": decided.status, "reason": decided.reason}
        return out
    state = view or SelectionState(rules)
    ranked = rank(decided, state, rollouts or {}, rng or NoDraw(), state.now())
    out.update(_plan_view(rules, decided, ranked))
    return out


class NoDraw(random.Random):
    """The draws of a plan made without luck: no exploration, no rollout sample, and in
    `weighted` mode the best score first (a live gateway draws among the near-best)."""

    def random(self) -> float:
        return 1.0 - 1e-12

    def choices(self, population: Any, weights: Any = None, **_: Any) -> list[Any]:
        return [population[0]]


def _request_view(request: ModuleRequest | SumdbRequest) -> dict[str, Any]:
    if isinstance(request, SumdbRequest):
        return {
            "sumdb": request.db,
            "path": request.rest,
            "module": request.module,
            "kind": "sumdb",
        }
    return {"module": request.module, "version": request.version, "kind": request.kind.value}


def _plan_view(rules: Rules, plan: Plan, ranked: Ranked) -> dict[str, Any]:
    seen = plan.access
    route = plan.route
    out: dict[str, Any] = {
        "access": {"allowed": seen.allowed, "private": seen.private, "reason": seen.reason},
        "route": {
            "matched": route.route,
            "pool_from": route.source,
            "not_matched": [{"route": name, "why": why} for name, why in route.skipped],
        },
        "pool": {"name": plan.pool.name, "fallback": plan.pool.fallback, "mode": plan.mode},
        "verify_checksums": plan.verify,
        "policy": _policy(plan, plan.request.kind.value),
        "cache_key": plan.key,
        "admission": plan.admission.as_dict(),  # kept in the store and Redis, or memory only
        "job": None if plan.job is None else {"id": plan.job, "pinned": plan.pinned},
        "offline": plan.offline or None,
    }
    if isinstance(plan.request, SumdbRequest):
        out["sumdb"] = {"name": plan.request.db, "answers_proven": plan.sumdb_checked}
    compared = {r.upstream: r.compare_with for r in rules.rollouts}
    in_pool = [(c, b) for c, b in compared.items() if c in plan.pool.upstreams]
    if in_pool:
        out["rollouts"] = [{"candidate": c, "compare_with": b} for c, b in in_pool]
    if ranked.rollout is not None:
        out["compared"] = {"candidate": ranked.rollout[0], "baseline": ranked.rollout[1]}
    out.update(_candidates(rules, plan, ranked))
    return out


def _candidates(rules: Rules, plan: Plan, ranked: Ranked) -> dict[str, Any]:
    """Every upstream of the pool, in the pool's order, with its score components or why
    it is not asked; then the order they would be tried in and why the first is first."""
    scored = {s.candidate.name: s for s in ranked.order}
    excluded = dict(plan.excluded)
    rows: list[dict[str, Any]] = []
    for position, name in enumerate(plan.pool.upstreams, 1):
        up = rules.upstream(name)
        found = scored.get(name)
        row: dict[str, Any] = found.as_dict() if found is not None else {"upstream": name}
        row["public"] = up.public
        row["position"] = position
        if name in excluded:
            row["excluded"] = excluded[name]
        elif name in ranked.rolled_back:
            row["excluded"] = "rollout candidate rolled back: not used until reset"
        rows.append(row)
    return {"candidates": rows, "order": ranked.names, "reason": ranked.reason}


# Which gates a request of each kind meets: licences need the zip; list and @latest
# leave refused versions out.
_GATES_BY_KIND = {
    "zip": ("licenses", "min_age", "vulnerabilities"),
    "info": ("min_age", "vulnerabilities"),
    "mod": ("min_age", "vulnerabilities"),
    "list": ("min_age", "vulnerabilities"),
    "latest": ("min_age", "vulnerabilities"),
}


def _policy(plan: Plan, kind: str) -> dict[str, Any] | None:
    policy = plan.policy
    if policy is None:
        return None
    out: dict[str, Any] = {"mode": policy.mode}
    if policy.licenses is not None:
        lic = policy.licenses
        out["licenses"] = {
            **({"allow": list(lic.allow)} if lic.allow else {"deny": list(lic.deny)}),
            "unknown": lic.unknown,
            "from": lic.origin,
        }
    if policy.min_age is not None:
        age = policy.min_age
        out["min_age"] = {
            "seconds": age.seconds,
            "text": format_age(age.seconds),
            "from": age.origin,
        }
    if policy.vulnerabilities is not None:
        vulns = policy.vulnerabilities
        out["vulnerabilities"] = {"db": vulns.db, "allow": list(vulns.allow), "from": vulns.origin}
    out["checked_for_this_request"] = [g for g in _GATES_BY_KIND.get(kind, ()) if g in policy.gates]
    return out
