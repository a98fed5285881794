"""The `policy:` block in the rules: the typed model it builds, and its JSON Schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from router.config import load_rules
from router.config.schema import json_schema
from router.core.policy import OFF, LicenceRule, PolicyBlock, VulnerabilityRule, resolve

REPO = Path(__file__).parents[2]
EXAMPLE = REPO / "rules" / "examples" / "policy.yaml"


def test_the_example_builds_the_typed_policy() -> None:
    result = load_rules([EXAMPLE])
    assert result.problems == []
    assert result.rules is not None
    tenants = {t.id: t for t in result.rules.tenants}
    db = str(EXAMPLE.parent / "vulndb")  # relative to the rules file, not the cwd
    assert tenants["payments"].policy == PolicyBlock(
        mode="enforce",
        licenses=LicenceRule(allow=("Apache-2.0", "MIT", "BSD-2-Clause", "BSD-3-Clause", "ISC")),
        min_age=7 * 86400.0,
        vulnerabilities=VulnerabilityRule(db, ("GO-2022-0646",)),
    )
    (route,) = result.rules.routes
    assert route.policy == PolicyBlock(min_age=0.0, licenses=OFF)
    effective = resolve("payments", tenants["payments"].policy, route.name, route.policy)
    assert effective is not None and effective.gates == ("vulnerabilities",)


def test_ids_are_kept_in_current_spdx_form(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "version: 1\nupstreams: [{name: a, url: 'https://a.example'}]\n"
        "pools: {main: {upstreams: [a]}}\n"
        "tenants:\n  - id: t\n    policy:\n"
        "      licenses: {deny: [GPL-3.0, agpl-3.0-or-later, 'GPL-2.0+']}\n"
        "      vulnerabilities: 'off'\n"
    )
    result = load_rules([path])
    assert result.rules is not None, result.problems
    policy = result.rules.tenants[0].policy
    assert policy is not None and policy.vulnerabilities is OFF
    assert isinstance(policy.licenses, LicenceRule)
    assert policy.licenses.deny == ("GPL-3.0-only", "AGPL-3.0-or-later", "GPL-2.0-or-later")
    assert policy.licenses.unknown == "deny"


def test_the_json_schema_describes_the_block() -> None:
    schema = json_schema()
    tenant = schema["properties"]["tenants"]["items"]["properties"]
    policy = tenant["policy"]["properties"]
    assert set(policy) == {"mode", "licenses", "min_age", "vulnerabilities"}
    assert policy["mode"]["enum"] == ["enforce", "warn"]
    assert {"const": "off"} in policy["licenses"]["anyOf"]
    route = schema["properties"]["routes"]["items"]["properties"]
    assert route["policy"] == tenant["policy"]


def test_explain_shows_the_policy_that_applies() -> None:
    from router.explain import Question, explain

    result = load_rules([REPO / "rules" / "examples"])
    assert result.rules is not None
    ask: dict[str, Any] = {"tenant": "payments", "token": "payments-example-token"}
    shown = explain(result.rules, Question("example.com/m", "v1.0.0", **ask))["policy"]
    assert shown["mode"] == "enforce"
    assert shown["licenses"]["from"] == "tenant payments"
    assert shown["min_age"] == {"seconds": 604800.0, "text": "7 days", "from": "tenant payments"}
    assert shown["checked_for_this_request"] == ["licenses", "min_age", "vulnerabilities"]
    own = explain(result.rules, Question("git.payments.example.com/ledger", "v1.0.0", **ask))
    assert own["route"]["matched"] == "payments-own-code"
    assert set(own["policy"]) == {"mode", "vulnerabilities", "checked_for_this_request"}
    info = explain(result.rules, Question("example.com/m", "v1.0.0", kind="info", **ask))
    assert info["policy"]["checked_for_this_request"] == ["min_age", "vulnerabilities"]
    assert explain(result.rules, Question("example.com/m", "v1.0.0"))["policy"] is None
