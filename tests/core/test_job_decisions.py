"""The pure part of L3 job views: job ids, the /job/ prefix, questions, bounds, offline."""

from __future__ import annotations

import functools

import pytest

from router.core.jobviews import (
    Live,
    job_id_problem,
    offline_mode,
    question,
    split_job,
    to_drop,
    view_id,
    view_parts,
)
from router.core.model import Pool, Route, RouteMatch, Rules, Upstream
from router.core.plan import Asked, Compiled, Plan, decide
from router.core.protocol import parse_request_target
from router.core.tenancy import Identity


@pytest.mark.parametrize(
    ("raw", "header", "path", "job", "offline"),
    [
        ("/example.com/m/@v/list", None, "/example.com/m/@v/list", None, False),
        ("/example.com/m/@v/list", "", "/example.com/m/@v/list", None, False),
        ("/example.com/m/@v/list", "123-1", "/example.com/m/@v/list", "123-1", False),
        ("/job/42/example.com/m/@latest", None, "/example.com/m/@latest", "42", False),
        ("/job/42/example.com/m/@latest", "other", "/example.com/m/@latest", "42", False),
        ("/job/42/offline/example.com/m/@latest", None, "/example.com/m/@latest", "42", True),
        ("/job/a.b_c:d/sumdb/sum.golang.org/supported", None, "/sumdb/sum.golang.org/supported",
         "a.b_c:d", False),
        # a module whose path starts with job. is an ordinary path (first element has a dot)
        ("/job.example.com/m/@v/list", None, "/job.example.com/m/@v/list", None, False),
        ("/jenkins/x", "jenkins-folder/app-7", "/jenkins/x", "jenkins-folder/app-7", False),
    ],
)  # fmt: skip
def test_split_job(raw: str, header: str | None, path: str, job: str, offline: bool) -> None:
    target = split_job(raw, header)
    assert (target.path, target.job, target.offline, target.problem) == (path, job, offline, None)
    assert target.logged == job


@pytest.mark.parametrize(
    ("raw", "header", "needle"),
    [
        ("/job/42", None, "nothing after /job/42/"),
        ("/job/42/offline", None, "nothing after /job/42/"),
        ("/job//example.com/m/@v/list", None, "empty job id in the path"),
        ("/job/a%20b/example.com/m/@v/list", None, "may only hold"),
        ("/job/" + "x" * 201 + "/example.com/m/@v/list", None, "longer than 200"),
        ("/example.com/m/@v/list", "bad id", "in X-CI-Job-ID may only hold"),
        ("/example.com/m/@v/list", "/leading", "may only hold"),
        ("/example.com/m/@v/list", "y" * 201, "longer than 200"),
    ],
)
def test_bad_job_ids_are_a_clear_problem(raw: str, header: str | None, needle: str) -> None:
    target = split_job(raw, header)
    assert target.problem is not None and needle in target.problem
    assert target.job is None
    assert target.logged is not None and len(target.logged) <= 200


def test_job_id_rules() -> None:
    assert job_id_problem("9876543210-1") is None
    assert job_id_problem("a" * 200) is None
    assert job_id_problem("a" * 201) is not None
    assert job_id_problem("") is not None


def test_questions_are_the_mutable_requests() -> None:
    def q(path: str) -> str | None:
        return question(parse_request_target(path))

    assert q("/example.com/m/@v/list") == "example.com/m/@v/list"
    assert q("/example.com/m/@latest") == "example.com/m/@latest"
    assert q("/example.com/m/@v/main.info") == "example.com/m/@v/main.info"
    assert q("/example.com/m/@v/v1.2.info") == "example.com/m/@v/v1.2.info"
    assert q("/example.com/m/@v/v1.2.3.info") is None  # immutable
    assert q("/example.com/m/@v/v1.2.3.zip") is None
    assert q("/sumdb/sum.golang.org/latest") is None


def test_view_ids_keep_tenants_apart() -> None:
    assert view_id("finance", "1") != view_id(None, "1") != view_id("hr", "1")
    assert view_parts(view_id("finance", "a/b")) == ("finance", "a/b")
    assert view_parts(view_id(None, "7")) == (None, "7")


def test_to_drop_idle_first_then_oldest() -> None:
    views = [Live("a", 0.0, 10), Live("b", 50.0, 10), Live("c", 60.0, 10), Live("d", 70.0, 10)]
    bounds = functools.partial(to_drop, ttl=100.0, max_views=2, max_bytes=1000)
    assert bounds(views, 105.0) == [("a", "idle"), ("b", "count")]
    assert bounds(views, 80.0) == [("a", "count"), ("b", "count")]
    # the view being written is kept even when it is the oldest
    assert bounds(views, 80.0, keep="a") == [("b", "count"), ("c", "count")]
    by_bytes = functools.partial(to_drop, ttl=100.0, max_views=10, max_bytes=25)
    assert by_bytes(views, 80.0) == [("a", "bytes"), ("b", "bytes")]
    assert bounds([], 0.0) == []


def test_offline_mode_names_where_it_comes_from() -> None:
    assert offline_mode("online", "r", False, False) == ""
    assert offline_mode("offline", "r", True, True) == "network: offline"
    assert offline_mode("online", "tests", True, False) == "route tests: offline"
    assert offline_mode("online", None, False, True) == "job offline (/job/ID/offline)"


def _rules(*, network: str = "online", offline_route: bool = False) -> Rules:
    sealed = Route("hermetic", "main", RouteMatch(module=("example.com/sealed/*",)), offline=True)
    routes = (sealed,) if offline_route else ()
    return Rules(
        upstreams=(Upstream("up", "http://127.0.0.1:1"),),
        pools=(Pool("main", ("up",)),),
        routes=routes,
        network=network,  # type: ignore[arg-type]
    )


def _plan(rules: Rules, path: str, asked: Asked) -> Plan:
    plan = decide(
        Compiled.build(rules), parse_request_target(path), Identity(None, "anonymous"), asked
    )
    assert isinstance(plan, Plan)
    return plan


def test_the_plan_says_job_pinned_and_offline() -> None:
    rules = _rules()
    plain = _plan(rules, "/example.com/m/@v/list", Asked("GET", {}))
    assert (plain.job, plain.pinned, plain.offline) == (None, False, "")
    listed = _plan(rules, "/example.com/m/@v/list", Asked("GET", {}, "42"))
    assert (listed.job, listed.pinned, listed.offline) == ("42", True, "")
    zipped = _plan(rules, "/example.com/m/@v/v1.0.0.zip", Asked("GET", {}, "42"))
    assert (zipped.job, zipped.pinned) == ("42", False)  # immutable: served as usual
    head = _plan(rules, "/example.com/m/@v/list", Asked("HEAD", {}, "42"))
    assert not head.pinned
    sealed = _plan(rules, "/example.com/m/@latest", Asked("GET", {}, "42", job_offline=True))
    assert sealed.offline == "job offline (/job/ID/offline)"


def test_offline_comes_from_network_or_route() -> None:
    everywhere = _rules(network="offline")
    assert _plan(everywhere, "/example.com/m/@v/v1.0.0.zip", Asked("GET", {})).offline == (
        "network: offline"
    )
    routed = _rules(offline_route=True)
    assert _plan(routed, "/example.com/sealed/a/@latest", Asked("GET", {})).offline == (
        "route hermetic: offline"
    )
    assert _plan(routed, "/example.com/open/@latest", Asked("GET", {})).offline == ""
