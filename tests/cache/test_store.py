"""The artifact store on a real folder: commits, recommits, concurrent commits."""

from __future__ import annotations

import asyncio
from pathlib import Path

from router.cache.disk import ArtifactStore


async def _put(store: ArtifactStore, key: str, body: bytes) -> None:
    art = await store.put_bytes(key, body, content_type=None, upstream="u", module="m")
    assert art is not None


async def test_committing_a_key_again_with_the_same_bytes_keeps_them(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, 1 << 20)
    store.open()
    for _ in range(2):
        await _put(store, "pool|m/@v/v1.0.0.zip", b"same bytes")
    found = store.get("pool|m/@v/v1.0.0.zip")
    assert found is not None and found[1].read_bytes() == b"same bytes"
    assert store.used_bytes == len(b"same bytes")


async def test_concurrent_commits_of_one_key_leave_a_whole_artifact(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, 1 << 20)
    store.open()
    body = b"x" * 50_000
    await asyncio.gather(*(_put(store, "pool|k", body) for _ in range(8)))
    found = store.get("pool|k")
    assert found is not None and found[1].read_bytes() == body
    assert not list((tmp_path / "tmp").iterdir())
    again = ArtifactStore(tmp_path, 1 << 20)  # what a restart sees
    again.open()
    reopened = again.get("pool|k")
    assert reopened is not None and reopened[1].read_bytes() == body


async def test_drop_upstream_forgets_only_its_artifacts(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, 1 << 20)
    store.open()
    await store.put_bytes("a", b"1", content_type=None, upstream="cand", module="m")
    await store.put_bytes("b", b"2", content_type=None, upstream="base", module="m")
    assert store.drop_upstream("cand") == 1
    assert store.get("a") is None and store.get("b") is not None
