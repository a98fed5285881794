"""Policy gates on the live request path: real fixture upstreams on loopback, a generated
vulnerability database, the gateway in process; the cooldown, the vulnerability gate,
`@v/list` and `@latest` filtering per tenant after the caches, warn mode, reloads."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.gateway import gateway_in_process, one_pool_rules
from support.gocmd import go_env, run_go
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import FixtureProxy
from support.licensed import licensed_module
from support.vulndb import Vuln, write_vulndb

from router.appkeys import RELOADER

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

            for version, expected in (("v1.2.0", 403), ("v1.1.0", 403), ("v1.0.0", 200)):
                for ext in ("info", "mod"):
                    url = base + f"{version}.{ext}"
                    async with http.head(url, headers={"X-Tenant-ID": "finance"}) as resp:
                        assert resp.status == expected, url

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


async def test_warn_mode_serves_with_the_warning_header(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="goproxy_router.access")
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
            warned = 'goproxy_router_policy_warnings_total{rule="vulnerability",tenant="finance"}'
            assert warned in text
            gw.flush_access_log()
            logged = [getattr(r, "fields", {}) for r in caplog.records]
            policies = {(f.get("version"), f.get("kind")): f.get("policy") for f in logged}
            assert policies[("v1.1.0", "mod")] == "vulnerability"
            assert policies[("v1.0.0", "mod")] is None


async def test_a_reload_adds_and_removes_a_policy(tmp_path: Path) -> None:
    async with FixtureProxy(ModuleSet([V100, V110, V120])) as up:
        rules = _rules(tmp_path, up.url, policy=False)
        async with gateway_in_process(rules, watch=True) as gw, aiohttp.ClientSession() as http:
            assert gw.app is not None
            reloader = gw.app[RELOADER]
            assert reloader is not None
            mod = f"{gw.url}/{M}/@v/v1.1.0.mod"
            assert (await _get(http, mod, "finance"))[0] == 200  # now cached
            _rules(tmp_path, up.url, policy=True)
            assert await reloader.reload("test")
            assert (await _get(http, mod, "finance"))[:2] == (403, VULN_LINE + "\n")
            _rules(tmp_path, up.url, policy=False)
            assert await reloader.reload("test")
            assert (await _get(http, mod, "finance"))[0] == 200


@pytest.mark.e2e
async def test_go_get_picks_the_newest_allowed_version_and_download_shows_the_403(
    tmp_path: Path, gocache: Path
) -> None:
    """Anonymous requests under a route's policy: `go get` of a module whose newest
    versions are refused (one vulnerable, one too young) gets the newest allowed one;
    `go mod download` of a refused version fails with the gateway's line."""
    write_vulndb(tmp_path / "vulndb", [Vuln("GO-2024-1234", M, (("1.1.0", "1.2.0"),))])
    policy = {"min_age": "7d", "vulnerabilities": {"db": str(tmp_path / "vulndb")}}
    route = {"name": "gated", "match": {"module": [M]}, "pool": "main", "policy": policy}
    licences = {"licenses": {"allow": ["MIT"]}}
    mit_only = {"name": "mit-only", "match": {"module": [GPL.path]}, "pool": "main"}
    routes = [route, {**mit_only, "policy": licences}]
    async with FixtureProxy(ModuleSet([V100, V110, V120, GPL])) as up:
        rules = one_pool_rules(tmp_path / "rules.yaml", {"fixtures": up.url}, routes=routes)
        async with gateway_in_process(rules) as gw:
            env = go_env(tmp_path, gw.url, gocache=gocache)
            app = tmp_path / "app"
            app.mkdir()
            (app / "go.mod").write_text("module example.com/app\n\ngo 1.21\n")
            got = await run_go(["get", M], app, env)
            assert got.ok, got.stderr
            assert f"require {M} v1.0.0" in (app / "go.mod").read_text()
            refused = await run_go(["mod", "download", f"{M}@v1.1.0"], app, env)
            assert not refused.ok
            assert (
                "example.com/m@v1.1.0: refused by the policy of route gated: "
                "GO-2024-1234 affects v1.1.0, fixed in v1.2.0" in refused.stderr
            )
            young = await run_go(["mod", "download", f"{M}@v1.2.0"], app, env)
            assert not young.ok and "versions younger than 7 days are refused" in young.stderr
            gpl = await run_go(["mod", "download", f"{GPL.path}@{GPL.version}"], app, env)
            assert not gpl.ok
            assert (
                "example.com/gpl@v1.4.0: refused by the policy of route mit-only: "
                "licence GPL-3.0-only is not allowed" in gpl.stderr
            )


GPL = licensed_module("example.com/gpl", "v1.4.0", {"COPYING": "GPL-3.0-only"}, time=OLD)
MIT = licensed_module("example.com/mit", "v1.0.0", {"LICENSE": "MIT"}, time=OLD)
GPL_LINE = (
    "example.com/gpl@v1.4.0: refused by the policy of tenant finance: "
    "licence GPL-3.0-only is not allowed"
)


@pytest.mark.parametrize("first", ["open", "finance"])
@pytest.mark.parametrize("tier", ["memory", "store"])
async def test_a_refused_licence_answers_403_on_the_zip_only(
    tmp_path: Path, tier: str, first: str
) -> None:
    cache: dict[str, Any] = {"memory": 1 << 20}
    if tier == "store":
        cache = {"memory": 0, "dir": str(tmp_path / "store")}
    policy = {"licenses": {"allow": ["MIT"]}}
    async with FixtureProxy(ModuleSet([GPL, MIT])) as up:
        rules = one_pool_rules(
            tmp_path / "rules.yaml",
            {"fixtures": up.url},
            tenants=[{"id": "finance", "policy": policy}, {"id": "open"}],
            cache=cache,
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            zip_url = f"{gw.url}/example.com/gpl/@v/v1.4.0.zip"
            # whoever fetches it first, later requests are cache hits (memory or store)
            order = [first, "finance", "finance", "open"]
            for tenant, expected in ((t, 403 if t == "finance" else 200) for t in order):
                status, body, _ = await _get(http, zip_url, tenant)
                assert status == expected, body
            assert (await _get(http, zip_url, "finance"))[1] == GPL_LINE + "\n"
            async with http.head(zip_url, headers={"X-Tenant-ID": "finance"}) as resp:
                assert resp.status == 403  # examined by now
            assert (await _get(http, f"{gw.url}/example.com/gpl/@v/v1.4.0.mod", "finance"))[
                0
            ] == 200
            mit = f"{gw.url}/example.com/mit/@v/v1.0.0.zip"
            assert (await _get(http, mit, "finance"))[0] == 200
            assert up.count("/example.com/gpl/@v/v1.4.0.zip") == 1
