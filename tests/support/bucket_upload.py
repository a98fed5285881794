"""Publish one file to a bucket with router.cache.bucket, in a process of its own: a test kills
it (-9) mid-upload. Usage: bucket_upload.py ENDPOINT URL PART_SIZE KEY FILE SHA256.
Prints "published" on success; credentials come from the AWS environment."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from router.cache.bucket import Bucket
from router.core.bucketing import BucketConfig


async def main(endpoint: str, url: str, part_size: int, key: str, path: Path, digest: str) -> None:
    config = BucketConfig(url=url, endpoint=endpoint, part_size=part_size, timeout=30)
    async with Bucket(config) as bucket:
        await bucket.put_file(key, path, size=path.stat().st_size, sha256=digest)
    print("published", flush=True)


if __name__ == "__main__":
    ep, url, part, key, file, digest = sys.argv[1:]
    asyncio.run(main(ep, url, int(part), key, Path(file), digest))
