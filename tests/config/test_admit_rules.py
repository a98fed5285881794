"""`cache.admit`, `pools.NAME.admit`, `tenants[].admit` in the rules: the model they
build and their JSON Schema (bad words and regexes: broken/admit.yaml)."""

from __future__ import annotations

from pathlib import Path

from router.config import load_rules
from router.config.schema import json_schema
from router.core.admission import DEFAULT_RULE


def test_the_three_levels_build_compiled_rules(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "version: 1\n"
        "upstreams: [{name: a, url: 'https://a.example'}]\n"
        "cache: {admit: [release, {regex: '^v0\\.0\\.0-2024'}]}\n"
        "pools:\n"
        "  main: {upstreams: [a]}\n"
        "  dev: {upstreams: [a], admit: [release, prerelease, pseudo]}\n"
        "tenants:\n"
        "  - {id: ci, admit: []}\n"
        "  - {id: one, admit: pseudo}\n"
        "  - {id: plain}\n"
    )
    result = load_rules([path])
    assert result.rules is not None, result.problems
    rules = result.rules
    assert rules.cache.admit.describe() == ["release", r"regex:^v0\.0\.0-2024"]
    assert rules.cache.admit.origin == "cache.admit"
    pools = {p.name: p for p in rules.pools}
    assert pools["main"].admit is None
    dev = pools["dev"].admit
    assert dev is not None and dev.words == ("release", "prerelease", "pseudo")
    assert dev.origin == "pools.dev.admit"
    tenants = {t.id: t for t in rules.tenants}
    ci, one = tenants["ci"].admit, tenants["one"].admit
    assert ci is not None and ci.describe() == [] and ci.origin == "tenants[ci].admit"
    assert one is not None and one.words == ("pseudo",)  # one word is a list of one
    assert tenants["plain"].admit is None


def test_unwritten_cache_admit_is_the_release_only_default(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "version: 1\nupstreams: [{name: a, url: 'https://a.example'}]\n"
        "pools: {main: {upstreams: [a]}}\ncache: {memory: 1MiB}\n"
    )
    result = load_rules([path])
    assert result.rules is not None, result.problems
    assert result.rules.cache.admit == DEFAULT_RULE


def test_the_json_schema_describes_admit_at_each_level() -> None:
    schema = json_schema()["properties"]
    cache = schema["cache"]["properties"]["admit"]
    pool = schema["pools"]["additionalProperties"]["properties"]["admit"]
    tenant = schema["tenants"]["items"]["properties"]["admit"]
    for spec in (cache, pool, tenant):
        assert "anyOf" in spec
    assert "release" in str(cache) and "regex" in str(cache)
