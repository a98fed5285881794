"""The bucket as a tier of the gateway, against a real S3 server (rclone serve s3), a real
redis-server, loopback upstreams and the real go command: once per fleet, read-through with
backfill, the bucket dying mid-run, stream and redirect, and the rules that configure it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.gateway import gateway_in_process, wait_for, write_rules
from support.gocmd import go_env, run_go
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import FixtureProxy
from support.s3_server import S3Server

from router.appkeys import ANSWERS
from router.cache.bucket_tier import BucketTier
from router.config import load_rules
from router.core.bucketing import redirect_allowed

MODS = [simple_module("example.com/fleet", f"v1.{i}.0") for i in range(6)]
ZIPS = [f"/example.com/fleet/@v/{m.version}.zip" for m in MODS]


@pytest.fixture
async def up() -> AsyncIterator[FixtureProxy]:
    async with FixtureProxy(ModuleSet(MODS), name="up") as proxy:
        yield proxy


def _rules(path: Path, up_url: str, store: Path, s3: S3Server, **bucket: Any) -> Path:
    spec = {"url": s3.url, "endpoint": s3.endpoint, "timeout": "2s", **bucket}
    spec.setdefault("probe_interval", "100ms")
    return write_rules(
        path,
        [{"name": "up", "url": up_url, "timeouts": {"first_byte": "2s", "idle": "2s"}}],
        {"main": {"upstreams": ["up"]}},
        default={"pool": "main"},
        cache={"dir": str(store), "bucket": spec},
    )


def _tier(gw: Any) -> BucketTier:
    tier = gw.app[ANSWERS].tiers.bucket
    assert isinstance(tier, BucketTier)
    return tier


async def _settled(*gateways: Any) -> None:
    """Every upload under way has finished (publishing runs behind the answer)."""
    await wait_for(lambda: all(not _tier(g)._uploading for g in gateways), timeout=20)


async def _published(gw: Any, count: int) -> None:
    """`count` zips are in the bucket by way of this replica (it published, or found them)."""
    stats = _tier(gw).bucket.stats
    await wait_for(lambda: stats.published + stats.already_there >= count, timeout=20)


async def _metric(url: str, name: str, **labels: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as resp:
        text = await resp.text()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def _get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as resp:
        return resp.status, await resp.read()


# ------------------------------------------------------------------------------- the rules


def _doc(tmp_path: Path, cache: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "version: 1\nupstreams:\n  - name: a\n    url: https://proxy.golang.org\n"
        "pools:\n  main: {upstreams: [a]}\ndefault: {pool: main}\n" + cache
    )
    return path


def _problems(path: Path) -> list[str]:
    problems = load_rules([path]).problems
    return [f"{Path(p.file).name}:{p.line}: {p.message}" for p in problems if not p.warning]


def test_the_documented_bucket_config_loads(tmp_path: Path) -> None:
    path = _doc(
        tmp_path,
        "cache:\n  dir: /var/cache/goproxy-router\n  bucket:\n"
        "    url: s3://goproxy-artifacts/prod/\n    endpoint: https://s3.internal:9000\n"
        "    region: us-east-1\n    serve: redirect\n    presign_expires: 2m\n",
    )
    result = load_rules([path])
    rules = result.rules
    assert [p for p in result.problems if not p.warning] == []
    assert rules is not None and rules.cache.bucket is not None
    b = rules.cache.bucket
    assert (b.bucket, b.prefix, b.serve, b.presign_expires) == (
        "goproxy-artifacts",
        "prod/",
        "redirect",
        120.0,
    )


def test_bad_bucket_settings_are_told_at_their_line(tmp_path: Path) -> None:
    path = _doc(
        tmp_path,
        "cache:\n  dir: /tmp/x\n  bucket:\n    url: s3://Bad_Name/p/\n    serve: sideways\n"
        "    endpoint: s3.internal:9000\n",
    )
    assert _problems(path) == [
        "rules.yaml:11: not a valid bucket name: 'Bad_Name'",
        "rules.yaml:12: 'sideways' is not one of stream, redirect",
        "rules.yaml:13: not an http(s) URL: 's3.internal:9000'",
    ]
    path = _doc(tmp_path, "cache:\n  bucket:\n    url: s3://goproxy-artifacts/p/\n")
    assert _problems(path) == [
        "rules.yaml:9: cache.bucket needs cache.dir: the local disk is the read-through layer "
        "in front of the bucket (and where an artifact is checked before it is published)"
    ]


def test_a_bucket_without_the_s3_extra_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "aiobotocore", None)  # as in the default install
    path = _doc(tmp_path, "cache:\n  dir: /tmp/x\n  bucket:\n    url: s3://goproxy-artifacts/\n")
    assert _problems(path) == [
        "rules.yaml:10: cache.bucket needs the s3 extra (aiobotocore), which is not installed: "
        "pip install 'goproxy-router[s3]'"
    ]


def test_presigned_redirects_only_for_public_zips() -> None:
    assert redirect_allowed("redirect", zip_request=True, private=False)
    assert not redirect_allowed("redirect", zip_request=True, private=True)
    assert not redirect_allowed("redirect", zip_request=False, private=False)
    assert not redirect_allowed("stream", zip_request=True, private=False)


# ------------------------------------------------------------------------------- the fleet


async def test_a_fleet_fetches_each_zip_once_and_a_late_replica_needs_no_upstream(
    tmp_path: Path, up: FixtureProxy, redis_server: Any, s3_server: S3Server
) -> None:
    rules = [
        _rules(tmp_path / f"r{i}.yaml", up.url, tmp_path / f"store{i}", s3_server) for i in range(3)
    ]
    async with (  # both share this test's event loop: its lag is not Redis's (a lock call
        # timing out is taken as "fetch it yourself")
        gateway_in_process(rules[0], redis_url=redis_server.url, redis_timeout=5.0) as g1,
        gateway_in_process(rules[1], redis_url=redis_server.url, redis_timeout=5.0) as g2,
        aiohttp.ClientSession() as h,
    ):
        got = await asyncio.gather(*(_get(h, g.url + z) for z in ZIPS for g in (g1, g2, g1, g2)))
        assert {status for status, _ in got} == {200}
        for i, zip_path in enumerate(ZIPS):
            assert len({body for _, body in got[i * 4 : i * 4 + 4]}) == 1
            assert up.count(zip_path) == 1, zip_path
        await wait_for(
            lambda: sum(_tier(g).bucket.stats.published for g in (g1, g2)) >= len(ZIPS), 20
        )
        await _settled(g1, g2)
        published = await _metric(g1.url, "goproxy_router_bucket_published_total")
        published += await _metric(g2.url, "goproxy_router_bucket_published_total")
        assert published == len(ZIPS)
    listed = s3_server.listed("prod/")
    assert sum(k.startswith("prod/index/") for k in listed) == len(ZIPS)
    assert not [f for f in s3_server.files() if "rclone_temp" in f]
    up.clear_requests()
    async with (
        gateway_in_process(rules[2], redis_url=redis_server.url) as g3,
        aiohttp.ClientSession() as h,
    ):
        for zip_path, (_, body) in zip(ZIPS, got[::4], strict=True):
            assert await _get(h, g3.url + zip_path) == (200, body)
        assert up.count(".zip") == 0
        assert await _metric(g3.url, "goproxy_router_bucket_lookups_total", result="hit") == 6
        # backfilled: the disk answers now, not the bucket
        s3_server.kill()
        assert await _get(h, g3.url + ZIPS[0]) == (200, got[0][1])
        assert up.count(".zip") == 0


async def test_the_bucket_killed_mid_run_fails_no_request(
    tmp_path: Path, up: FixtureProxy, redis_server: Any, s3_server: S3Server
) -> None:
    r1 = _rules(tmp_path / "r1.yaml", up.url, tmp_path / "s1", s3_server)
    r2 = _rules(tmp_path / "r2.yaml", up.url, tmp_path / "s2", s3_server)
    async with (
        gateway_in_process(r1, redis_url=redis_server.url) as g1,
        gateway_in_process(r2, redis_url=redis_server.url) as g2,
        aiohttp.ClientSession() as h,
    ):
        assert (await _get(h, g1.url + ZIPS[0]))[0] == 200
        await _published(g1, 1)
        s3_server.kill()
        # g2 (empty disk) finds no bucket: it serves from the upstream, every request 200
        got = await asyncio.gather(*(_get(h, g.url + z) for z in ZIPS for g in (g1, g2)))
        assert {status for status, _ in got} == {200}
        await _settled(g1, g2)
        assert await _metric(g2.url, "goproxy_router_bucket_down") == 1
        errors = await _metric(g1.url, "goproxy_router_bucket_errors_total")
        errors += await _metric(g2.url, "goproxy_router_bucket_errors_total")
        assert errors >= 1
        # while down, the breaker answers at once: no request waits for the dead endpoint
        assert await _metric(g2.url, "goproxy_router_bucket_errors_total", cause="down") >= 1
        s3_server.start()
        await wait_for(lambda: _tier(g2).bucket.up, timeout=10)
        assert (await _get(h, g2.url + ZIPS[0]))[0] == 200


# ------------------------------------------------------------------------------- the go command


@pytest.mark.e2e
@pytest.mark.parametrize("serve", ["stream", "redirect"])
async def test_the_go_command_downloads_through_the_bucket(
    serve: str,
    tmp_path: Path,
    up: FixtureProxy,
    s3_server: S3Server,
    gocache: Path,
) -> None:
    mod = MODS[0]
    first = _rules(tmp_path / "a.yaml", up.url, tmp_path / "sa", s3_server)
    async with gateway_in_process(first) as g1, aiohttp.ClientSession() as h:
        assert (await _get(h, g1.url + ZIPS[0]))[0] == 200
        await _published(g1, 1)
    up.clear_requests()
    second = _rules(tmp_path / "b.yaml", up.url, tmp_path / "sb", s3_server, serve=serve)
    async with gateway_in_process(second) as g2:
        env = go_env(tmp_path / "go", g2.url, gocache=gocache)
        done = await run_go(
            ["mod", "download", "-json", f"{mod.path}@{mod.version}"], tmp_path, env
        )
        done.check()
        assert done.json_objects()[0]["Sum"].startswith("h1:")
        result = "redirect" if serve == "redirect" else "hit"
        assert await _metric(g2.url, "goproxy_router_bucket_lookups_total", result=result) == 1
    assert up.count(".zip") == 0
