"""One contract for every job-view store: embedded memory and a real redis-server.

Time is a fake clock moved by hand: expiry is checked without sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.clock import Clock

from router.core.jobviews import view_id
from router.core.model import Jobs
from router.fleet import keys
from router.fleet.client import connect
from router.jobviews import MemoryViews, Pin, RedisViews, ViewStore

CFG = Jobs(ttl=3600.0, max_views=3, max_bytes=1000)


def pin(body: bytes, at: float = 0.0) -> Pin:
    return Pin(200, "text/plain; charset=utf-8", "up", at, body)


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[ViewStore, Clock]]:
    clock = Clock()
    if request.param == "memory":
        yield MemoryViews(CFG, clock), clock
        return
    server = request.getfixturevalue("redis_server")
    client = connect(server.url)
    try:
        yield RedisViews(client, CFG, clock), clock
    finally:
        await client.aclose()


A = view_id("finance", "run-1")
B = view_id("finance", "run-2")
OTHER_TENANT = view_id("hr", "run-1")


async def test_the_first_answer_holds(backend: tuple[ViewStore, Clock]) -> None:
    store, _ = backend
    assert await store.get(A, "m/@v/list") is None
    first = pin(b"v1.0.0\n")
    assert await store.put(A, "m/@v/list", first) == first
    later = pin(b"v1.0.0\nv1.1.0\n")
    assert await store.put(A, "m/@v/list", later) == first  # the first answer wins
    assert await store.get(A, "m/@v/list") == first
    assert await store.get(B, "m/@v/list") is None  # another job
    assert await store.get(OTHER_TENANT, "m/@v/list") is None  # another tenant, same id


async def test_new_bounds_hold_for_views_already_held(backend: tuple[ViewStore, Clock]) -> None:
    store, clock = backend
    for n in range(3):
        await store.put(view_id("finance", f"run-{n}"), "q", pin(b"x"))
    clock.now += 100
    await store.configure(Jobs(ttl=60.0, max_views=2, max_bytes=1000))  # a reload
    assert await store.get(A, "q") is None  # idle past the new TTL
    await store.put(A, "q", pin(b"y"))
    await store.gc()
    assert await store.count() == 1  # the others, idle past the new TTL, are collected
    for n in range(2, 5):
        await store.put(view_id("finance", f"run-{n}"), "q", pin(b"z"))
    assert await store.count() == 2  # the new count bound


async def test_show_and_drop(backend: tuple[ViewStore, Clock]) -> None:
    store, clock = backend
    await store.put(A, "m/@latest", pin(b'{"Version":"v1.0.0"}'))
    clock.now += 10
    shown = await store.show(A)
    assert shown is not None
    assert (shown["tenant"], shown["job"], shown["bytes"]) == ("finance", "run-1", 20)
    assert shown["idle_seconds"] == 10.0 and shown["expires_in_seconds"] == 3590.0
    assert [p["question"] for p in shown["pins"]] == ["m/@latest"]
    assert "body" not in shown["pins"][0]
    assert await store.drop(A) is True
    assert await store.show(A) is None
    assert await store.get(A, "m/@latest") is None
    assert await store.drop(A) is False


async def test_idle_views_expire_and_are_collected(backend: tuple[ViewStore, Clock]) -> None:
    store, clock = backend
    await store.put(A, "q", pin(b"a"))
    await store.put(B, "q", pin(b"b"))
    clock.now += 3000
    assert await store.get(B, "q") is not None  # used: B's idle time starts again
    clock.now += 600  # A idle for 3600 s, B for 600 s
    assert await store.get(A, "q") is None
    assert await store.show(A) is None
    assert sorted(await store.gc()) == [(A, "idle")]
    assert await store.count() == 1
    assert await store.get(B, "q") is not None


async def test_an_idle_view_starts_afresh(backend: tuple[ViewStore, Clock]) -> None:
    store, clock = backend
    await store.put(A, "q", pin(b"old"))
    clock.now += 3600
    fresh = pin(b"new")
    assert await store.put(A, "q", fresh) == fresh  # not the expired view's answer


async def test_count_bound_drops_the_least_recently_used(
    backend: tuple[ViewStore, Clock],
) -> None:
    store, clock = backend
    views = [view_id("t", str(i)) for i in range(4)]
    for v in views:
        clock.now += 1
        await store.put(v, "q", pin(b"x"))
    assert await store.count() == 3  # max_views
    assert await store.get(views[0], "q") is None  # the oldest went
    assert all([await store.get(v, "q") for v in views[1:]])


async def test_byte_bound(backend: tuple[ViewStore, Clock]) -> None:
    store, clock = backend
    await store.put(A, "q", pin(b"a" * 600))
    clock.now += 1
    await store.put(B, "q", pin(b"b" * 600))  # 1200 > 1000 bytes: the older view goes
    await store.gc()
    assert await store.get(A, "q") is None
    assert await store.get(B, "q") is not None


async def test_a_longer_ttl_keeps_a_view_redis_would_have_expired(redis_server: Any) -> None:
    clock = Clock()
    client = connect(redis_server.url)
    try:
        store = RedisViews(client, CFG, clock)
        await store.put(A, "q", pin(b"a"))
        clock.now += 3000
        assert 0 < await client.pttl(keys.job(A)) <= 3600_000  # the old TTL, from the put
        await store.configure(Jobs(ttl=7200.0, max_views=3, max_bytes=1000))
        # the new TTL from the view's last use (3000 s ago): about 4200 s left in Redis
        assert 4100_000 < await client.pttl(keys.job(A)) <= 4200_000
        clock.now += 1000  # idle 4000 s: past the old TTL, within the new one
        assert await store.get(A, "q") == pin(b"a")
    finally:
        await client.aclose()


async def test_redis_down_falls_back_to_this_process(redis_server: Any) -> None:
    clock = Clock()
    errors: list[str] = []
    client = connect(redis_server.url)
    store = RedisViews(client, CFG, clock, on_error=errors.append)
    try:
        redis_server.kill()
        first = pin(b"v1.0.0\n")
        assert await store.put(A, "q", first) == first  # no error for the request
        assert await store.put(A, "q", pin(b"other")) == first  # still pinned, locally
        assert await store.get(A, "q") == first
        assert errors and errors[0] == "job_put"
        assert await store.count() == 1
    finally:
        await client.aclose()
