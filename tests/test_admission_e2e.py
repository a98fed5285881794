"""L2 admission on a real gateway: a pseudo-version or a prerelease is served and kept in
memory, never in the artifact store or the shared Redis tier; a release is kept in both.
With the real go command, and with rules that admit more."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.gateway import gateway_in_process, wait_for, write_rules
from support.gocmd import go_env, run_go
from support.gomod import ModuleSet, hash_module, simple_module
from support.goproxy_server import Fault, FixtureProxy

from router.appkeys import ANSWERS
from router.core.lifetimes import cache_key
from router.core.protocol import parse_module_path
from router.serving.cache import AnswerCache

RELEASE = simple_module("example.com/lib", "v1.0.0")
PRE = simple_module("example.com/lib", "v1.1.0-rc.1")
PSEUDO = simple_module("example.com/dev", "v0.0.0-20240102030405-abcdef123456")
KINDS = ("info", "mod", "zip")


def _rules(path: Path, url: str, store: Path, **extra: Any) -> Path:
    return write_rules(
        path,
        [{"name": "up", "url": url}],
        {"main": {"upstreams": ["up"]}},
        default={"pool": "main"},
        cache={"dir": str(store)},
        **extra,
    )


def _key(module: str, version: str, kind: str) -> str:
    return cache_key(parse_module_path(f"{module}/@v/{version}.{kind}"), "main", private=False)


def _answers(gw: Any) -> AnswerCache:
    answers: AnswerCache | None = gw.app[ANSWERS]
    assert answers is not None and answers.tiers.store is not None
    return answers


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes, str]:
    async with http.get(url) as resp:
        return resp.status, await resp.read(), resp.headers["X-Router-Upstream"]


async def _until_shared(shared: Any, key: str, timeout: float = 5.0) -> None:
    """Poll Redis until `key` is there (the shared write happens behind the answer). The
    gateways here give Redis seconds per call (`redis_timeout`): with the 0.1 s default, a
    call slowed by this test's own event loop is a miss, opens the breaker, and the write
    is never made."""
    for _ in range(int(timeout / 0.02)):
        if await shared.get(key) is not None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{key} never reached the shared tier")


async def _metrics(http: aiohttp.ClientSession, url: str) -> str:
    async with http.get(url + "/metrics") as resp:
        return await resp.text()


async def test_only_releases_reach_the_store_and_redis_by_default(
    tmp_path: Path, redis_server: Any
) -> None:
    async with FixtureProxy(ModuleSet([RELEASE, PRE, PSEUDO]), name="up") as up:
        rules = _rules(tmp_path / "r.yaml", up.url, tmp_path / "store")
        async with (
            gateway_in_process(rules, redis_url=redis_server.url, redis_timeout=5.0) as gw,
            aiohttp.ClientSession() as http,
        ):
            answers = _answers(gw)
            store, shared = answers.tiers.store, answers.tiers.shared
            assert store is not None and shared is not None
            for m in (PSEUDO, PRE, RELEASE):
                for kind in KINDS:
                    status, _, source = await _get(http, f"{gw.url}/{m.path}/@v/{m.version}.{kind}")
                    assert (status, source) == (200, "up")
            released = [_key(RELEASE.path, RELEASE.version, k) for k in KINDS]
            await wait_for(lambda: all(store.get(k) is not None for k in released))
            for kind in ("info", "mod"):
                await _until_shared(shared, _key(RELEASE.path, RELEASE.version, kind))
            for m in (PSEUDO, PRE):
                for kind in KINDS:
                    assert store.get(_key(m.path, m.version, kind)) is None, (m.version, kind)
                for kind in ("info", "mod"):
                    assert await shared.get(_key(m.path, m.version, kind)) is None
            assert len(store) == 3
            # not kept in L2, yet the memory tier answers again (the small zip too)
            for kind in KINDS:
                path = f"/{PSEUDO.path}/@v/{PSEUDO.version}.{kind}"
                status, _, source = await _get(http, gw.url + path)
                assert (status, source) == (200, "cache")
                assert up.count(path) == 1
            text = await _metrics(http, gw.url)
    for line in (
        'goproxy_router_cache_admission_total{reason="release",result="admitted",tier="disk"} 3.0',
        'goproxy_router_cache_admission_total{reason="release",result="admitted",tier="redis"} 2.0',
        'goproxy_router_cache_admission_total{reason="pseudo",result="not_admitted",tier="disk"} '
        "3.0",
        'goproxy_router_cache_admission_total{reason="prerelease",result="not_admitted",tier="redis"}'
        " 2.0",
    ):
        assert line in text, line


async def test_version_lists_are_shared_whatever_the_rule(
    tmp_path: Path, redis_server: Any
) -> None:
    async with FixtureProxy(ModuleSet([RELEASE, PRE]), name="up") as up:
        rules = _rules(tmp_path / "r.yaml", up.url, tmp_path / "store")
        async with (
            gateway_in_process(rules, redis_url=redis_server.url, redis_timeout=5.0) as gw,
            aiohttp.ClientSession() as http,
        ):
            shared = _answers(gw).tiers.shared
            assert shared is not None
            for tail in ("@v/list", "@latest"):
                assert (await _get(http, f"{gw.url}/{RELEASE.path}/{tail}"))[0] == 200
                key = cache_key(parse_module_path(f"{RELEASE.path}/{tail}"), "main", private=False)
                await _until_shared(shared, key)
            assert "cache_admission_total{" not in await _metrics(http, gw.url)


async def test_a_tenant_that_admits_pseudo_versions_keeps_them(tmp_path: Path) -> None:
    async with FixtureProxy(ModuleSet([PSEUDO]), name="up") as up:
        rules = _rules(
            tmp_path / "r.yaml",
            up.url,
            tmp_path / "store",
            tenants=[{"id": "dev", "admit": ["release", "pseudo"]}],
            trusted_proxies=["127.0.0.0/8"],
        )
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            store = _answers(gw).tiers.store
            assert store is not None
            path = f"/{PSEUDO.path}/@v/{PSEUDO.version}.zip"
            async with http.get(gw.url + path, headers={"X-Tenant-ID": "dev"}) as resp:
                assert resp.status == 200
                await resp.read()
            await wait_for(lambda: store.get(_key(PSEUDO.path, PSEUDO.version, "zip")) is not None)
        up.add_fault(Fault(status=500))  # from here the upstream is down: the store answers
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            status, body, source = await _get(http, gw.url + path)
            assert (status, source) == (200, "cache")
            assert len(body) > 0


@pytest.mark.e2e
async def test_go_gets_a_pseudo_version_served_but_only_the_release_is_stored(
    tmp_path: Path, gocache: Path
) -> None:
    async with FixtureProxy(ModuleSet([RELEASE, PSEUDO]), name="up") as up:
        rules = _rules(tmp_path / "r.yaml", up.url, tmp_path / "store")
        async with gateway_in_process(rules) as gw:
            env = go_env(tmp_path, gw.url, gocache=gocache)
            done = await run_go(
                ["mod", "download", "-json", *(f"{m.path}@{m.version}" for m in (PSEUDO, RELEASE))],
                tmp_path,
                env,
            )
            reports = {r["Path"]: r for r in done.check().json_objects()}
            assert reports[PSEUDO.path]["Sum"] == hash_module(PSEUDO)
            assert reports[RELEASE.path]["Sum"] == hash_module(RELEASE)
            store = _answers(gw).tiers.store
            assert store is not None
            kept = [_key(RELEASE.path, RELEASE.version, k) for k in KINDS]
            await wait_for(lambda: all(store.get(k) is not None for k in kept))
            assert all(store.get(_key(PSEUDO.path, PSEUDO.version, k)) is None for k in KINDS)
    assert up.count(f"{PSEUDO.version}.zip") == 1
