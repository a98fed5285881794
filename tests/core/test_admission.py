"""L2 admission: which versions' answers the artifact store and Redis keep. Pure tables."""

from __future__ import annotations

import pytest

from router.core.admission import (
    DEFAULT_RULE,
    REASONS,
    AdmitRule,
    admit_request,
    admit_rule,
    version_class,
)
from router.core.model import Pool, Rules, Tenant, Upstream
from router.core.plan import Asked, Compiled, Plan, decide
from router.core.protocol import parse_module_path, parse_request_target
from router.core.tenancy import Identity

PSEUDO = "v0.0.0-20240102030405-abcdef123456"
CLASSES = [
    ("v1.2.3", "release"),
    ("v0.0.1", "release"),
    ("v2.0.0+incompatible", "release"),
    ("v1.3.0-rc.1", "prerelease"),
    ("v1.0.0-beta", "prerelease"),
    ("v3.0.0-rc.1+incompatible", "prerelease"),
    (PSEUDO, "pseudo"),
    ("v1.2.4-0.20240102030405-abcdef123456", "pseudo"),  # after the tag v1.2.3
    ("v1.3.0-rc.1.0.20240102030405-abcdef123456", "pseudo"),  # after a prerelease tag
    ("v2.0.0-20240102030405-abcdef123456+incompatible", "pseudo"),
]


@pytest.mark.parametrize(("version", "expected"), CLASSES)
def test_versions_are_release_prerelease_or_pseudo(version: str, expected: str) -> None:
    assert version_class(version) == expected


RELEASE_ONLY = AdmitRule.of(["release"], [], "cache.admit")
EVERYTHING = AdmitRule.of(["pseudo", "release", "prerelease"], [], "pools.dev.admit")
NOTHING = AdmitRule.of([], [], "tenants[ci].admit")
BY_REGEX = AdmitRule.of(["release"], [r"^v0\.0\.0-2024", r"-rc\.\d+$"], "cache.admit")

ADMITS = [
    (DEFAULT_RULE, "v1.2.3", True, "release"),
    (DEFAULT_RULE, "v2.0.0+incompatible", True, "release"),
    (DEFAULT_RULE, "v1.3.0-rc.1", False, "prerelease"),
    (DEFAULT_RULE, PSEUDO, False, "pseudo"),
    (RELEASE_ONLY, PSEUDO, False, "pseudo"),
    (EVERYTHING, PSEUDO, True, "pseudo"),
    (EVERYTHING, "v1.3.0-rc.1", True, "prerelease"),
    (NOTHING, "v1.2.3", False, "release"),
    (BY_REGEX, PSEUDO, True, "regex"),
    (BY_REGEX, "v0.0.0-20230102030405-abcdef123456", False, "pseudo"),
    (BY_REGEX, "v1.3.0-rc.1", True, "regex"),
    (BY_REGEX, "v1.3.0-beta", False, "prerelease"),
    (BY_REGEX, "v1.2.3", True, "release"),  # a word wins before any regex is tried
]


@pytest.mark.parametrize(("rule", "version", "admitted", "reason"), ADMITS)
def test_a_rule_admits_by_class_or_regex(
    rule: AdmitRule, version: str, admitted: bool, reason: str
) -> None:
    assert rule.admits(version) == (admitted, reason)
    assert reason in REASONS  # the metric label stays in its bounded set


def test_unknown_words_are_refused_by_the_model_too() -> None:
    with pytest.raises(ValueError, match="relase"):
        AdmitRule.of(["relase"], [], "cache.admit")


def test_the_tenant_wins_over_the_pool_which_wins_over_cache_admit() -> None:
    assert admit_rule(RELEASE_ONLY, None, None) is RELEASE_ONLY
    assert admit_rule(RELEASE_ONLY, EVERYTHING, None) is EVERYTHING
    assert admit_rule(RELEASE_ONLY, EVERYTHING, NOTHING) is NOTHING
    assert admit_rule(RELEASE_ONLY, None, NOTHING) is NOTHING  # [] is a rule: keep nothing


@pytest.mark.parametrize(
    "target",
    [
        "/example.com/m/@v/list",
        "/example.com/m/@latest",
        "/example.com/m/@v/master.info",  # a query, not a version
        "/sumdb/sum.golang.org/lookup/example.com/m@v1.2.3",
        "/sumdb/sum.golang.org/tile/8/0/000",
    ],
)
def test_answers_that_are_not_one_versions_are_not_subject(target: str) -> None:
    decided = admit_request(NOTHING, parse_request_target(target))
    assert not decided.applies and decided.admitted
    assert decided.as_dict() == {"applies": False, "why": decided.why()}


@pytest.mark.parametrize("kind", ["info", "mod", "zip"])
def test_each_answer_of_a_version_is_subject(kind: str) -> None:
    decided = admit_request(DEFAULT_RULE, parse_module_path(f"example.com/m/@v/{PSEUDO}.{kind}"))
    assert decided.applies and not decided.admitted
    assert decided.as_dict() == {
        "applies": True,
        "admitted": False,
        "reason": "pseudo",
        "rule": ["release"],
        "from": "cache.admit (default)",
        "why": "a pseudo-version, not admitted by cache.admit (default) [release]: "
        "served, kept in memory only",
    }


RULES = Rules(
    upstreams=(Upstream("a", "https://a.example"),),
    pools=(Pool("main", ("a",)), Pool("dev", ("a",), admit=EVERYTHING)),
    tenants=(Tenant("team", pool="dev"), Tenant("ci", pool="dev", admit=NOTHING)),
)


@pytest.mark.parametrize(
    ("tenant", "version", "admitted", "origin"),
    [
        (None, PSEUDO, False, "cache.admit (default)"),
        (None, "v1.2.3", True, "cache.admit (default)"),
        ("team", PSEUDO, True, "pools.dev.admit"),
        ("ci", "v1.2.3", False, "tenants[ci].admit"),
    ],
)
def test_the_plan_carries_the_admission_of_its_tenant_and_pool(
    tenant: str | None, version: str, admitted: bool, origin: str
) -> None:
    compiled = Compiled.build(RULES)
    who = Identity(next((t for t in RULES.tenants if t.id == tenant), None), "header")
    request = parse_module_path(f"example.com/m/@v/{version}.zip")
    plan = decide(compiled, request, who, Asked("GET", {}))
    assert isinstance(plan, Plan)
    assert (plan.admission.admitted, plan.admission.rule.origin) == (admitted, origin)
