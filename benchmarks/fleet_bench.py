"""Fleet benchmark: 3 gateway replicas pulling the same zips, with and without a shared bucket.

Each replica has its own empty disk store; all share one redis-server. With the bucket (a real
`rclone serve s3` on loopback) the replicas coalesce through Redis and the bucket, so each zip
should leave the upstream once for the fleet; without it, once per replica. Prints upstream
zip requests and bytes and the wall time of the pull, as JSON.

    PATH=.venv/bin:$PATH python benchmarks/fleet_bench.py --zips 200 --size 20000

Standalone (it uses the test fixtures in tests/support, not benchmarks/harness/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
from support.gateway import gateway_in_process, write_rules  # noqa: E402
from support.gomod import ModuleSet, simple_module  # noqa: E402
from support.goproxy_server import FixtureProxy  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402
from support.s3_server import AWS_VARS_TO_CLEAR, S3Server  # noqa: E402

from router.appkeys import ANSWERS  # noqa: E402

REPLICAS = 3


async def pull(url: str, paths: list[str], concurrency: int) -> int:
    """GET every path (at most `concurrency` at once); the number of non-200 answers."""
    gate = asyncio.Semaphore(concurrency)
    failed = 0
    async with aiohttp.ClientSession() as http:

        async def one(path: str) -> None:
            nonlocal failed
            async with gate, http.get(url + path) as resp:
                await resp.read()
                failed += resp.status != 200

        await asyncio.gather(*(one(p) for p in paths))
    return failed


async def run(
    work: Path, up: FixtureProxy, redis: RedisServer, s3: S3Server | None, paths: list[str]
) -> dict[str, Any]:
    rules = []
    for i in range(REPLICAS):
        cache: dict[str, Any] = {"dir": str(work / f"store{i}")}
        if s3 is not None:
            cache["bucket"] = {"url": s3.url, "endpoint": s3.endpoint}
        rules.append(
            write_rules(
                work / f"r{i}.yaml",
                [{"name": "up", "url": up.url}],
                {"main": {"upstreams": ["up"]}},
                default={"pool": "main"},
                cache=cache,
            )
        )
    up.clear_requests()
    bytes_before = up.bytes_served
    async with (
        gateway_in_process(rules[0], redis_url=redis.url) as g1,
        gateway_in_process(rules[1], redis_url=redis.url) as g2,
        gateway_in_process(rules[2], redis_url=redis.url) as g3,
    ):
        began = time.perf_counter()
        failed = await asyncio.gather(*(pull(g.url, paths, 16) for g in (g1, g2, g3)))
        wall = time.perf_counter() - began
        published = 0
        for g in (g1, g2, g3):
            assert g.app is not None
            answers = g.app[ANSWERS]
            tier = answers.tiers.bucket if answers is not None else None
            if tier is not None:
                while tier._uploading:  # let the uploads finish before the gateways stop
                    await asyncio.sleep(0.05)
                published += tier.bucket.stats.published
    return {
        "bucket": s3 is not None,
        "replicas": REPLICAS,
        "zips": len(paths),
        "failed": sum(failed),
        "upstream_zip_requests": up.count(".zip"),
        "upstream_bytes": up.bytes_served - bytes_before,
        "published": published,
        "wall_seconds": round(wall, 2),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zips", type=int, default=200)
    parser.add_argument("--size", type=int, default=20_000, help="bytes of each module's file")
    args = parser.parse_args()
    mods = [
        simple_module(
            f"example.com/fleet{i}", "v1.0.0", extra_files={"data.txt": os.urandom(args.size)}
        )
        for i in range(args.zips)
    ]
    paths = [f"/{m.path}/@v/{m.version}.zip" for m in mods]
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        work = Path(tmp)
        (work / "redis").mkdir()
        redis = RedisServer(work / "redis").start()
        s3 = S3Server(work / "s3").start()
        for name in AWS_VARS_TO_CLEAR:
            os.environ.pop(name, None)
        os.environ.update(s3.aws_env())
        try:
            async with FixtureProxy(ModuleSet(mods), name="up") as up:
                results = []
                for use_bucket in (False, True):
                    redis.stop()
                    (work / f"redis-{use_bucket}").mkdir()
                    redis = RedisServer(work / f"redis-{use_bucket}").start()  # a clean Redis
                    run_dir = work / ("bucket" if use_bucket else "disk")
                    run_dir.mkdir()
                    results.append(await run(run_dir, up, redis, s3 if use_bucket else None, paths))
        finally:
            s3.stop()
            redis.stop()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
