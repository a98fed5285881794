"""Metrics after a scripted mix of traffic: families present, labels bounded."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from support.gateway import gateway_in_process, write_rules
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import Fault, FixtureProxy

LIB = simple_module("example.com/secretish/lib", "v1.0.0")


async def test_metric_families_and_bounded_labels(tmp_path: Path) -> None:
    a = FixtureProxy(ModuleSet([LIB]), name="a")
    b = FixtureProxy(ModuleSet([LIB]), name="b")
    async with a, b:
        rules = write_rules(
            tmp_path / "r.yaml",
            [{"name": "a", "url": a.url, "cost_per_gb": 0.5}, {"name": "b", "url": b.url}],
            {"main": {"upstreams": ["a", "b"], "fallback": "any-error", "mode": "ordered"}},
            tenants=[{"id": "team", "pool": "main"}],
            default={"pool": "main"},
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as h:
            paths = [
                "/example.com/secretish/lib/@v/list",
                "/example.com/secretish/lib/@v/v1.0.0.info",
                "/example.com/secretish/lib/@v/v1.0.0.info",
                "/example.com/secretish/lib/@v/v1.0.0.zip",
                "/example.com/nothere/@v/list",
                "/example.com/bad/@v/v2.0.0.mod",
            ]
            for p in paths:
                async with h.get(gw.url + p, headers={"X-Tenant-ID": "team"}) as resp:
                    await resp.read()
            a.add_fault(Fault(pattern=r"\.mod$", status=500))
            async with h.get(gw.url + "/example.com/secretish/lib/@v/v1.0.0.mod") as resp:
                assert resp.status == 200
            async with h.get(gw.url + "/metrics") as resp:
                text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in [
        "goproxy_router_requests",
        "goproxy_router_request_duration_seconds",
        "goproxy_router_upstream_request_duration_seconds",
        "goproxy_router_upstream_errors",
        "goproxy_router_upstream_selections",
        "goproxy_router_fallbacks",
        "goproxy_router_cache_requests",
        "goproxy_router_upstream_connections",
        "goproxy_router_upstream_bytes",
        "goproxy_router_upstream_spend_usd",
        "goproxy_router_in_flight_requests",
        "goproxy_router_rules_reloads",
    ]:
        assert name in families, name
    samples = [s for f in families.values() for s in f.samples]
    for s in samples:
        for label in s.labels.values():
            assert "example.com" not in label and "v1.0.0" not in label
            assert not re.match(r"\d+\.\d+\.\d+\.\d+", label)

    def value(name: str, **labels: str) -> float:
        return sum(
            s.value for s in samples if s.name == name and labels.items() <= s.labels.items()
        )

    assert value("goproxy_router_requests_total", tenant="team", kind="info", status="2xx") == 2
    assert value("goproxy_router_cache_requests_total", kind="info", result="hit") == 1
    assert value("goproxy_router_upstream_errors_total", upstream="a", cause="5xx") == 1
    assert value("goproxy_router_fallbacks_total", pool="main", upstream="a") == 2  # 404 + 500
    assert value("goproxy_router_upstream_connections_total", upstream="a", event="opened") >= 1
    used = value("goproxy_router_upstream_connections_total", upstream="a", event="used")
    opened = value("goproxy_router_upstream_connections_total", upstream="a", event="opened")
    assert used > opened >= 1  # the rest went over reused keep-alive connections
    assert value("goproxy_router_upstream_spend_usd_total", upstream="a") > 0
