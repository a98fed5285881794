"""Retention of the artifact store on a real folder: last access kept beside the objects
(surviving a restart), gc dry run and apply, pins for what is being served, and artifacts
written by another process found on a miss."""

from __future__ import annotations

import json
import os
from pathlib import Path

from router.cache.disk import ArtifactStore

HOUR = 3600.0


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def _put(store: ArtifactStore, key: str, body: bytes) -> None:
    art = await store.put_bytes(key, body, content_type=None, upstream="u", module="m")
    assert art is not None


async def _three(tmp_path: Path, clock: Clock) -> ArtifactStore:
    """Keys a, b, c of 100 bytes each, committed an hour apart; then a is read."""
    store = ArtifactStore(tmp_path, 1 << 20, clock=clock, touch_interval=60.0)
    store.open()
    for key in ("a", "b", "c"):
        await _put(store, key, key.encode() * 100)
        clock.t += HOUR
    assert store.get("a") is not None  # a is now the most recently used
    clock.t += 2 * HOUR
    return store


async def test_gc_dry_run_reports_and_apply_removes_the_least_recently_used(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = await _three(tmp_path, clock)
    dry = store.gc(150, min_idle=HOUR, apply=False)
    assert dry.evict == ("b", "c") and dry.kept_bytes == 100
    assert len(store) == 3 and store.evictions == 0  # a dry run removes nothing
    done = store.gc(150, min_idle=HOUR, apply=True)
    assert done.evict == ("b", "c")
    assert store.get("b") is None and store.get("a") is not None
    assert store.used_bytes == 100 and store.evictions == 2
    assert len([p for p in (tmp_path / "data").rglob("*") if p.is_file()]) == 1


async def test_last_access_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    await _three(tmp_path, clock)
    index = {json.loads(p.read_text())["key"]: p for p in (tmp_path / "index").glob("*.json")}
    assert os.stat(index["a"]).st_mtime == clock.t - 2 * HOUR  # set by the read, not the write
    again = ArtifactStore(tmp_path, 1 << 20, clock=clock)
    again.open()
    assert again.gc(100, min_idle=HOUR, apply=False).evict == ("b", "c")


async def test_reads_within_the_touch_interval_write_nothing(tmp_path: Path) -> None:
    clock = Clock()
    store = ArtifactStore(tmp_path, 1 << 20, clock=clock, touch_interval=600.0)
    store.open()
    await _put(store, "k", b"x")
    (path,) = (tmp_path / "index").glob("*.json")
    os.utime(path, (5.0, 5.0))
    clock.t += 300.0
    store.get("k")
    assert os.stat(path).st_mtime == 5.0
    clock.t += 400.0
    store.get("k")
    assert os.stat(path).st_mtime == clock.t


async def test_nothing_used_within_min_idle_is_removed(tmp_path: Path) -> None:
    clock = Clock()
    store = await _three(tmp_path, clock)
    plan = store.gc(0, min_idle=3.5 * HOUR, apply=True)
    assert plan.evict == ("b",) and plan.over_budget and plan.protected == 2


async def test_an_artifact_being_served_is_not_evicted(tmp_path: Path) -> None:
    clock = Clock()
    store = ArtifactStore(tmp_path, 250, clock=clock)
    store.open()
    await _put(store, "served", b"s" * 100)
    await _put(store, "other", b"o" * 100)
    with store.pinned("served"):
        assert store.gc(0, min_idle=0.0, apply=True).evict == ("other",)
        await _put(store, "third", b"t" * 100)
        await _put(store, "fourth", b"f" * 100)  # room is made, never from the pinned one
        found = store.get("served")
        assert found is not None and found[1].read_bytes() == b"s" * 100
    assert store.get("third") is None and store.get("fourth") is not None
    await _put(store, "fifth", b"5" * 100)  # unpinned: the oldest goes again
    assert store.get("served") is None


async def test_a_miss_finds_what_another_process_kept_in_the_folder(tmp_path: Path) -> None:
    running = ArtifactStore(tmp_path, 1 << 20)
    running.open()
    assert running.get("pool|m/@v/v1.0.0.mod") is None
    other = ArtifactStore(tmp_path, 1 << 20)  # an import, another worker
    other.open()
    await _put(other, "pool|m/@v/v1.0.0.mod", b"module m\n")
    found = running.get("pool|m/@v/v1.0.0.mod")
    assert found is not None and found[1].read_bytes() == b"module m\n"
    assert running.used_bytes == len(b"module m\n")


async def test_opening_without_eviction_keeps_a_store_above_a_smaller_budget(
    tmp_path: Path,
) -> None:
    clock = Clock()
    await _three(tmp_path, clock)
    small = ArtifactStore(tmp_path, 100, clock=clock)
    small.open(evict=False)
    assert len(small) == 3
