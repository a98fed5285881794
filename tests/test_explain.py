"""`explain` answers for every example tenant, from the rules alone, and never shows a token."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).parents[1]
EXAMPLES = REPO / "rules" / "examples"
_EXPLAIN = [sys.executable, "-m", "router", "explain"]


def explain(*args: str, rules: Path = EXAMPLES) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "router", "explain", "--rules", str(rules), *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "example-token" not in done.stdout
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize(
    ("args", "tenant", "route", "order"),
    [
        (
            ["--tenant", "finance", "--token", "finance-example-token", "golang.org/x/mod@v0.20.0"],
            "finance",
            None,
            ["corp-athens", "goproxy-cn", "official"],
        ),
        (
            [
                "--tenant",
                "finance",
                "--token",
                "finance-example-token",
                "corp.example.com/finance/ledger@v1.0.0",
            ],
            "finance",
            "corp-modules",
            ["corp-athens"],
        ),
        (
            ["--token", "devops-example-token", "golang.org/x/mod@v0.20.0"],
            "devops",
            None,
            ["ci-cache", "corp-athens", "goproxy-cn", "official"],
        ),
        (
            ["--tenant", "health", "golang.org/x/mod@v0.20.0", "--kind", "info"],
            "health",
            None,
            ["corp-athens", "goproxy-cn", "official"],
        ),
        (
            ["--token", "platform-example-token", "golang.org/x/mod", "--kind", "list"],
            "platform",
            None,
            ["goproxy-cn", "official"],
        ),
        (
            ["golang.org/x/mod@v0.20.0", "--go-version", "go1.20.3"],
            None,
            "legacy-go",
            ["legacy-mirror", "official"],
        ),
        (["golang.org/x/mod@v0.20.0"], None, None, ["goproxy-cn", "official"]),
    ],
)
def test_explain_every_example_tenant(
    args: list[str], tenant: str | None, route: str | None, order: list[str]
) -> None:
    out = explain(*args)
    assert out["tenant"]["id"] == tenant
    assert out["route"]["matched"] == route
    assert out["order"] == order
    for row in out["candidates"]:
        assert set(row["components"]) == {"rtt", "cost", "heat"}
        assert isinstance(row["score"], float)


def test_explain_refusals_and_hidden_modules() -> None:
    assert explain("--tenant", "finance", "golang.org/x/mod@v0.1.0")["answer"]["status"] == 401
    hidden = explain("--tenant", "health", "corp.example.com/finance/ledger@v1.0.0")
    assert hidden["answer"]["status"] == 404
    denied = explain("--token", "platform-example-token", "github.com/banned/x@v1.0.0")
    assert denied["answer"]["status"] == 403
    assert "github.com/banned/*" in denied["answer"]["reason"]


def test_explain_shows_why_routes_did_not_match() -> None:
    out = explain("--tenant", "health", "golang.org/x/mod@v0.20.0")
    skipped = {r["route"]: r["why"] for r in out["route"]["not_matched"]}
    assert skipped["legacy-go"] == "no parseable X-Go-Version header"


def test_explain_says_when_answers_are_verified_against_the_checksum_db(tmp_path: Path) -> None:
    from support.gateway import write_rules

    rules = write_rules(
        tmp_path / "rules.yaml",
        [{"name": "a", "url": "http://127.0.0.1:9"}, {"name": "b", "url": "http://127.0.0.1:9"}],
        {"main": {"upstreams": ["a", "b"]}},
        tenants=[{"id": "devops", "pool": "main", "verify_checksums": True}],
        nosumdb=["corp.example.com/*"],
        rollouts=[{"upstream": "a", "compare_with": "b"}],
    )

    def ask(*args: str) -> dict[str, object]:
        return explain(*args, rules=rules)

    assert ask("--tenant", "devops", "example.com/m@v1.0.0", "--kind", "zip")["verify_checksums"]
    assert not ask("--tenant", "devops", "example.com/m@v1.0.0", "--kind", "info")[
        "verify_checksums"
    ]
    assert not ask("--tenant", "devops", "corp.example.com/x@v1.0.0")["verify_checksums"]
    plain = ask("example.com/m@v1.0.0", "--kind", "zip")
    assert not plain["verify_checksums"]
    assert plain["rollouts"] == [{"candidate": "a", "compare_with": "b"}]


def test_explain_covers_checksum_db_requests_like_the_gateway() -> None:
    private = explain(
        "--tenant",
        "finance",
        "--token",
        "finance-example-token",
        "/sumdb/sum.golang.org/lookup/corp.example.com/finance/ledger@v1.0.0",
    )
    assert private["answer"] == {
        "status": 404,
        "reason": "not found: corp.example.com/finance/ledger is private here; its checksum is "
        "not looked up (set GOPRIVATE or GONOSUMDB for it)",
    }
    public = explain("/sumdb/sum.golang.org/lookup/golang.org/x/mod@v0.20.0")
    assert public["request"]["kind"] == "sumdb"
    assert public["pool"]["fallback"] == "any-error"
    assert all(
        row.get("excluded") == "does not proxy checksum database sum.golang.org"
        for row in public["candidates"]
        if row["upstream"] not in public["order"]
    )


async def test_explain_asks_a_running_gateway_for_its_live_plan(tmp_path: Path) -> None:
    import asyncio

    from support.gateway import gateway_in_process, one_pool_rules
    from support.goproxy_server import FixtureProxy

    async with FixtureProxy([], name="a") as a, FixtureProxy([], name="b") as b:
        rules = one_pool_rules(tmp_path / "r.yaml", {"a": a.url, "b": b.url}, mode="best")
        async with gateway_in_process(rules) as gw:
            done = await asyncio.to_thread(
                subprocess.run,
                [*_EXPLAIN, "--rules", str(rules), "--gateway", gw.url, "example.com/m@v1.0.0"],
                capture_output=True,
                text=True,
                timeout=30,
                cwd=REPO,
            )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["pool"]["name"] == "main" and set(plan["order"]) == {"a", "b"}
    assert all(row["rtt_samples"] >= 1 for row in plan["candidates"])  # probed at start
