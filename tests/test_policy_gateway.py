"""Policy gates on the live request path: real fixture upstreams on loopback, a generated
vulnerability database, the gateway in process; the cooldown, the vulnerability gate,
`@v/list` and `@latest` filtering per tenant after the caches, warn mode, reloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from support.gateway import gateway_in_process, one_pool_rules
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import FixtureProxy
from support.vulndb import Vuln, write_vulndb

from router.app import STATE

OLD = datetime(2024, 1, 1, tzinfo=UTC)
M = "example.com/m"
V100 = simple_module(M, "v1.0.0", time=OLD)
V110 = simple_module(M, "v1.1.0", time=OLD + timedelta(days=30))  # vulnerable
V120 = simple_module(M, "v1.2.0", time=datetime.now(UTC) - timedelta(days=1))  # too young
VULN_LINE = (
    "example.com/m@v1.1.0: refused by the policy of tenant finance: "
    "GO-2024-1234 affects v1.1.0, fixed in v1.2.0"
)
HEADER = "X-Router-Policy-Warning"


def _rules(tmp_path: Path, url: str, *, mode: str = "enforce", policy: bool = True) -> Path:
    write_vulndb(tmp_path / "vulndb", [Vuln("GO-2024-1234", M, (("1.1.0", "1.2.0"),))])
    block: dict[str, Any] = {
        "mode": mode,
        "min_age": "7d",
        "vulnerabilities": {"db": str(tmp_path / "vulndb")},
    }
    finance: dict[str, Any] = {"id": "finance", **({"policy": block} if policy else {})}
    return one_pool_rules(
        tmp_path / "rules.yaml",
        {"fixtures": url},
        tenants=[finance, {"id": "open"}],
        cache={"memory": 1 << 20},
    )


async def _get(
    http: aiohttp.ClientSession, url: str, tenant: str
) -> tuple[int, str, aiohttp.ClientResponse]:
    async with http.get(url, headers={"X-Tenant-ID": tenant}) as resp:
        return resp.status, (await resp.read()).decode("utf-8", "replace"), resp


async def test_lists_latest_and_files_are_filtered_per_tenant_after_the_cache(
    tmp_path: Path,
) -> None:
    async with FixtureProxy(ModuleSet([V100, V110, V120])) as up:
        rules = _rules(tmp_path, up.url)
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            base = f"{gw.url}/{M}/@v/"
            # twice each: the second answer is a fresh memory hit (the fast path)
            for _ in range(2):
                status, body, resp = await _get(http, base + "list", "finance")
                assert (status, body) == (200, "v1.0.0\n")
                status, body, resp = await _get(http, base + "list", "open")
                assert (status, sorted(body.split())) == (200, ["v1.0.0", "v1.1.0", "v1.2.0"])
            assert resp.headers["X-Router-Upstream"] == "cache"
            assert up.count("/@v/list") == 1  # the cache keeps the unfiltered answer

            for _ in range(2):
                status, body, _ = await _get(http, f"{gw.url}/{M}/@latest", "finance")
                assert status == 200 and '"Version":"v1.0.0"' in body.replace(" ", "")
                status, body, _ = await _get(http, f"{gw.url}/{M}/@latest", "open")
                assert status == 200 and '"Version":"v1.2.0"' in body.replace(" ", "")

            for ext in ("info", "mod", "zip"):
                status, body, _ = await _get(http, base + f"v1.1.0.{ext}", "finance")
                assert (status, body) == (403, VULN_LINE + "\n")
                status, body, _ = await _get(http, base + f"v1.2.0.{ext}", "finance")
                assert status == 403
                assert body.startswith(
                    "example.com/m@v1.2.0: refused by the policy of tenant finance: v1.2.0 is "
                )
                assert "versions younger than 7 days are refused" in body
                assert (await _get(http, base + f"v1.2.0.{ext}", "open"))[0] == 200
                assert (await _get(http, base + f"v1.0.0.{ext}", "finance"))[0] == 200

            async with http.get(gw.url + "/metrics") as resp:
                text = await resp.text()
            assert 'goproxy_router_policy_refusals_total{rule="age",tenant="finance"}' in text
            assert (
                'goproxy_router_policy_refusals_total{rule="vulnerability",tenant="finance"}'
                in text
            )


async def test_nothing_allowed_latest_answers_the_first_refusal(tmp_path: Path) -> None:
    async with (
        FixtureProxy(ModuleSet([V120])) as up,
        gateway_in_process(_rules(tmp_path, up.url)) as gw,
        aiohttp.ClientSession() as http,
    ):
        status, body, _ = await _get(http, f"{gw.url}/{M}/@latest", "finance")
        assert status == 403 and body.startswith(
            "example.com/m@v1.2.0: refused by the policy of tenant"
        )
        status, body, _ = await _get(http, f"{gw.url}/{M}/@v/list", "finance")
        assert (status, body) == (200, "")


async def test_warn_mode_serves_with_the_warning_header(tmp_path: Path) -> None:
    async with FixtureProxy(ModuleSet([V100, V110, V120])) as up:
        rules = _rules(tmp_path, up.url, mode="warn")
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            for ext in ("mod", "zip"):
                status, _, resp = await _get(http, f"{gw.url}/{M}/@v/v1.1.0.{ext}", "finance")
                assert status == 200
                assert resp.headers[HEADER] == (
                    "example.com/m@v1.1.0: would be refused by the policy of tenant finance "
                    "(warn): GO-2024-1234 affects v1.1.0, fixed in v1.2.0"
                )
            status, body, resp = await _get(http, f"{gw.url}/{M}/@v/list", "finance")
            assert sorted(body.split()) == ["v1.0.0", "v1.1.0", "v1.2.0"]
            assert HEADER in resp.headers
            status, _, resp = await _get(http, f"{gw.url}/{M}/@v/v1.0.0.mod", "finance")
            assert status == 200 and HEADER not in resp.headers
            async with http.get(gw.url + "/metrics") as m:
                text = await m.text()
            assert (
                'goproxy_router_policy_warnings_total{rule="vulnerability",tenant="finance"}'
                in (text)
            )


async def test_a_reload_adds_and_removes_a_policy(tmp_path: Path) -> None:
    async with FixtureProxy(ModuleSet([V100, V110, V120])) as up:
        rules = _rules(tmp_path, up.url, policy=False)
        async with gateway_in_process(rules, watch=True) as gw, aiohttp.ClientSession() as http:
            assert gw.app is not None
            reloader = gw.app[STATE].reloader
            assert reloader is not None
            mod = f"{gw.url}/{M}/@v/v1.1.0.mod"
            assert (await _get(http, mod, "finance"))[0] == 200  # now cached
            _rules(tmp_path, up.url, policy=True)
            assert await reloader.reload("test")
            assert (await _get(http, mod, "finance"))[:2] == (403, VULN_LINE + "\n")
            _rules(tmp_path, up.url, policy=False)
            assert await reloader.reload("test")
            assert (await _get(http, mod, "finance"))[0] == 200
