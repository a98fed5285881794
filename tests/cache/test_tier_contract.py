"""One contract over every cache tier (`router.cache.tier.Tier`): memory, Redis (a real
redis-server), the disk store (a real folder) and the bucket (a real S3 server).

What a tier keeps comes back whole or not at all; a key never put, or forgotten, is a
miss; keys never collide; a failing backend is a miss or a refused put, never an error;
an artifact whose kept bytes changed is never handed over whole.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.gateway import write_rules

from router.cache.disk import ArtifactStore, SpoolBudget
from router.cache.health import StorageHealth
from router.cache.memory import Entry, MemoryCache
from router.cache.shared import SharedTier
from router.cache.tier import AnswerTier, ArtifactFile, ArtifactMeta, ArtifactTier, TierObject
from router.cache.tiers import DiskTier, MemoryTier, RedisTier
from router.cachesetup import make_policy
from router.config import load_or_raise
from router.fleet.client import connect

ANSWER_TIERS = ["memory", "redis"]
ARTIFACT_TIERS = ["disk", "bucket"]
KEYS = [
    "main|example.com/m/@v/v1.0.0.info",
    "main|example.com/!m/@v/v1.0.0.info",  # an escaped capital: another module
    "main|example.com/m/@v/v1.0.0.mod",
    "other|example.com/m/@v/v1.0.0.info",  # another pool
    "main|example.com/m/v2/@v/v2.0.0+incompatible.info",
    "main|example.com/ü/@v/list",
]


@dataclass
class Subject:
    """A tier under the contract, and how the suite makes, reads and breaks its values."""

    tier: AnswerTier | ArtifactTier
    make: Callable[[int, bytes], Any]  # a value holding these bytes
    read: Callable[[Any], Awaitable[tuple[Any, ...]]]  # what `get` found, comparable
    expect: Callable[[Any], tuple[Any, ...]]  # what `read` must give for a value put
    fail: Callable[[], None] | None  # makes the backend fail (None: it cannot)
    data_root: Path | None = None  # where an artifact tier's bytes are, by sha256


def _entry(i: int, body: bytes) -> Entry:
    now = time.time()
    return Entry(
        status=200,
        body=body,
        content_type="application/json",
        upstream=f"up{i}",
        stored=now,
        fresh_until=now + 60,
        stale_until=now + 3600,
        module="example.com/m",
        mutable=False,
    )


async def _read_entry(found: Entry) -> tuple[Any, ...]:
    return (found.status, found.body, found.content_type, found.upstream, found.module)


def _expect_entry(value: Entry) -> tuple[Any, ...]:
    return (value.status, value.body, value.content_type, value.upstream, value.module)


def _artifact_maker(folder: Path) -> Callable[[int, bytes], ArtifactFile]:
    def make(i: int, body: bytes) -> ArtifactFile:
        path = folder / f"source-{i}-{hashlib.sha256(body).hexdigest()[:12]}"
        path.write_bytes(body)
        meta = ArtifactMeta(
            size=len(body),
            sha256=hashlib.sha256(body).hexdigest(),
            content_type="application/zip",
            upstream=f"up{i}",
            module="example.com/m",
            stored=time.time(),
        )
        return ArtifactFile(path, meta)

    return make


async def _read_artifact(found: TierObject) -> tuple[Any, ...]:
    body = b"".join([chunk async for chunk in found.chunks()])
    meta = found.meta
    return (body, meta.size, meta.sha256, meta.content_type, meta.upstream, meta.module)


def _expect_artifact(value: ArtifactFile) -> tuple[Any, ...]:
    meta = value.meta
    body = value.path.read_bytes()
    return (body, meta.size, meta.sha256, meta.content_type, meta.upstream, meta.module)


@pytest.fixture(params=ANSWER_TIERS + ARTIFACT_TIERS)
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    kind: str = request.param
    if kind == "memory":
        rules_path = write_rules(
            tmp_path / "rules.yaml",
            [{"name": "up", "url": "http://127.0.0.1:9"}],
            {"main": {"upstreams": ["up"]}},
            default={"pool": "main"},
            cache={"memory": "16MiB"},
        )
        policy = make_policy(load_or_raise([rules_path]).cache)  # the gateway's LRU-K
        tier = MemoryTier(MemoryCache(policy), time.time)
        yield Subject(tier, _entry, _read_entry, _expect_entry, None)
    elif kind == "redis":
        server = request.getfixturevalue("redis_server")
        client = connect(server.url)
        shared = SharedTier(client, timeout=2.0, on_error=lambda op: None)
        try:
            yield Subject(
                RedisTier(shared, time.time), _entry, _read_entry, _expect_entry, server.kill
            )
        finally:
            await client.aclose()
    elif kind == "disk":
        store = ArtifactStore(tmp_path / "store", 64 << 20)
        store.open()
        (tmp_path / "src").mkdir()

        def break_disk() -> None:  # the folder is gone and a file stands in its place
            shutil.rmtree(store.root)
            store.root.write_bytes(b"not a folder")

        yield Subject(
            DiskTier(store),
            _artifact_maker(tmp_path / "src"),
            _read_artifact,
            _expect_artifact,
            break_disk,
            data_root=store.root / "data",
        )
    else:
        async for bucket in _bucket_subject(request, tmp_path):
            yield bucket


async def _bucket_subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Subject]:
    from router.cache.bucket_tier import BucketTier
    from router.core.bucketing import BucketConfig
    from router.observability import Metrics
    from router.spooling import Spools

    s3 = request.getfixturevalue("s3_server")
    config = BucketConfig(url=s3.url, endpoint=s3.endpoint, timeout=3, probe_interval=0.1)
    store = ArtifactStore(tmp_path / "store", 64 << 20)
    store.open()
    health = StorageHealth()
    spools = Spools(SpoolBudget(16 << 20, store), health, store=store)
    tier = BucketTier(
        config, store=store, spools=spools, metrics=Metrics(), shared=None, owner="contract"
    )
    await tier.start()
    assert tier.started, s3.log_tail()
    (tmp_path / "src").mkdir()
    try:
        yield Subject(
            tier,
            _artifact_maker(tmp_path / "src"),
            _read_artifact,
            _expect_artifact,
            s3.kill,
            data_root=s3.data_dir / s3.bucket,
        )
    finally:
        await tier.close()


async def _found(subject: Subject, key: str) -> tuple[Any, ...] | None:
    found = await subject.tier.get(key)
    return None if found is None else await subject.read(found)


async def test_a_key_never_put_is_a_miss(subject: Subject) -> None:
    assert await subject.tier.get(KEYS[0]) is None


async def test_what_is_put_comes_back_whole(subject: Subject) -> None:
    value = subject.make(0, b'{"Version":"v1.0.0","Time":"2024-01-02T03:04:05Z"}')
    assert await subject.tier.put(KEYS[0], value) is True
    assert await _found(subject, KEYS[0]) == subject.expect(value)


async def test_keys_never_collide(subject: Subject) -> None:
    values = [subject.make(i, f"answer {i} of {key}".encode()) for i, key in enumerate(KEYS)]
    for key, value in zip(KEYS, values, strict=True):
        assert await subject.tier.put(key, value)
    for key, value in zip(KEYS, values, strict=True):
        assert await _found(subject, key) == subject.expect(value), key


async def test_a_second_put_replaces_the_first(subject: Subject) -> None:
    first, second = subject.make(1, b"first answer"), subject.make(2, b"second, longer answer")
    assert await subject.tier.put(KEYS[0], first)
    assert await subject.tier.put(KEYS[0], second)
    assert await _found(subject, KEYS[0]) == subject.expect(second)


async def test_forget_makes_a_miss_and_forgetting_nothing_is_harmless(subject: Subject) -> None:
    kept, other = subject.make(0, b"to be forgotten"), subject.make(1, b"to stay")
    assert await subject.tier.put(KEYS[0], kept)
    assert await subject.tier.put(KEYS[1], other)
    await subject.tier.forget(KEYS[0])
    await subject.tier.forget("main|never.example/@v/list")
    assert await subject.tier.get(KEYS[0]) is None
    assert await _found(subject, KEYS[1]) == subject.expect(other)


async def test_equal_bytes_under_two_keys_survive_forgetting_one(subject: Subject) -> None:
    a, b = subject.make(0, b"the same bytes"), subject.make(0, b"the same bytes")
    assert await subject.tier.put(KEYS[0], a)
    assert await subject.tier.put(KEYS[1], b)
    await subject.tier.forget(KEYS[0])
    assert await _found(subject, KEYS[1]) == subject.expect(b)


async def test_concurrent_puts_of_one_key_leave_one_whole_value(subject: Subject) -> None:
    values = [subject.make(i, bytes([65 + i]) * (10_000 + i)) for i in range(6)]
    results = await asyncio.gather(*(subject.tier.put(KEYS[0], v) for v in values))
    assert any(results)
    assert await _found(subject, KEYS[0]) in [subject.expect(v) for v in values]


async def test_a_large_value_comes_back_whole(subject: Subject) -> None:
    body = os.urandom(3 << 20) + b"tail"  # several chunks of every tier's reads
    value = subject.make(0, body)
    assert await subject.tier.put(KEYS[2], value)
    assert await _found(subject, KEYS[2]) == subject.expect(value)


async def test_a_failing_backend_is_a_miss_never_an_error(subject: Subject) -> None:
    if subject.fail is None:
        pytest.skip("process memory cannot fail apart from the process")
    kept = subject.make(0, b"kept before the failure")
    assert await subject.tier.put(KEYS[0], kept)
    subject.fail()
    assert await subject.tier.get(KEYS[0]) is None
    assert await subject.tier.get(KEYS[1]) is None
    assert await subject.tier.put(KEYS[1], subject.make(1, b"after the failure")) is False
    await subject.tier.forget(KEYS[0])


def _kept_file(subject: Subject, body: bytes) -> Path:
    assert subject.data_root is not None
    digest = hashlib.sha256(body).hexdigest()
    found = [p for p in subject.data_root.rglob(digest) if p.is_file()]
    assert len(found) == 1, f"no single file named {digest[:12]} under {subject.data_root}"
    return found[0]


@pytest.mark.parametrize("subject", ARTIFACT_TIERS, indirect=True)
async def test_an_artifact_whose_bytes_changed_is_never_handed_over_whole(
    subject: Subject,
) -> None:
    body = os.urandom(600_000)
    assert await subject.tier.put(KEYS[2], subject.make(0, body))
    path = _kept_file(subject, body)
    path.write_bytes(body[:-1] + bytes([body[-1] ^ 0xFF]))  # same size, one byte off
    found = await subject.tier.get(KEYS[2])
    got = b""
    if found is not None:
        assert not isinstance(found, Entry)
        with pytest.raises(Exception):  # noqa: B017 - each tier names it in its own words
            async for chunk in found.chunks():
                got += chunk
    assert len(got) < len(body)


@pytest.mark.parametrize("subject", ARTIFACT_TIERS, indirect=True)
async def test_a_file_that_is_not_what_its_meta_says_is_not_kept(subject: Subject) -> None:
    value = subject.make(0, b"the checked bytes")
    value.path.write_bytes(b"the changed bytes")  # after the check, before the put
    assert await subject.tier.put(KEYS[2], value) is False
    assert await subject.tier.get(KEYS[2]) is None


@pytest.mark.parametrize("subject", ARTIFACT_TIERS, indirect=True)
async def test_a_refused_put_leaves_what_was_kept(subject: Subject) -> None:
    kept = subject.make(0, b"the artifact kept first")
    assert await subject.tier.put(KEYS[2], kept)
    changed = subject.make(1, b"checked bytes")
    changed.path.write_bytes(b"changed bytes")
    assert await subject.tier.put(KEYS[2], changed) is False
    assert await _found(subject, KEYS[2]) == subject.expect(kept)
