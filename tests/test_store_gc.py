"""`store gc` of the bucket tier against a real S3-compatible server (rclone serve s3), with
last access in a real Redis; and of the local store through the command line and the
gateway's /debug/store/gc."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.gateway import gateway_in_process, one_pool_rules, wait_for
from support.gomod import ModuleSet, simple_module
from support.goproxy_server import FixtureProxy
from support.s3_server import S3Server

from router.appkeys import ANSWERS
from router.cache.bucket import Bucket
from router.cli import main
from router.core.bucketing import BucketConfig
from router.fleet.client import connect
from router.retention import BucketAccess, gc_bucket

HOUR = 3600.0


async def _publish(bucket: Bucket, tmp: Path, key: str, data: bytes) -> str:
    path = tmp / hashlib.sha256(key.encode()).hexdigest()
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    await bucket.put_file(key, path, size=len(data), sha256=digest)
    return digest


def _config(server: S3Server) -> BucketConfig:
    return BucketConfig(url=server.url, endpoint=server.endpoint, timeout=3.0)


async def test_bucket_gc_evicts_by_last_access_and_cleans_dangling_and_orphans(
    s3_server: S3Server, tmp_path: Path
) -> None:
    async with Bucket(_config(s3_server)) as bucket:
        old = await _publish(bucket, tmp_path, "p|old.zip", b"o" * 1000)
        await _publish(bucket, tmp_path, "p|hot.zip", b"h" * 1000)
        shared = await _publish(bucket, tmp_path, "p|a.mod", b"same")
        await _publish(bucket, tmp_path, "p|b.mod", b"same")
        gone = await _publish(bucket, tmp_path, "p|dangling.info", b"{}")
        await bucket.delete_data(gone)  # its index entry now names nothing
        lost = await _publish(bucket, tmp_path, "p|lost.zip", b"l" * 500)
        await bucket.delete("p|lost.zip")  # its data now has no index entry
        now = time.time() + 10 * HOUR
        access = {"p|hot.zip": now - 60.0, "p|old.zip": now - 9 * HOUR}
        access |= {"p|a.mod": now - 8 * HOUR, "p|b.mod": now - 8 * HOUR}
        before = s3_server.listed()

        dry = await gc_bucket(bucket, 1100, now=now, access=access)
        assert dry.retention.evict == ("p|old.zip",)
        assert dry.dangling == ["p|dangling.info"] and dry.orphans == [lost]
        assert s3_server.listed() == before  # a dry run removes nothing

        done = await gc_bucket(bucket, 1100, now=now, access=access, apply=True)
        assert done.as_json()["removed"] == {
            "keys": 1,
            "bytes": 1500,
            "dangling_entries": 1,
            "orphan_objects": 1,
        }
        for key in ("p|old.zip", "p|dangling.info"):
            assert await bucket.head(key) is None
        for key in ("p|hot.zip", "p|a.mod", "p|b.mod"):
            assert await bucket.head(key) is not None
        left = s3_server.listed()
        assert not any(old in k or lost in k for k in left)
        assert sum(shared in k for k in left) == 1
        # the two .mod keys share one data object: its bytes go only with both keys
        both = await gc_bucket(bucket, 1000, now=now, access=access)
        assert both.retention.evict == ("p|a.mod", "p|b.mod") and both.retention.freed_bytes == 4


async def test_bucket_access_in_redis_is_written_once_per_interval(redis_server: Any) -> None:
    client = connect(redis_server.url)
    try:
        access = BucketAccess(client, interval=600.0, remembered=2)
        await access.touch("p|a", 1000.0)
        await access.touch("p|a", 1300.0)  # within the interval: not written
        await access.touch("p|b", 1400.0)
        await access.touch("p|c", 1500.0)  # past `remembered`: forgets, never grows
        assert await access.all() == {"p|a": 1000.0, "p|b": 1400.0, "p|c": 1500.0}
        await access.forget(["p|a", "p|b"])
        assert await access.all() == {"p|c": 1500.0}
    finally:
        await client.aclose()


def test_store_gc_command_on_a_bucket_with_redis(
    s3_server: S3Server, redis_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def setup() -> None:
        async with Bucket(_config(s3_server)) as bucket:
            for i in range(3):
                await _publish(bucket, tmp_path, f"p|{i}.zip", bytes([i]) * 1000)
        client = connect(redis_server.url)
        try:  # 0 was used long ago, 2 is the most recent
            for i in range(3):
                await client.zadd("goproxy-router:bucket-access", {f"p|{i}.zip": 1000.0 + i})
        finally:
            await client.aclose()

    asyncio.run(setup())
    common = ["store", "gc", "--bucket", s3_server.url, "--endpoint", s3_server.endpoint]
    common += ["--redis", redis_server.url, "--budget", "2000", "--min-idle", "0s", "--json"]
    assert main(common) == 0
    dry = json.loads(capsys.readouterr().out)
    assert dry["would_remove"]["keys"] == 1 and dry["keys"] == ["p|0.zip"]
    assert main([*common, "--apply"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert done["removed"] == {
        "keys": 1,
        "bytes": 1000,
        "dangling_entries": 0,
        "orphan_objects": 0,
    }
    assert len(s3_server.listed(prefix="prod/data/")) == 2
    assert main(common[:-1]) == 0  # the text form
    assert "would remove 0 key(s)" in capsys.readouterr().out


def test_store_gc_needs_a_budget_for_a_bucket(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "gc", "--bucket", "s3://goproxy-artifacts/p/"]) == 2
    assert "--bucket needs --budget" in capsys.readouterr().err


def _serve_rules(tmp_path: Path, url: str, **cache: Any) -> Path:
    admin = {"networks": ["127.0.0.0/8"]}
    return one_pool_rules(
        tmp_path / "rules.yaml",
        {"a": url},
        cache={"memory": 0, "dir": str(tmp_path / "store"), **cache},
        admin=admin,
    )


async def test_gateway_gc_over_debug_spares_nothing_idle_and_reports(tmp_path: Path) -> None:
    mods = [simple_module("example.com/lib", f"v0.{i}.0") for i in range(1, 4)]
    async with FixtureProxy(ModuleSet(mods), name="a") as up:
        rules = _serve_rules(tmp_path, up.url)
        async with gateway_in_process(rules) as gw, aiohttp.ClientSession() as http:
            for m in mods:
                async with http.get(f"{gw.url}/example.com/lib/@v/{m.version}.zip") as resp:
                    assert resp.status == 200
                    await resp.read()
            assert gw.app is not None
            answers = gw.app[ANSWERS]
            assert answers is not None and answers.tiers.store is not None
            store = answers.tiers.store
            await wait_for(lambda: len(store) == 3)
            base = f"{gw.url}/debug/store/gc"
            async with http.post(base, params={"budget": "0", "min_idle": "1h"}) as resp:
                recent = await resp.json()
            assert recent["would_remove"]["keys"] == 0 and recent["protected"] == 3
            async with http.post(base, params={"budget": "0", "min_idle": "0s"}) as resp:
                dry = await resp.json()
            assert dry["would_remove"]["keys"] == 3 and not dry["applied"]
            params = {"budget": "0", "min_idle": "0s", "apply": "1"}
            async with http.post(base, params=params) as resp:
                done = await resp.json()
            assert done["removed"]["keys"] == 3 and done["kept"]["bytes"] == 0
            async with http.post(base, params={"budget": "lots"}) as resp:
                assert resp.status == 400 and "not a size" in await resp.text()
            async with http.get(f"{gw.url}/example.com/lib/@v/v0.1.0.zip") as resp:
                assert resp.status == 200  # fetched again
