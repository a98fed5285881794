"""The policy core: every decision from plain tables, the clock passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from router.core.policy import (
    AGE,
    AGE_UNKNOWN,
    LICENCE,
    LICENCE_UNKNOWN,
    OFF,
    VULNDB_UNAVAILABLE,
    VULNERABILITY,
    Advisory,
    AgeRule,
    DatabaseUnavailable,
    Event,
    LicenceFile,
    LicenceFindings,
    LicenceRule,
    Outcome,
    Policy,
    PolicyBlock,
    VulnerabilityRule,
    affected_range,
    affects,
    filter_list,
    format_age,
    judge_age,
    judge_licence,
    judge_version,
    judge_vulnerabilities,
    latest_candidates,
    newest_allowed,
    resolve,
    versions_needing_time,
)

NOW = datetime(2024, 6, 10, 12, 0, tzinfo=UTC)
DAY = 86400.0
M = "example.com/m"


def _policy(**gates: object) -> Policy:
    defaults: dict[str, object] = {"owner": "tenant finance"}
    defaults.update(gates)
    return Policy(**defaults)  # type: ignore[arg-type]


AGE7 = _policy(min_age=AgeRule(7 * DAY, "tenant finance"))
VULNS = _policy(vulnerabilities=VulnerabilityRule("/var/lib/vulndb", (), "tenant finance"))


def _ev(*pairs: tuple[str, str]) -> tuple[Event, ...]:
    return tuple(Event(kind, version) for kind, version in pairs)  # type: ignore[arg-type]


# --- OSV ranges -------------------------------------------------------------

RANGES = [
    # events, version, affected, fixed
    (_ev(("introduced", "0"), ("fixed", "1.2.4")), "v1.2.3", True, "v1.2.4"),
    (_ev(("introduced", "0"), ("fixed", "1.2.4")), "v1.2.4", False, ""),
    (_ev(("introduced", "0"), ("fixed", "1.2.4")), "v0.0.1", True, "v1.2.4"),
    (_ev(("introduced", "1.1.0"), ("fixed", "1.2.4")), "v1.0.9", False, ""),
    (_ev(("introduced", "1.1.0"), ("fixed", "1.2.4")), "v1.1.0", True, "v1.2.4"),
    (_ev(("introduced", "1.1.0"), ("fixed", "1.2.4")), "v1.2.4-rc.1", True, "v1.2.4"),
    # unsorted events, two ranges in one list (OSV allows both)
    (_ev(("fixed", "1.3.2"), ("introduced", "1.3.0"), ("fixed", "1.2.4"), ("introduced", "0")),
     "v1.3.1", True, "v1.3.2"),
    (_ev(("fixed", "1.3.2"), ("introduced", "1.3.0"), ("fixed", "1.2.4"), ("introduced", "0")),
     "v1.2.9", False, ""),
    # numeric, not text, order: 1.10.0 > 1.9.0
    (_ev(("introduced", "1.9.0"), ("fixed", "1.10.0")), "v1.9.5", True, "v1.10.0"),
    (_ev(("introduced", "1.9.0"), ("fixed", "1.10.0")), "v1.10.0", False, ""),
    # no fix yet
    (_ev(("introduced", "2.0.0"),), "v2.5.0", True, ""),
    # last_affected is inclusive
    (_ev(("introduced", "0"), ("last_affected", "1.4.0")), "v1.4.0", True, ""),
    (_ev(("introduced", "0"), ("last_affected", "1.4.0")), "v1.4.1", False, ""),
    # pseudo-versions sort before the release they precede
    (_ev(("introduced", "0"), ("fixed", "0.0.0-20220101000000-abcdefabcdef")),
     "v0.0.0-20211201000000-123456789abc", True, "v0.0.0-20220101000000-abcdefabcdef"),
    (_ev(("introduced", "0"), ("fixed", "1.0.0")), "v0.9.1-0.20230101000000-abcdefabcdef",
     True, "v1.0.0"),
    (_ev(("introduced", "0"), ("fixed", "1.0.0")), "v1.0.1-0.20230101000000-abcdefabcdef",
     False, ""),
    # +incompatible: build metadata is ignored in the comparison
    (_ev(("introduced", "0"), ("fixed", "20.10.11+incompatible")), "v20.10.10+incompatible",
     True, "v20.10.11+incompatible"),
    (_ev(("introduced", "0"), ("fixed", "20.10.11")), "v20.10.11+incompatible", False, ""),
    # a leading v in the database is tolerated
    (_ev(("introduced", "v1.0.0"), ("fixed", "v1.0.5")), "v1.0.2", True, "v1.0.5"),
    # broken event versions err towards affected
    (_ev(("introduced", "banana"), ("fixed", "1.0.0")), "v0.5.0", True, "v1.0.0"),
    (_ev(("introduced", "0"), ("fixed", "not-a-version")), "v9.0.0", True, ""),
    # empty range at one version
    (_ev(("introduced", "1.0.0"), ("fixed", "1.0.0")), "v1.0.0", False, ""),
]  # fmt: skip


@pytest.mark.parametrize(("events", "version", "hit", "fixed"), RANGES)
def test_osv_ranges(events: tuple[Event, ...], version: str, hit: bool, fixed: str) -> None:
    affected, fix, _ = affected_range(events, version)
    assert (affected, fix) == (hit, fixed)


def test_explicit_versions_and_evidence_text() -> None:
    listed = Advisory("GO-2024-0001", M, versions=("1.0.0",))
    assert affects(listed, "v1.0.0") == (True, "no fixed version")
    assert affects(listed, "v1.0.1") == (False, "")
    last = Advisory(
        "GO-2024-0002", M, ranges=(_ev(("introduced", "0"), ("last_affected", "1.4.0")),)
    )
    assert affects(last, "v1.3.0") == (True, "last affected v1.4.0, no fixed version")


# --- vulnerabilities ---------------------------------------------------------

ADV = Advisory(
    "GO-2024-1234",
    M,
    ranges=(_ev(("introduced", "0"), ("fixed", "1.2.4")),),
    aliases=("CVE-2024-0001", "GHSA-xxxx-yyyy-zzzz"),
)


def test_a_vulnerable_version_is_refused_with_the_issue_text() -> None:
    verdict = judge_vulnerabilities(VULNS, M, "v1.2.3", [ADV])
    assert verdict.refused
    assert verdict.rule == VULNERABILITY
    assert verdict.message == (
        "example.com/m@v1.2.3: refused by the policy of tenant finance: "
        "GO-2024-1234 affects v1.2.3, fixed in v1.2.4"
    )
    assert not judge_vulnerabilities(VULNS, M, "v1.2.4", [ADV]).refused


@pytest.mark.parametrize("accepted", ["GO-2024-1234", "CVE-2024-0001", "GHSA-xxxx-yyyy-zzzz"])
def test_an_accepted_advisory_or_alias_lets_the_version_through(accepted: str) -> None:
    policy = _policy(vulnerabilities=VulnerabilityRule("/db", (accepted,), "tenant finance"))
    assert judge_vulnerabilities(policy, M, "v1.2.3", [ADV]).outcome is Outcome.ALLOW


def test_advisories_of_other_modules_do_not_count() -> None:
    other = Advisory("GO-2024-9999", "example.com/other", ranges=ADV.ranges)
    assert judge_vulnerabilities(VULNS, M, "v1.0.0", [other]).outcome is Outcome.ALLOW


def test_many_advisories_are_named_in_one_line() -> None:
    many = [Advisory(f"GO-2024-000{i}", M, ranges=ADV.ranges) for i in range(5)]
    message = judge_vulnerabilities(VULNS, M, "v1.0.0", many).message
    assert "\n" not in message
    assert message.endswith("GO-2024-0002 affects v1.0.0, fixed in v1.2.4; and 2 more")


def test_an_unreadable_database_refuses_everything() -> None:
    down = DatabaseUnavailable("/var/lib/vulndb", "index/db.json: no such file")
    verdict = judge_vulnerabilities(VULNS, M, "v1.0.0", down)
    assert verdict.refused and verdict.rule == VULNDB_UNAVAILABLE
    assert "the vulnerability database /var/lib/vulndb cannot be read" in verdict.message


# --- age --------------------------------------------------------------------

AGES = [
    # published, outcome, rule
    (NOW - timedelta(days=8), Outcome.ALLOW, ""),
    (NOW - timedelta(days=7), Outcome.ALLOW, ""),
    (NOW - timedelta(days=7) + timedelta(seconds=1), Outcome.REFUSE, AGE),
    (NOW - timedelta(hours=2), Outcome.REFUSE, AGE),
    (NOW + timedelta(hours=2), Outcome.REFUSE, AGE),  # clock skew or a lie: too young
    (None, Outcome.REFUSE, AGE_UNKNOWN),
    (datetime(2024, 1, 1), Outcome.REFUSE, AGE_UNKNOWN),  # no timezone: not usable
]


@pytest.mark.parametrize(("published", "outcome", "rule"), AGES)
def test_cooldown(published: datetime | None, outcome: Outcome, rule: str) -> None:
    verdict = judge_age(AGE7, M, "v1.0.0", published, NOW)
    assert (verdict.outcome, verdict.rule) == (outcome, rule)


def test_cooldown_messages() -> None:
    young = judge_age(AGE7, M, "v1.2.3", NOW - timedelta(days=2, hours=3), NOW)
    assert young.message == (
        "example.com/m@v1.2.3: refused by the policy of tenant finance: v1.2.3 is 2 days old "
        "(published 2024-06-08T09:00:00Z); versions younger than 7 days are refused"
    )
    unknown = judge_age(AGE7, M, "v1.2.3", None, NOW)
    assert unknown.reason == (
        "v1.2.3 has no usable publication time in its .info; versions younger than 7 days "
        "are refused"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(7 * DAY, "7 days"), (DAY, "1 day"), (36 * 3600, "36 hours"), (90 * 60, "90 minutes"),
     (2.5 * DAY, "2 days"), (59, "59 seconds"), (3600, "1 hour"), (-5, "0 seconds")],
)  # fmt: skip
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


# --- warn mode and combination -------------------------------------------------


def test_warn_mode_serves_and_says_so() -> None:
    policy = _policy(mode="warn", min_age=AgeRule(7 * DAY, "tenant finance"))
    verdict = judge_age(policy, M, "v1.0.0", NOW - timedelta(days=1), NOW)
    assert verdict.outcome is Outcome.WARN and not verdict.refused
    assert verdict.message.startswith(
        "example.com/m@v1.0.0: would be refused by the policy of tenant finance (warn): "
    )


def test_judge_version_names_the_vulnerability_before_the_age() -> None:
    both = _policy(min_age=AGE7.min_age, vulnerabilities=VULNS.vulnerabilities)
    verdict = judge_version(both, M, "v1.2.3", NOW - timedelta(days=1), NOW, [ADV])
    assert verdict.rule == VULNERABILITY
    verdict = judge_version(both, M, "v1.2.4", NOW - timedelta(days=1), NOW, [ADV])
    assert verdict.rule == AGE
    verdict = judge_version(both, M, "v1.2.4", NOW - timedelta(days=9), NOW, [ADV])
    assert verdict.outcome is Outcome.ALLOW and verdict.message == ""


def test_no_gate_allows_everything() -> None:
    empty = _policy()
    assert judge_version(empty, M, "v1.0.0", None, NOW, DatabaseUnavailable("x", "y")).rule == ""
    assert judge_licence(empty, M, "v1.0.0", LicenceFindings()).outcome is Outcome.ALLOW


# --- licences -----------------------------------------------------------------

ALLOW = _policy(
    licenses=LicenceRule(allow=("Apache-2.0", "MIT", "BSD-3-Clause"), origin="tenant finance")
)
DENY = _policy(
    licenses=LicenceRule(
        deny=("GPL-3.0-only", "AGPL-3.0-only"), unknown="allow", origin="tenant finance"
    )
)


def _found(*files: tuple[str, tuple[str, ...]], problem: str = "") -> LicenceFindings:
    return LicenceFindings(tuple(LicenceFile(p, ids) for p, ids in files), problem)


LICENCES = [
    # policy, findings, rule, reason
    (ALLOW, _found(("LICENSE", ("MIT",))), "", ""),
    (ALLOW, _found(("LICENSE-MIT", ("MIT",)), ("LICENSE-APACHE", ("Apache-2.0",))), "", ""),
    (ALLOW, _found(("COPYING", ("GPL-3.0-only",))), LICENCE, "licence GPL-3.0-only is not allowed"),
    (ALLOW, _found(("LICENSE", ("MIT",)), ("COPYING", ("GPL-3.0-only",))), LICENCE,
     "licence GPL-3.0-only is not allowed"),
    (ALLOW, _found(("COPYING", ("LGPL-3.0-only", "GPL-3.0-only"))), LICENCE,
     "licences GPL-3.0-only, LGPL-3.0-only are not allowed"),
    (ALLOW, _found(), LICENCE_UNKNOWN, "no licence file at the module root"),
    (ALLOW, _found(("LICENSE.md", ())), LICENCE_UNKNOWN, "licence in LICENSE.md not recognised"),
    (ALLOW, _found(("LICENSE", ("MIT",)), ("COPYING", ())), LICENCE_UNKNOWN,
     "licence in COPYING not recognised"),
    (ALLOW, _found(problem="the zip is larger than 500 MiB"), LICENCE_UNKNOWN,
     "licence not determined: the zip is larger than 500 MiB"),
    (DENY, _found(("LICENSE", ("MIT",))), "", ""),
    (DENY, _found(("LICENSE", ("AGPL-3.0-only",))), LICENCE,
     "licence AGPL-3.0-only is not allowed"),
    (DENY, _found(), "", ""),  # unknown: allow
]  # fmt: skip


@pytest.mark.parametrize(("policy", "found", "rule", "reason"), LICENCES)
def test_licences(policy: Policy, found: LicenceFindings, rule: str, reason: str) -> None:
    verdict = judge_licence(policy, M, "v1.2.3", found)
    assert (verdict.rule, verdict.reason) == (rule, reason)
    assert verdict.refused == bool(rule)


def test_licence_message_is_the_issue_text() -> None:
    verdict = judge_licence(ALLOW, M, "v1.2.3", _found(("COPYING", ("GPL-3.0-only",))))
    assert verdict.message == (
        "example.com/m@v1.2.3: refused by the policy of tenant finance: "
        "licence GPL-3.0-only is not allowed"
    )


# --- resolving tenant and route blocks ------------------------------------------

TENANT = PolicyBlock(
    mode="enforce",
    licenses=LicenceRule(allow=("MIT",)),
    min_age=7 * DAY,
    vulnerabilities=VulnerabilityRule("/db"),
)


def test_the_tenant_block_alone() -> None:
    policy = resolve("finance", TENANT, None, None)
    assert policy is not None
    assert policy.owner == "tenant finance"
    assert policy.gates == ("licenses", "min_age", "vulnerabilities")
    assert {g.origin for g in (policy.licenses, policy.min_age, policy.vulnerabilities) if g} == {
        "tenant finance"
    }


def test_a_route_overrides_key_by_key() -> None:
    route = PolicyBlock(mode="warn", min_age=0, vulnerabilities=OFF)
    policy = resolve("finance", TENANT, "internal", route)
    assert policy is not None
    assert policy.mode == "warn"
    assert policy.gates == ("licenses",)
    assert policy.licenses is not None and policy.licenses.origin == "tenant finance"
    stricter = resolve(
        "finance", TENANT, "vendored", PolicyBlock(licenses=LicenceRule(deny=("GPL-3.0-only",)))
    )
    assert stricter is not None and stricter.licenses is not None
    assert stricter.licenses.origin == "route vendored"
    assert stricter.min_age is not None and stricter.min_age.origin == "tenant finance"


def test_no_gate_means_no_policy() -> None:
    assert resolve("finance", None, None, None) is None
    assert resolve("finance", PolicyBlock(mode="warn"), None, None) is None
    all_off = PolicyBlock(licenses=OFF, min_age=0, vulnerabilities=OFF)
    assert resolve("finance", TENANT, "r", all_off) is None
    anonymous = resolve(None, None, "public", PolicyBlock(min_age=DAY))
    assert anonymous is not None and anonymous.min_age is not None
    assert anonymous.min_age.origin == "route public"


# --- @v/list and @latest ------------------------------------------------------------

LIST = ["v1.0.0", "v1.1.0", "v1.2.0", "v1.2.4", "v1.3.0-rc.1", "v1.3.0"]
TIMES = {
    "v1.0.0": NOW - timedelta(days=300),
    "v1.1.0": NOW - timedelta(days=200),
    "v1.2.0": NOW - timedelta(days=100),
    "v1.2.4": NOW - timedelta(days=30),
    "v1.3.0-rc.1": NOW - timedelta(days=5),
    "v1.3.0": NOW - timedelta(days=1),
}
BOTH = _policy(min_age=AGE7.min_age, vulnerabilities=VULNS.vulnerabilities)


def test_the_list_leaves_refused_versions_out_in_the_upstream_order() -> None:
    result = filter_list(BOTH, M, [*LIST, "garbage"], TIMES, NOW, [ADV])
    assert result.kept == ("v1.2.4", "garbage")  # under 1.2.4: vulnerable; 1.3.x too young
    assert {v.version: v.rule for v in result.removed} == {
        "v1.0.0": VULNERABILITY,
        "v1.1.0": VULNERABILITY,
        "v1.2.0": VULNERABILITY,
        "v1.3.0-rc.1": AGE,
        "v1.3.0": AGE,
    }
    assert result.body == b"v1.2.4\ngarbage\n"


def test_times_are_needed_only_down_to_the_first_old_version() -> None:
    assert versions_needing_time(AGE7, LIST, {}, NOW) == list(reversed(LIST))
    partial = {v: TIMES[v] for v in ("v1.3.0", "v1.3.0-rc.1", "v1.2.4")}
    assert versions_needing_time(AGE7, LIST, partial, NOW) == []
    assert versions_needing_time(VULNS, LIST, {}, NOW) == []  # no cooldown: no times
    result = filter_list(AGE7, M, LIST, partial, NOW, [])
    assert result.kept == ("v1.0.0", "v1.1.0", "v1.2.0", "v1.2.4")  # older ones presumed old


def test_a_version_without_a_time_is_left_out() -> None:
    result = filter_list(AGE7, M, ["v1.0.0", "v2.0.0"], {"v1.0.0": TIMES["v1.0.0"]}, NOW, [])
    assert result.kept == ("v1.0.0",)
    assert result.removed[0].rule == AGE_UNKNOWN


def test_warned_versions_stay_listed() -> None:
    policy = _policy(mode="warn", min_age=AGE7.min_age)
    result = filter_list(policy, M, LIST, TIMES, NOW, [])
    assert result.kept == tuple(LIST)
    assert [v.version for v in result.warned] == ["v1.3.0-rc.1", "v1.3.0"]


def test_latest_order_is_the_go_commands() -> None:
    versions = ["v1.0.0", "v1.1.0-beta.1", "v0.0.0-20240101000000-abcdefabcdef", "v1.0.1", "x"]
    assert latest_candidates(versions) == [
        "v1.0.1",
        "v1.0.0",
        "v1.1.0-beta.1",
        "v0.0.0-20240101000000-abcdefabcdef",
    ]


def test_latest_answers_the_newest_allowed_version() -> None:
    choice = newest_allowed(BOTH, M, LIST, TIMES, NOW, [ADV])
    assert choice.version == "v1.2.4"
    assert [v.version for v in choice.passed_over] == ["v1.3.0"]  # releases before prereleases
    assert choice.first_refusal is not None and choice.first_refusal.rule == AGE
    none = newest_allowed(BOTH, M, ["v1.0.0"], TIMES, NOW, [ADV])
    assert none.version is None
    assert none.first_refusal is not None and none.first_refusal.rule == VULNERABILITY
