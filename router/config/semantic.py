"""Checks across the whole rule set: names, references, tokens, checksum DBs, shadowing.

Checks within one object (weights that sum to 1, auth, cert with key) live
with the object in schema.py.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from router.config.names import Declared
from router.config.spec import Checker
from router.core import model as m
from router.core import sumdb
from router.core.model import Where
from router.core.policy import PolicyBlock, VulnerabilityRule
from router.core.routing import shadowing


def cross_check(rules: m.Rules, names: Declared, ck: Checker) -> None:
    """Report every problem that needs more than one key to see.

    Whether a name exists is asked of `names` (every object written, even one
    left out of `rules` for a problem already reported), never of `rules`.
    """
    _check_presence(names, rules, ck)
    _check_pools(rules, names, ck)
    _check_references(rules, names, ck)
    _check_rollouts(rules, names, ck)
    _check_exempt(rules, names, ck)
    _check_checksum_dbs(rules, ck)
    _check_tokens(rules, ck)
    _check_policies(rules, ck)
    _check_routes(rules, ck)


def _err(ck: Checker, where: Where, message: str) -> None:
    ck.error(where.file, where.line, message)


def _first_source(rules: m.Rules) -> Where:
    return Where(rules.sources[0] if rules.sources else "<rules>", 1)


def _check_presence(names: Declared, rules: m.Rules, ck: Checker) -> None:
    for kind, key in ((names.upstreams, "upstreams"), (names.pools, "pools")):
        if kind.complete and not kind.first:
            where = kind.written or _first_source(rules)
            _err(ck, where, f"no {key} defined: add at least one under {key!r}")


def _check_pools(rules: m.Rules, names: Declared, ck: Checker) -> None:
    for pool in rules.pools:
        seen: set[str] = set()
        for index, name in enumerate(pool.upstreams):
            where = pool.where.at("upstreams", index)
            if names.upstreams.lacks(name):
                _err(ck, where, f"pool {pool.name!r} names unknown upstream {name!r}")
            elif name in seen:
                _err(ck, where, f"pool {pool.name!r} lists upstream {name!r} twice")
            seen.add(name)


def _check_references(rules: m.Rules, names: Declared, ck: Checker) -> None:
    default = rules.default
    if default.pool is not None and names.pools.lacks(default.pool):
        _err(ck, default.where.at("pool"), f"default.pool names unknown pool {default.pool!r}")
    for tenant in rules.tenants:
        if tenant.pool is not None and names.pools.lacks(tenant.pool):
            _err(
                ck,
                tenant.where.at("pool"),
                f"tenant {tenant.id!r} names unknown pool {tenant.pool!r}",
            )
    for route in rules.routes:
        if names.pools.lacks(route.pool):
            where = route.where.at("pool")
            _err(ck, where, f"route {route.name!r} names unknown pool {route.pool!r}")
        for index, tid in enumerate(route.match.tenant):
            if names.tenants.lacks(tid):
                _err(
                    ck,
                    route.where.at("match", "tenant", index),
                    f"route {route.name!r} matches unknown tenant {tid!r}",
                )


def _check_rollouts(rules: m.Rules, names: Declared, ck: Checker) -> None:
    candidates: set[str] = set()
    for rollout in rules.rollouts:
        for key in ("upstream", "compare_with"):
            name = getattr(rollout, key)
            if names.upstreams.lacks(name):
                _err(ck, rollout.where.at(key), f"rollout names unknown upstream {name!r}")
        if rollout.upstream == rollout.compare_with:
            _err(
                ck,
                rollout.where.at("compare_with"),
                f"rollout compares {rollout.upstream!r} with itself",
            )
        if rollout.upstream in candidates:
            _err(
                ck,
                rollout.where.at("upstream"),
                f"upstream {rollout.upstream!r} has two rollouts",
            )
        candidates.add(rollout.upstream)


def _check_exempt(rules: m.Rules, names: Declared, ck: Checker) -> None:
    """limits.abuse.exempt holds IP networks and tenant ids; anything else is a typo."""
    abuse = rules.limits.abuse if rules.limits is not None else None
    if abuse is None:
        return
    for index, item in enumerate(abuse.exempt):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            if names.tenants.lacks(item):
                _err(
                    ck,
                    abuse.where.at("exempt", index),
                    f"limits.abuse.exempt: {item!r} is neither an IP network nor a tenant",
                )


def _check_checksum_dbs(rules: m.Rules, ck: Checker) -> None:
    names: set[str] = set()
    for db in rules.checksum_dbs:
        if db.name in names:
            _err(ck, db.where.at("name"), f"checksum database {db.name!r} is listed twice")
        names.add(db.name)
        try:
            verifier = sumdb.Verifier.parse(db.key)
        except sumdb.SumDBError as exc:
            _err(ck, db.where.at("key"), f"checksum database {db.name!r}: bad verifier key ({exc})")
            continue
        if verifier.name != db.name:
            _err(
                ck,
                db.where.at("key"),
                f"checksum database {db.name!r}: its key is for {verifier.name!r}",
            )


def _check_tokens(rules: m.Rules, ck: Checker) -> None:
    owner: dict[str, str] = {}
    for tenant in rules.tenants:
        for index, token in enumerate(tenant.tokens):
            other = owner.get(token)
            if other is not None and other != tenant.id:
                _err(
                    ck,
                    tenant.where.at("tokens", index),
                    f"tenant {tenant.id!r} shares a token with tenant {other!r}; "
                    "each token must identify one tenant",
                )
            owner[token] = tenant.id


def _check_policies(rules: m.Rules, ck: Checker) -> None:
    """A vulnerability database folder that holds no index/db.json is a warning: the
    gateway starts, and refuses every version under that policy until it appears."""
    owners: list[tuple[PolicyBlock | None, Where]] = [(t.policy, t.where) for t in rules.tenants]
    owners += [(r.policy, r.where) for r in rules.routes]
    for block, where in owners:
        vulns = block.vulnerabilities if block is not None else None
        if not isinstance(vulns, VulnerabilityRule):
            continue
        if not (Path(vulns.db) / "index" / "db.json").is_file():
            at = where.at("policy", "vulnerabilities", "db")
            ck.warn(
                at.file,
                at.line,
                f"vulnerability database {vulns.db!r} has no index/db.json (yet): every "
                "version under this policy is refused until it can be read",
            )


def _check_routes(rules: m.Rules, ck: Checker) -> None:
    if any(not p.warning for p in ck.problems):
        return  # dropped (invalid) matchers would make routes look broader than written
    for later, earlier in shadowing(rules.routes):
        ck.warn(
            later.where.file,
            later.where.line,
            f"route {later.name!r} can never match: route {earlier.name!r} "
            f"(line {earlier.where.line}) matches every request it matches",
        )
