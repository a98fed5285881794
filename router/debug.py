"""Admin-only `/debug/*` endpoints: what selection sees, live. Never a secret."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.core.model import Admin

if TYPE_CHECKING:
    from router.app import GatewayState


def is_admin(admin: Admin, peer: str | None, authorization: str | None) -> bool:
    """Admin when the peer is in `admin.networks` or presents an admin Bearer token."""
    if peer:
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            ip = None
        if ip is not None and any(
            ip in ipaddress.ip_network(net, strict=False) for net in admin.networks
        ):
            return True
    if authorization and authorization[:7].lower() == "bearer " and admin.tokens:
        digest = (
            "sha256:" + hashlib.sha256(authorization[7:].strip().encode()).hexdigest()
        ).encode()
        found = False
        for stored in admin.tokens:
            found |= hmac.compare_digest(stored.encode(), digest)
        return found
    return False


def upstreams_view(state: GatewayState, module: str | None) -> dict[str, Any]:
    """Live RTT, cost, health and per-pool scores (heat for `module` when given)."""
    sel = state.selection
    rules = state.current.rules
    now = sel.now()
    ups: dict[str, Any] = {}
    for up in rules.upstreams:
        live = sel.live(up.name)
        ups[up.name] = {
            "url": up.url,
            "tier": up.tier,
            "public": up.public,
            "rtt_seconds": live.rtt.value,
            "rtt_samples": live.rtt.samples,
            "shared_rtt_seconds": live.shared_rtt,
            "bandwidth_bytes_per_second": live.bandwidth.value,
            "cost_per_gb": sel.cost(up.name),
            "cost_per_gb_rules": up.cost_per_gb,
            "cost_overridden": up.name in sel.cost_overrides,
            "health": live.health.state(now),
            "consecutive_failures": live.health.consecutive_failures,
            "ejections": live.health.ejections,
            "ejected_for_seconds": max(0.0, live.health.ejected_until - now),
            "bytes_served": live.bytes,
            "top_modules": [m for m, _ in sel.heat.top(up.name, now, 5)],
        }
    for rollout in state.rollouts.view():
        name = str(rollout["upstream"])
        if name in ups:
            ups[name]["rollout"] = rollout
    pools = {}
    for pool in rules.pools:
        ranking = sel.ranking([rules.upstream(n) for n in pool.upstreams], module, mode=pool.mode)
        pools[pool.name] = {
            "fallback": pool.fallback,
            "mode": pool.mode or sel.mode,
            "reason": ranking.reason,
            "candidates": [s.as_dict() for s in ranking.order],
        }
    weights = {"rtt": sel.weights.rtt, "cost": sel.weights.cost, "heat": sel.weights.heat}
    redis = state.redis_sync
    return {
        "weights": weights,
        "module": module,
        "redis": None if redis is None else {"connected": redis.healthy},
        "upstreams": ups,
        "pools": pools,
        "rollouts": state.rollouts.view(),
        "checksum_dbs": state.checksums.view(),
    }


async def debug_upstreams(http: web.Request) -> web.StreamResponse:
    from router.app import STATE

    state = http.app[STATE]
    if not is_admin(state.current.rules.admin, http.remote, http.headers.get("Authorization")):
        return web.Response(status=403, text="forbidden: /debug is for admin networks or tokens\n")
    module = http.query.get("module") or None
    return web.json_response(upstreams_view(state, module))


async def debug_explain(http: web.Request) -> web.StreamResponse:
    """POST /debug/explain with a JSON question (what `goproxy-router explain` takes):
    the plan this gateway would execute for it, against its live selection state. The
    question may hold a token, so it travels in the body, never in the URL."""
    from router.app import STATE
    from router.explain import NoDraw, explain, question_from

    state = http.app[STATE]
    if not is_admin(state.current.rules.admin, http.remote, http.headers.get("Authorization")):
        return web.Response(status=403, text="forbidden: /debug is for admin networks or tokens\n")
    try:
        question = question_from(await http.json())
    except (ValueError, TypeError, KeyError) as exc:
        return web.Response(status=400, text=f"bad question: {exc}\n")
    rules = state.current.rules
    view = explain(
        rules, question, view=state.selection, rollouts=state.rollouts.trackers, rng=NoDraw()
    )
    return web.json_response(view)


async def debug_purge(http: web.Request) -> web.StreamResponse:
    """POST /debug/purge?module=PATH: drop the module's list/@latest/negative entries here
    (and, with Redis, on every replica)."""
    from router.app import STATE
    from router.core.errors import ModuleError
    from router.core.modpath import check_path
    from router.fleet.purge import purge as shared_purge

    state = http.app[STATE]
    if not is_admin(state.current.rules.admin, http.remote, http.headers.get("Authorization")):
        return web.Response(status=403, text="forbidden: purge is for admin networks or tokens\n")
    module = http.query.get("module", "")
    try:
        check_path(module)
    except ModuleError as exc:
        return web.Response(status=400, text=f"bad module: {exc}\n")
    dropped = 0
    answers = state.answers
    if answers is not None and answers.memory is not None:
        dropped = answers.memory.purge(module)
    replicas = None
    if answers is not None and answers.shared is not None:
        replicas = await shared_purge(answers.shared.client, module)
    return web.json_response({"module": module, "dropped": dropped, "replicas_told": replicas})


async def debug_abuse(http: web.Request) -> web.StreamResponse:
    """GET /debug/abuse: clients currently flagged for abusive pulling."""
    from router.app import STATE

    state = http.app[STATE]
    if not is_admin(state.current.rules.admin, http.remote, http.headers.get("Authorization")):
        return web.Response(status=403, text="forbidden: /debug is for admin networks or tokens\n")
    return web.json_response({"flags": state.limits.flags()})


async def debug_rollout_reset(http: web.Request) -> web.StreamResponse:
    """POST /debug/rollouts/reset?upstream=NAME: put a rolled-back candidate back (and,
    with Redis, on every replica)."""
    from router.app import STATE

    state = http.app[STATE]
    if not is_admin(state.current.rules.admin, http.remote, http.headers.get("Authorization")):
        return web.Response(status=403, text="forbidden: /debug is for admin networks or tokens\n")
    name = http.query.get("upstream", "")
    if not state.rollouts.reset(name):
        known = ", ".join(sorted(state.rollouts.trackers)) or "none"
        return web.Response(status=404, text=f"no rollout for upstream {name!r} (known: {known})\n")
    return web.json_response({"upstream": name, "state": "comparing"})  # replicas: next sync


# ---- L3 job views (router.jobviews)


def _job_query(state: GatewayState, http: web.Request) -> tuple[str | None, str] | web.Response:
    """(tenant, job) from `?tenant=T&job=ID` (no tenant: anonymous), or a 403 for a
    client that is not an admin, or a 400."""
    from router.core.jobviews import job_id_problem

    if not is_admin(state.current.rules.admin, http.remote, http.headers.get("Authorization")):
        return web.Response(status=403, text="forbidden: /debug is for admin networks or tokens\n")

    job = http.query.get("job", "")
    problem = job_id_problem(job)
    if problem is not None:
        return web.Response(status=400, text=f"{problem}\n")
    tenant = http.query.get("tenant") or None
    known = {t.id for t in state.current.rules.tenants}
    if tenant is not None and tenant not in known:
        return web.Response(status=400, text=f"bad request: no tenant {tenant!r} in the rules\n")
    return tenant, job


async def debug_job_show(http: web.Request) -> web.StreamResponse:
    """GET /debug/jobs?tenant=T&job=ID: a job's view (its pinned answers, not their bodies)."""
    from router.app import STATE

    state = http.app[STATE]
    asked = _job_query(state, http)
    if isinstance(asked, web.Response):
        return asked
    shown = await state.jobs.show(*asked) if state.jobs is not None else None
    if shown is None:
        return web.Response(status=404, text=f"no live view for job {asked[1]!r}\n")
    return web.json_response(shown)


async def debug_job_drop(http: web.Request) -> web.StreamResponse:
    """POST /debug/jobs/drop?tenant=T&job=ID: forget a job's view (on every replica with
    Redis); its next requests pin afresh."""
    from router.app import STATE

    state = http.app[STATE]
    asked = _job_query(state, http)
    if isinstance(asked, web.Response):
        return asked
    dropped = await state.jobs.drop(*asked) if state.jobs is not None else False
    return web.json_response({"tenant": asked[0], "job": asked[1], "dropped": dropped})
