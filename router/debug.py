"""Admin-only `/debug/*` endpoints: what selection sees, live. Never a secret."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
from typing import TYPE_CHECKING, Any

from aiohttp import web

from router.appkeys import ANSWERS, CHECKSUMS, JOBS, LIMITS, LIVE, REDIS_SYNC, ROLLOUTS, SELECTION
from router.core.model import Admin, Rules

if TYPE_CHECKING:
    from router.checksums import ChecksumRegistry
    from router.fleet.selection import RedisSync
    from router.rollouts import Rollouts
    from router.state.local import SelectionState


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


def upstreams_view(
    rules: Rules,
    sel: SelectionState,
    rollouts: Rollouts,
    checksums: ChecksumRegistry,
    redis: RedisSync | None,
    module: str | None,
) -> dict[str, Any]:
    """Live RTT, cost, health and per-pool scores (heat for `module` when given)."""
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
    for rollout in rollouts.view():
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
    return {
        "weights": weights,
        "module": module,
        "redis": None if redis is None else {"connected": redis.healthy},
        "upstreams": ups,
        "pools": pools,
        "rollouts": rollouts.view(),
        "checksum_dbs": checksums.view(),
    }


def admin_rules(http: web.Request) -> Rules | None:
    """The current rules when the client is an admin (None: answer it 403)."""
    rules = http.app[LIVE].current.rules
    if is_admin(rules.admin, http.remote, http.headers.get("Authorization")):
        return rules
    return None


FORBIDDEN = "forbidden: /debug is for admin networks or tokens\n"


async def debug_upstreams(http: web.Request) -> web.StreamResponse:
    rules = admin_rules(http)
    if rules is None:
        return web.Response(status=403, text=FORBIDDEN)
    module = http.query.get("module") or None
    app = http.app
    view = upstreams_view(
        rules, app[SELECTION], app[ROLLOUTS], app[CHECKSUMS], app[REDIS_SYNC], module
    )
    return web.json_response(view)


async def debug_explain(http: web.Request) -> web.StreamResponse:
    """POST /debug/explain with a JSON question (what `goproxy-router explain` takes):
    the plan this gateway would execute for it, against its live selection state. The
    question may hold a token, so it travels in the body, never in the URL."""
    from router.explain import NoDraw, explain, question_from

    rules = admin_rules(http)
    if rules is None:
        return web.Response(status=403, text=FORBIDDEN)
    try:
        question = question_from(await http.json())
    except (ValueError, TypeError, KeyError) as exc:
        return web.Response(status=400, text=f"bad question: {exc}\n")
    trackers = http.app[ROLLOUTS].trackers
    view = explain(rules, question, view=http.app[SELECTION], rollouts=trackers, rng=NoDraw())
    return web.json_response(view)


async def debug_purge(http: web.Request) -> web.StreamResponse:
    """POST /debug/purge?module=PATH: drop the module's list/@latest/negative entries here
    (and, with Redis, on every replica)."""
    from router.core.errors import ModuleError
    from router.core.modpath import check_path
    from router.fleet.purge import purge as shared_purge

    if admin_rules(http) is None:
        return web.Response(status=403, text="forbidden: purge is for admin networks or tokens\n")
    module = http.query.get("module", "")
    try:
        check_path(module)
    except ModuleError as exc:
        return web.Response(status=400, text=f"bad module: {exc}\n")
    tiers = http.app[ANSWERS].tiers
    dropped = tiers.memory.purge(module) if tiers.memory is not None else 0
    replicas = None
    if tiers.shared is not None:
        replicas = await shared_purge(tiers.shared.client, module)
    return web.json_response({"module": module, "dropped": dropped, "replicas_told": replicas})


async def debug_abuse(http: web.Request) -> web.StreamResponse:
    """GET /debug/abuse: clients currently flagged for abusive pulling."""
    if admin_rules(http) is None:
        return web.Response(status=403, text=FORBIDDEN)
    return web.json_response({"flags": http.app[LIMITS].flags()})


async def debug_rollout_reset(http: web.Request) -> web.StreamResponse:
    """POST /debug/rollouts/reset?upstream=NAME: put a rolled-back candidate back (and,
    with Redis, on every replica)."""
    if admin_rules(http) is None:
        return web.Response(status=403, text=FORBIDDEN)
    name = http.query.get("upstream", "")
    rollouts = http.app[ROLLOUTS]
    if not rollouts.reset(name):
        known = ", ".join(sorted(rollouts.trackers)) or "none"
        return web.Response(status=404, text=f"no rollout for upstream {name!r} (known: {known})\n")
    return web.json_response({"upstream": name, "state": "comparing"})  # replicas: next sync


# ---- L3 job views (router.jobviews)


def _job_query(http: web.Request) -> tuple[str | None, str] | web.Response:
    """(tenant, job) from `?tenant=T&job=ID` (no tenant: anonymous), or a 403 for a
    client that is not an admin, or a 400."""
    from router.core.jobviews import job_id_problem

    rules = admin_rules(http)
    if rules is None:
        return web.Response(status=403, text=FORBIDDEN)
    job = http.query.get("job", "")
    problem = job_id_problem(job)
    if problem is not None:
        return web.Response(status=400, text=f"{problem}\n")
    tenant = http.query.get("tenant") or None
    known = {t.id for t in rules.tenants}
    if tenant is not None and tenant not in known:
        return web.Response(status=400, text=f"bad request: no tenant {tenant!r} in the rules\n")
    return tenant, job


async def debug_job_show(http: web.Request) -> web.StreamResponse:
    """GET /debug/jobs?tenant=T&job=ID: a job's view (its pinned answers, not their bodies)."""
    asked = _job_query(http)
    if isinstance(asked, web.Response):
        return asked
    shown = await http.app[JOBS].show(*asked)
    if shown is None:
        return web.Response(status=404, text=f"no live view for job {asked[1]!r}\n")
    return web.json_response(shown)


async def debug_job_drop(http: web.Request) -> web.StreamResponse:
    """POST /debug/jobs/drop?tenant=T&job=ID: forget a job's view (on every replica with
    Redis); its next requests pin afresh."""
    asked = _job_query(http)
    if isinstance(asked, web.Response):
        return asked
    dropped = await http.app[JOBS].drop(*asked)
    return web.json_response({"tenant": asked[0], "job": asked[1], "dropped": dropped})


async def debug_store_gc(http: web.Request) -> web.StreamResponse:
    """POST /debug/store/gc?budget=SIZE&min_idle=DURATION&apply=1: gc of this gateway's
    local store (a dry run without apply=1), answered with the report as JSON."""
    from router.config.units import parse_duration, parse_size
    from router.retention import gc_disk

    rules = admin_rules(http)
    if rules is None:
        return web.Response(status=403, text=FORBIDDEN)
    store = http.app[ANSWERS].tiers.store
    if store is None:
        return web.Response(status=409, text="no artifact store: the rules set no cache.dir\n")
    try:
        budget = parse_size(http.query.get("budget", store.budget))  # cache.disk at start
        min_idle = parse_duration(http.query.get("min_idle", "1h"))
    except ValueError as exc:
        return web.Response(status=400, text=f"bad gc request: {exc}\n")
    apply = http.query.get("apply") == "1"
    report = await asyncio.to_thread(gc_disk, store, budget, min_idle=min_idle, apply=apply)
    return web.json_response(report.as_json())
