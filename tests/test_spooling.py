"""Tees: one body written once, read by many, at the upstream's pace; memory-bounded when
it cannot be spooled. Real files; the body comes from a real loopback upstream."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path

import pytest
from aiohttp import web
from support.smallfs import fill, small_fs

from router.cache.disk import ArtifactStore, Spool, SpoolBudget
from router.cache.health import StorageHealth
from router.core.model import Upstream
from router.spooling import Spools, Tee, TeeBroken
from router.upstream import UpstreamClient

BODY = os.urandom(3 << 20)


@pytest.fixture
async def upstream() -> object:
    """A loopback server sending BODY in 64 KiB pieces."""

    async def handler(http: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        if not http.path.endswith("/chunked"):
            resp.content_length = len(BODY)
        await resp.prepare(http)
        for i in range(0, len(BODY), 1 << 16):
            await resp.write(BODY[i : i + (1 << 16)])
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    client = UpstreamClient(Upstream(name="up", url=f"http://127.0.0.1:{runner.addresses[0][1]}"))
    await client.start()
    yield client
    await client.close()
    await runner.cleanup()


async def _read_all(tee: Tee, pause: float = 0.0) -> bytes:
    reader = tee.attach()
    assert reader is not None
    out = bytearray()
    try:
        while chunk := await tee.read(reader, 100_000):
            out += chunk
            if pause:
                await asyncio.sleep(pause)
    finally:
        tee.detach(reader)
    return bytes(out)


async def test_readers_follow_a_spooled_body_and_the_file_goes_with_the_last(
    tmp_path: Path, upstream: UpstreamClient
) -> None:
    spools = Spools(SpoolBudget(10 << 20), StorageHealth(), root=tmp_path)
    spool = spools.new(len(BODY))
    assert spool is not None
    answer = await upstream.fetch("x", stream=True, limit=1 << 30)
    tee = Tee(spool, expected=len(BODY), content_type=None, upstream="up")
    tee.hold()
    filling = asyncio.ensure_future(tee.fill(answer, 1 << 30, 30))
    bodies = await asyncio.gather(*(_read_all(tee) for _ in range(5)))
    await filling
    assert bodies == [BODY] * 5
    assert spool.path.exists()  # held: it may still be kept
    tee.unhold()
    assert not spool.path.exists() and spools.budget.used == 0


async def test_without_a_spool_the_body_goes_through_memory_at_the_slowest_readers_pace(
    upstream: UpstreamClient,
) -> None:
    answer = await upstream.fetch("x", stream=True, limit=1 << 30)
    tee = Tee(None, expected=len(BODY), content_type=None, upstream="up", tail_limit=256 << 10)
    fast = tee.attach()
    slow = asyncio.ensure_future(_read_all(tee, pause=0.001))
    filling = asyncio.ensure_future(tee.fill(answer, 1 << 30, 30))
    peak = 0
    out = bytearray()
    assert fast is not None
    while chunk := await tee.read(fast, 100_000):
        out += chunk
        peak = max(peak, tee._tail_bytes)
    tee.detach(fast)
    assert bytes(out) == BODY and await slow == BODY
    await filling
    assert peak <= (256 << 10) + (256 << 10)  # the limit plus the chunk that crossed it
    assert tee.attach() is None  # its start is gone: a late follower must fetch again


async def test_a_disk_failing_mid_body_still_gives_readers_every_byte(
    tmp_path: Path, upstream: UpstreamClient
) -> None:
    with small_fs(tmp_path / "fs", 2 << 20) as fs:
        health = StorageHealth()
        spool = Spool(fs / "spool", health=health)
        answer = await upstream.fetch("x", stream=True, limit=1 << 30)
        tee = Tee(spool, expected=len(BODY), content_type=None, upstream="up")
        reader = asyncio.ensure_future(_read_all(tee))
        await tee.fill(answer, 1 << 30, 30)
        assert await reader == BODY  # 3 MiB through a 2 MiB disk
        assert spool.failed and not tee.whole_on_disk
        assert health.degraded() == {"spool": "no space left on the disk"}


async def test_a_spool_never_raises_when_the_disk_fills_under_it(tmp_path: Path) -> None:
    with small_fs(tmp_path / "fs", 1 << 20) as fs:
        spool = Spool(fs / "spool")
        await spool.write(b"x" * 100)
        fill(fs, leave=0)
        await spool.write(b"y" * (64 << 10))
        spool.close(sync=True)  # flushing a full disk: a failed spool, never an exception
        spool.discard()
        assert spool.failed


async def test_a_broken_body_breaks_every_reader(upstream: UpstreamClient) -> None:
    answer = await upstream.fetch("chunked", stream=True, limit=1 << 20)
    tee = Tee(None, expected=None, content_type=None, upstream="up")
    reader = tee.attach()  # readers attach before the body comes (as the leader does)
    assert reader is not None
    await tee.fill(answer, 1 << 20, 30)
    with pytest.raises(TeeBroken):
        while await tee.read(reader, 1 << 20):
            pass
    assert tee.cause == "too_large"


def test_the_spool_budget_counts_in_the_store_and_evicts_to_make_room(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", 10_000)
    store.open()
    budget = SpoolBudget(8_000, store)
    first = budget.take(6_000)
    assert first is not None and store.reserved == 6_000
    assert budget.take(3_000) is None  # over the spool budget
    assert first.grow(2_000) and budget.used == 8_000
    first.release()
    first.release()  # once only
    assert budget.used == 0 and store.reserved == 0


async def test_a_start_drops_zips_kept_before_they_were_checked_and_orphans(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path, 1 << 20)
    store.open()
    art = await store.put_bytes(
        "pool|m/@v/v1.0.0.zip", b"zip", content_type=None, upstream="u", module="m"
    )
    await store.put_bytes(
        "pool|m/@v/v1.0.0.mod", b"mod", content_type=None, upstream="u", module="m"
    )
    assert art is not None and not art.checked
    (tmp_path / "tmp" / "999999999-1-1").write_bytes(b"a dead process's spool")
    mine = tmp_path / "tmp" / f"{os.getpid()}-7-7"
    mine.write_bytes(b"mine")
    again = ArtifactStore(tmp_path, 1 << 20)
    again.open()
    assert again.get("pool|m/@v/v1.0.0.zip") is None  # an unchecked zip is not served
    assert again.get("pool|m/@v/v1.0.0.mod") is not None
    assert not (tmp_path / "tmp" / "999999999-1-1").exists() and mine.exists()
    index = [json.loads(p.read_text()) for p in (tmp_path / "index").glob("*.json")]
    assert [i["key"] for i in index] == ["pool|m/@v/v1.0.0.mod"]


async def test_errno_on_write_marks_the_spool_failed_not_raised(tmp_path: Path) -> None:
    health = StorageHealth()
    spool = Spool(tmp_path / "ro" / "missing-dir" / "spool", health=health)  # cannot create
    await spool.write(b"x")
    assert spool.failed and health.degraded() == {"spool": "write failed"}
    assert errno.ENOENT  # the cause is not one of the named ones


async def test_spools_taking_room_while_others_are_committed_never_deadlock(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store", 3 << 20)  # small: commits evict under the lock
    store.open()
    budget = SpoolBudget(2 << 20, store)

    async def one(i: int) -> None:
        reservation = None
        while reservation is None:
            reservation = budget.take(20_000)
            await asyncio.sleep(0)
        spool = store.spool(reservation)
        await spool.write(os.urandom(20_000))
        await store.commit(
            spool, f"k{i}", content_type=None, upstream="u", module="m", expected_size=20_000
        )

    async with asyncio.timeout(60):
        for n in range(20):
            await asyncio.gather(*(one(n * 100 + i) for i in range(100)))
    assert budget.used == 0 and store.reserved == 0
