"""Routes in order, first match wins; then the tenant's pool; then the default pool."""

from __future__ import annotations

import pytest

from router.core.model import (
    Default,
    HeaderMatch,
    Pool,
    Route,
    RouteMatch,
    Rules,
    Tenant,
    Upstream,
)
from router.core.routing import Facts, Router, shadowing

POOLS = tuple(Pool(n, ("a",)) for n in ("main", "legacy", "corp", "fin", "zips", "team", "ci"))
ROUTES = (
    Route("corp", "corp", RouteMatch(module=("corp.example.com",), tenant=("fin",))),
    Route("legacy", "legacy", RouteMatch(go_version="<1.21")),
    Route("newish", "team", RouteMatch(go_version=">=1.22,<1.24", kind=("list", "latest"))),
    Route("zips", "zips", RouteMatch(kind=("zip",), module=("*.example.org",))),
    Route("ci", "ci", RouteMatch(header=(HeaderMatch("User-Agent", regex=r"^ci-bot/"),))),
    Route("team", "team", RouteMatch(header=(HeaderMatch("X-Team", exact="payments"),))),
)
RULES = Rules(
    upstreams=(Upstream("a", "https://a.example"),),
    pools=POOLS,
    default=Default(pool="main"),
    tenants=(Tenant("fin", pool="fin"), Tenant("ops")),
    routes=ROUTES,
)
ROUTER = Router.build(RULES)


def facts(
    tenant: str | None = None,
    kind: str = "info",
    module: str | None = "x.org/m",
    go: str | None = None,
    **headers: str,
) -> Facts:
    return Facts(
        tenant, kind, module, go, {k.lower().replace("_", "-"): v for k, v in headers.items()}
    )


@pytest.mark.parametrize(
    ("f", "pool", "route"),
    [
        (facts(), "main", None),
        (facts(tenant="fin"), "fin", None),
        (facts(tenant="ops"), "main", None),
        (facts(tenant="fin", module="corp.example.com/fin/x"), "corp", "corp"),
        (facts(tenant="ops", module="corp.example.com/fin/x"), "main", None),
        (facts(go="go1.20.3"), "legacy", "legacy"),
        (facts(go="1.20"), "legacy", "legacy"),
        (facts(go="go1.21rc1"), "main", None),
        (facts(go="go1.21.0"), "main", None),
        (facts(go="devel go1.23-abc"), "main", None),
        (facts(go="garbage"), "main", None),
        (facts(go="go1.22.5", kind="list"), "team", "newish"),
        (facts(go="go1.24.0", kind="list"), "main", None),
        (facts(go="go1.23.1", kind="zip"), "main", None),
        (facts(kind="zip", module="a.example.org/m"), "zips", "zips"),
        (facts(kind="zip", module="a.example.com/m"), "main", None),
        (facts(user_agent="ci-bot/2.0"), "ci", "ci"),
        (facts(user_agent="Go-http-client/1.1"), "main", None),
        (facts(x_team="payments"), "team", "team"),
        (facts(x_team="payments-2"), "main", None),
        # first match wins: legacy before the header routes
        (facts(go="go1.19", x_team="payments"), "legacy", "legacy"),
        (facts(tenant="fin", go="go1.19", module="corp.example.com/a"), "corp", "corp"),
        # sumdb tiles have no module: module matchers never match them
        (facts(kind="sumdb", module=None), "main", None),
    ],
)
def test_route_decisions(f: Facts, pool: str, route: str | None) -> None:
    decision = ROUTER.decide(f)
    assert (decision.pool, decision.route) == (pool, route)


def test_explain_lists_why_each_route_did_not_match() -> None:
    decision = ROUTER.decide(facts(tenant="ops"), explain=True)
    reasons = dict(decision.skipped)
    assert "not in" in reasons["corp"]
    assert reasons["legacy"] == "no parseable X-Go-Version header"
    assert "header x-team absent" in reasons["team"]


@pytest.mark.parametrize(
    ("routes", "shadowed"),
    [
        ((Route("all", "main"), Route("later", "legacy", RouteMatch(kind=("zip",)))), ["later"]),
        (
            (
                Route("zip", "main", RouteMatch(kind=("zip", "mod"))),
                Route("zip-only", "legacy", RouteMatch(kind=("zip",))),
            ),
            ["zip-only"],
        ),
        (
            (
                Route("zip", "main", RouteMatch(kind=("zip",))),
                Route("zipmod", "legacy", RouteMatch(kind=("zip", "mod"))),
            ),
            [],
        ),
        (
            (
                Route("corp", "main", RouteMatch(module=("corp.example.com",))),
                Route("fin", "legacy", RouteMatch(module=("corp.example.com/fin",))),
            ),
            ["fin"],
        ),
        (
            (
                Route("fin", "main", RouteMatch(module=("corp.example.com/fin",))),
                Route("corp", "legacy", RouteMatch(module=("corp.example.com",))),
            ),
            [],
        ),
        (
            (
                Route("old", "main", RouteMatch(go_version="<1.21")),
                Route("old2", "legacy", RouteMatch(go_version="<1.21", tenant=("a",))),
            ),
            ["old2"],
        ),
        (
            (
                Route("old", "main", RouteMatch(go_version="<1.21")),
                Route("older", "legacy", RouteMatch(go_version="<1.20")),
            ),
            [],
        ),
        (
            (
                Route("t", "main", RouteMatch(tenant=("a", "b"))),
                Route("ta", "legacy", RouteMatch(tenant=("a",), kind=("zip",))),
            ),
            ["ta"],
        ),
    ],
)
def test_shadowing(routes: tuple[Route, ...], shadowed: list[str]) -> None:
    assert [later.name for later, _ in shadowing(routes)] == shadowed


JOB_RULES = Rules(
    upstreams=(Upstream("a", "https://a.example"),),
    pools=(Pool("main", ("a",)), Pool("tests", ("a",))),
    default=Default(pool="main"),
    routes=(
        Route("test-jobs", "tests", RouteMatch(header=(HeaderMatch("X-CI-Job-ID", regex="^t-"),))),
    ),
)


@pytest.mark.parametrize(
    ("job", "header", "pool"),
    [
        ("t-1", None, "tests"),  # GOPROXY=https://HOST/job/t-1: no header, the path's id
        (None, "t-1", "tests"),  # the header alone (the id the plan got is the same)
        ("t-1", "b-1", "tests"),  # the path wins over the header, as for the view
        ("b-1", "t-1", "main"),
        (None, None, "main"),
    ],
)
def test_a_job_id_header_match_sees_the_id_from_the_path(
    job: str | None, header: str | None, pool: str
) -> None:
    headers = {"x-ci-job-id": header} if header is not None else {}
    # what the plan passes: the id split_job gave (path first, else the header)
    facts = Facts(None, "list", "x.org/m", None, headers, job=job or header)
    assert Router.build(JOB_RULES).decide(facts).pool == pool
