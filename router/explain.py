"""`goproxy-router explain`: the decision the gateway would take, as plain data.

Runs the same pure steps as a request (identify, visibility, route, pool,
candidates) without a server, network or Redis. Never includes a token.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from router.core.errors import ProtocolError
from router.core.model import Rules
from router.core.policy import Policy, format_age, resolve
from router.core.protocol import Kind, ModuleRequest
from router.core.routing import Facts, Router, verifies_checksums
from router.core.tenancy import Refusal, TenantIndex, identify, visibility
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


def _request(q: Question) -> ModuleRequest:
    from router.core import modpath
    from router.core.protocol import parse_module_path

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


def explain(rules: Rules, q: Question) -> dict[str, Any]:
    """The decision for one question, as JSON-ready data."""
    try:
        request = _request(q)
    except ProtocolError as exc:
        return {"answer": {"status": exc.status, "reason": exc.reason}}
    out: dict[str, Any] = {
        "request": {
            "module": request.module,
            "version": request.version,
            "kind": request.kind.value,
        }
    }
    headers = {k.lower(): v for k, v in (q.headers or {}).items()}
    index = TenantIndex.build(rules)
    who = identify(
        index,
        authorization=_authorization(q),
        tenant_header=q.tenant if q.token is None else headers.get("x-tenant-id"),
        peer=q.peer,
    )
    if isinstance(who, Refusal):
        out["answer"] = {"status": who.status, "reason": who.reason}
        return out
    out["tenant"] = {"id": who.tenant_id, "identified_by": who.method}
    seen = visibility(index, who, request.module)
    out["access"] = {"allowed": seen.allowed, "private": seen.private, "reason": seen.reason}
    if not seen.allowed:
        out["answer"] = {"status": 403, "reason": f"forbidden: {seen.reason}"}
        return out
    if seen.hidden:
        out["answer"] = {"status": 404, "reason": "another tenant's private module: not found"}
        return out
    facts = Facts(
        tenant=who.tenant_id,
        kind=request.kind.value,
        module=request.module,
        go_version=q.go_version,
        headers=headers,
    )
    decision = Router.build(rules).decide(facts, explain=True)
    out["route"] = {
        "matched": decision.route,
        "pool_from": decision.source,
        "not_matched": [{"route": name, "why": why} for name, why in decision.skipped],
    }
    pool = rules.pool(decision.pool)
    mode = pool.mode or rules.selection.mode
    out["pool"] = {"name": pool.name, "fallback": pool.fallback, "mode": mode}
    kind = request.kind.value
    out["verify_checksums"] = verifies_checksums(
        rules, decision, who.tenant, kind, request.module, seen.private
    )
    out["policy"] = _policy(rules, who.tenant_id, decision.route, kind)
    rollouts = {r.upstream: r.compare_with for r in rules.rollouts if r.upstream in pool.upstreams}
    if rollouts:
        out["rollouts"] = [{"candidate": c, "compare_with": b} for c, b in rollouts.items()]
    fresh = decision.prefer_fresh and request.kind in (Kind.LIST, Kind.LATEST)
    out.update(_candidates(rules, pool.upstreams, seen.private, request.module, mode, fresh))
    return out


def policy_for(rules: Rules, tenant: str | None, route: str | None) -> Policy | None:
    """The policy a request of `tenant` matched by `route` is under (None: no gate)."""
    tenant_block = next((t.policy for t in rules.tenants if t.id == tenant), None)
    route_block = next((r.policy for r in rules.routes if r.name == route), None)
    return resolve(tenant, tenant_block, route, route_block)


# Which gates a request of each kind meets: licences need the zip; list and @latest
# leave refused versions out.
_GATES_BY_KIND = {
    "zip": ("licenses", "min_age", "vulnerabilities"),
    "info": ("min_age", "vulnerabilities"),
    "mod": ("min_age", "vulnerabilities"),
    "list": ("min_age", "vulnerabilities"),
    "latest": ("min_age", "vulnerabilities"),
}


def _policy(
    rules: Rules, tenant: str | None, route: str | None, kind: str
) -> dict[str, Any] | None:
    policy = policy_for(rules, tenant, route)
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


def _candidates(
    rules: Rules,
    names: tuple[str, ...],
    private: bool,
    module: str,
    mode: str,
    fresh: bool,
) -> dict[str, Any]:
    """Every candidate with its score components, as a fresh gateway would see them:
    RTT not measured yet (left out: "cold"), costs from the rules, no heat yet. In `weighted` mode
    the order shown is by score; the live gateway draws the first among near-best."""
    state = SelectionState(rules, rng=random.Random(0))
    ups = [rules.upstream(n) for n in names]
    allowed = [u for u in ups if not (private and u.public)]
    shown_mode = "ordered" if mode == "ordered" else "best"
    ranking = state.ranking(allowed, module, prefer_fresh=fresh, mode=shown_mode)
    ranked = ranking.order
    rows: list[dict[str, Any]] = []
    for position, (up, scored) in enumerate(zip(ups, state.scored(ups, module), strict=True), 1):
        row = scored.as_dict()
        row["public"] = up.public
        row["position"] = position
        if private and up.public:
            row["excluded"] = "public upstream: a private module is never sent to it"
        rows.append(row)
    out: dict[str, Any] = {
        "candidates": rows,
        "order": [s.candidate.name for s in ranked],
        "reason": ranking.reason,
    }
    if private and not allowed:
        out["answer"] = {"status": 404, "reason": "private module and no private upstream in pool"}
    return out
