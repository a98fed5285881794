"""Which pool serves a request: routes in order, first match wins, then the tenant's
pool, then the default pool. Pure; also used by `explain` and by `validate` (shadowing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from router.core.jobviews import JOB_HEADER
from router.core.model import HeaderMatch, Route, Rules, Tenant
from router.core.modpath import match_prefix_patterns
from router.core.versions import GoVersion, GoVersionConstraint, parse_go_version


@dataclass(frozen=True, slots=True)
class Facts:
    """What routing may look at: all already validated."""

    tenant: str | None
    kind: str
    module: str | None
    go_version: str | None
    headers: Mapping[str, str]  # lower-case names
    job: str | None = None  # the CI job id, from the path or X-CI-Job-ID (path first)

    @property
    def parsed_go_version(self) -> GoVersion | None:
        return parse_go_version(self.go_version) if self.go_version else None


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    route: Route
    go_version: GoVersionConstraint | None
    headers: tuple[tuple[str, str | None, re.Pattern[str] | None], ...]

    @classmethod
    def compile(cls, route: Route) -> CompiledRoute:
        constraint = None
        if route.match.go_version is not None:
            constraint = GoVersionConstraint.parse(route.match.go_version)
        return cls(route, constraint, tuple(_header(h) for h in route.match.header))

    def mismatch(self, facts: Facts) -> str | None:
        """Why this route does not match (None: it matches)."""
        m = self.route.match
        if m.tenant and facts.tenant not in m.tenant:
            return f"tenant {facts.tenant or '(anonymous)'} not in {list(m.tenant)}"
        if m.kind and facts.kind not in m.kind:
            return f"kind {facts.kind} not in {list(m.kind)}"
        if m.module and not (
            facts.module is not None
            and any(match_prefix_patterns(p, facts.module) for p in m.module)
        ):
            return f"module {facts.module or '(none)'} matches none of {list(m.module)}"
        if self.go_version is not None:
            version = facts.parsed_go_version
            if version is None:
                return "no parseable X-Go-Version header"
            if not self.go_version.matches(version):
                return f"go version {facts.go_version} does not satisfy {m.go_version!r}"
        for name, exact, regex in self.headers:
            # a job id given in the path (GOPROXY=https://HOST/job/ID) is the request's
            # X-CI-Job-ID: the stock go command cannot send the header itself
            value = facts.job if name == _JOB_HEADER and facts.job else facts.headers.get(name)
            if value is None:
                return f"header {name} absent"
            if exact is not None and value != exact:
                return f"header {name} is not {exact!r}"
            if regex is not None and not regex.search(value):
                return f"header {name} does not match /{regex.pattern}/"
        return None


_JOB_HEADER = JOB_HEADER.lower()


def _header(h: HeaderMatch) -> tuple[str, str | None, re.Pattern[str] | None]:
    return (h.name.lower(), h.exact, re.compile(h.regex) if h.regex is not None else None)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    pool: str
    route: str | None
    source: str  # "route", "tenant", "default"
    skipped: tuple[tuple[str, str], ...] = ()  # (route name, why it did not match)
    prefer_fresh: bool = False
    verify_checksums: bool | None = None


@dataclass(frozen=True, slots=True)
class Router:
    """The compiled routes of one rule set."""

    routes: tuple[CompiledRoute, ...]
    tenant_pools: Mapping[str, str]
    default_pool: str

    @classmethod
    def build(cls, rules: Rules) -> Router:
        return cls(
            routes=tuple(CompiledRoute.compile(r) for r in rules.routes),
            tenant_pools={t.id: t.pool for t in rules.tenants if t.pool},
            default_pool=rules.default_pool,
        )

    def decide(self, facts: Facts, *, explain: bool = False) -> RouteDecision:
        skipped: list[tuple[str, str]] = []
        for compiled in self.routes:
            why = compiled.mismatch(facts)
            if why is None:
                r = compiled.route
                return RouteDecision(
                    r.pool, r.name, "route", tuple(skipped), r.prefer_fresh, r.verify_checksums
                )
            if explain:
                skipped.append((compiled.route.name, why))
        pool = self.tenant_pools.get(facts.tenant or "")
        if pool is not None:
            return RouteDecision(pool, None, "tenant", tuple(skipped))
        return RouteDecision(self.default_pool, None, "default", tuple(skipped))


def shadowing(routes: tuple[Route, ...]) -> list[tuple[Route, Route]]:
    """(later, earlier) pairs where the earlier route matches everything the later one does."""
    out: list[tuple[Route, Route]] = []
    for j, later in enumerate(routes):
        for earlier in routes[:j]:
            if _covers(earlier, later):
                out.append((later, earlier))
                break
    return out


def _covers(a: Route, b: Route) -> bool:
    """True when every request matching `b` also matches `a` (conservatively)."""
    ma, mb = a.match, b.match
    if ma.tenant and not (mb.tenant and set(mb.tenant) <= set(ma.tenant)):
        return False
    if ma.kind and not (mb.kind and set(mb.kind) <= set(ma.kind)):
        return False
    if ma.module and not (mb.module and all(_glob_covers(ma.module, g) for g in mb.module)):
        return False
    if ma.go_version is not None and ma.go_version != mb.go_version:
        return False
    return set(ma.header) <= set(mb.header)


def _glob_covers(globs: tuple[str, ...], glob: str) -> bool:
    if glob in globs:
        return True
    literal = not any(ch in glob for ch in "*?[\\")
    return literal and any(match_prefix_patterns(g, glob) for g in globs)


def verifies_checksums(
    rules: Rules,
    decision: RouteDecision,
    tenant: Tenant | None,
    kind: str,
    module: str | None,
    private: bool,
) -> bool:
    """Whether a .mod/.zip answer must match the checksum DB before it is served: the
    matched route's `verify_checksums` when set, else the tenant's; never for modules
    that are private (to any tenant) or match `nosumdb` (those are never looked up)."""
    if kind not in ("mod", "zip") or private or module is None:
        return False
    wants = decision.verify_checksums
    if wants is None:
        wants = tenant.verify_checksums if tenant is not None else False
    return wants and not any(match_prefix_patterns(p, module) for p in rules.nosumdb)
