"""The enforcement API the request handler calls: real rules, a generated vulnerability
database on disk, real zips with real licence texts, an injected clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from support.gomod import write_zip
from support.licensed import licensed_module
from support.vulndb import Vuln, write_vulndb

from router.config import load_or_raise
from router.core.policy import AGE, LICENCE, VULNERABILITY, Outcome
from router.licenses import DetectionStore
from router.observability import Metrics
from router.policing import PolicyEnforcer, info_time

NOW = datetime(2024, 6, 10, tzinfo=UTC)
M = "example.com/lib"


def _rules(tmp_path: Path) -> Path:
    write_vulndb(tmp_path / "vulndb", [Vuln("GO-2024-1234", M, (("0", "1.2.4"),))])
    doc = {
        "version": 1,
        "upstreams": [{"name": "a", "url": "https://a.example"}],
        "pools": {"main": {"upstreams": ["a"]}},
        "tenants": [
            {
                "id": "finance",
                "policy": {
                    "licenses": {"allow": ["MIT", "Apache-2.0"]},
                    "min_age": "7d",
                    "vulnerabilities": {"db": "vulndb"},
                },
            },
            {"id": "lab", "policy": {"mode": "warn", "min_age": "7d"}},
        ],
        "routes": [
            {"name": "lib", "match": {"module": [M]}, "pool": "main", "policy": {"min_age": 0}}
        ],
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _enforcer(tmp_path: Path, **kwargs: object) -> PolicyEnforcer:
    enforcer = PolicyEnforcer(load_or_raise([_rules(tmp_path)]), clock=lambda: NOW, **kwargs)  # type: ignore[arg-type]
    enforcer.databases.refresh_all()
    return enforcer


def test_info_time_reads_go_times() -> None:
    assert info_time(b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}') == datetime(
        2024, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    nanos = info_time(b'{"Time":"2019-07-10T20:49:34.123456789+02:00"}')
    assert nanos is not None and nanos.microsecond == 123456
    for bad in (b"{}", b"not json", b'{"Time":"yesterday"}', b'{"Time":"0001-01-01T00:00:00Z"}'):
        assert info_time(bad) is None


def test_the_cheap_gates_through_the_rules(tmp_path: Path) -> None:
    enforcer = _enforcer(tmp_path)
    finance = enforcer.policy("finance", None)
    assert finance is not None
    old = NOW - timedelta(days=30)
    assert enforcer.check_version(finance, M, "v1.2.3", old).rule == VULNERABILITY
    assert enforcer.check_version(finance, M, "v1.2.4", NOW - timedelta(days=1)).rule == AGE
    assert enforcer.check_version(finance, M, "v1.2.4", old).outcome is Outcome.ALLOW
    routed = enforcer.policy("finance", "lib")  # the route lifts the cooldown
    assert routed is not None and routed.min_age is None
    assert enforcer.check_version(routed, M, "v1.2.5", None).outcome is Outcome.ALLOW
    assert enforcer.policy(None, None) is None
    assert enforcer.policy("unknown-tenant", None) is None


async def test_list_and_latest_fetch_only_the_times_they_need(tmp_path: Path) -> None:
    enforcer = _enforcer(tmp_path)
    policy = enforcer.policy("finance", None)
    assert policy is not None
    published = {f"v1.1.{i}": NOW - timedelta(days=100 - i) for i in range(10)}
    published.update(
        {
            "v1.2.3": NOW - timedelta(days=90),
            "v1.2.4": NOW - timedelta(days=60),
            "v1.3.0": NOW - timedelta(days=2),
        }
    )
    versions = [*sorted(published)]
    asked: list[str] = []

    async def fetch(version: str) -> datetime | None:
        asked.append(version)
        return published.get(version)

    listed = await enforcer.filter_list(policy, M, versions, fetch)
    assert listed.kept == ("v1.2.4",)  # older ones are vulnerable, v1.3.0 too young
    assert len(asked) == 4  # one batch, newest first: v1.2.4 is old enough, the rest presumed
    assert asked[:2] == ["v1.3.0", "v1.2.4"]
    choice = await enforcer.latest(policy, M, versions, fetch)
    assert choice.version == "v1.2.4"
    assert choice.first_refusal is not None and choice.first_refusal.rule == AGE


async def test_licences_are_detected_once_and_kept(tmp_path: Path) -> None:
    store = DetectionStore(tmp_path / "licences")
    enforcer = _enforcer(tmp_path, store=store)
    policy = enforcer.policy("finance", None)
    assert policy is not None
    gpl = write_zip(licensed_module(M, "v2.0.0", {"COPYING": "GPL-3.0-only"}), tmp_path / "g.zip")
    mit = write_zip(licensed_module(M, "v2.1.0", {"LICENSE": "MIT"}), tmp_path / "m.zip")
    try:
        first, second = await asyncio.gather(
            enforcer.check_zip(policy, M, "v2.0.0", gpl),
            enforcer.check_zip(policy, M, "v2.0.0", gpl),
        )
        assert first == second
        assert first.rule == LICENCE
        assert first.message == (
            "example.com/lib@v2.0.0: refused by the policy of tenant finance: "
            "licence GPL-3.0-only is not allowed"
        )
        assert (await enforcer.check_zip(policy, M, "v2.1.0", mit)).outcome is Outcome.ALLOW
    finally:
        enforcer.close()
    assert store.get(M, "v2.0.0") is not None
    again = _enforcer(tmp_path, store=store)  # a restart: read back, nothing detected
    gpl.unlink()
    assert (await again.licences(M, "v2.0.0", gpl)).findings.ids == ("GPL-3.0-only",)


def test_refusals_and_warnings_are_counted_by_tenant_and_rule(tmp_path: Path) -> None:
    metrics = Metrics()
    enforcer = _enforcer(tmp_path, metrics=metrics)
    lab = enforcer.policy("lab", None)
    finance = enforcer.policy("finance", None)
    assert lab is not None and finance is not None
    young = NOW - timedelta(days=1)
    warned = enforcer.check_version(lab, M, "v1.2.4", young)
    assert warned.outcome is Outcome.WARN
    enforcer.record("lab", warned)
    enforcer.record("finance", enforcer.check_version(finance, M, "v1.2.3", young))
    text = metrics.exposition()[0].decode()
    assert 'goproxy_router_policy_warnings_total{rule="age",tenant="lab"} 1.0' in text
    assert 'goproxy_router_policy_refusals_total{rule="vulnerability",tenant="finance"} 1.0' in text


def test_a_reload_keeps_databases_still_named(tmp_path: Path) -> None:
    enforcer = _enforcer(tmp_path)
    (db,) = enforcer.databases.all()
    enforcer.update_rules(load_or_raise([tmp_path / "rules.yaml"]))
    assert enforcer.databases.all() == [db] and db.snapshot is not None
