"""Owned background tasks stop at close, even one that survives its first cancellation."""

from __future__ import annotations

import asyncio

import pytest

from router.tasks import TaskGroup


async def test_close_cancels_every_task() -> None:
    group = TaskGroup()
    task = group.spawn(asyncio.sleep(3600), name="sleeper")
    await group.close()
    assert task.cancelled()


async def test_a_task_that_survives_a_cancellation_is_cancelled_again() -> None:
    # What asyncio.timeout can do on Python 3.11 when the cancellation lands as the
    # timeout expires: the loop sees a TimeoutError, retries, and runs on.
    survived = 0

    async def retry_loop() -> None:
        nonlocal survived
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if survived:
                    raise
                survived += 1
                task = asyncio.current_task()
                assert task is not None
                task.uncancel()  # as asyncio.timeout does when it turns it into a timeout

    group = TaskGroup()
    task = group.spawn(retry_loop(), name="retry-loop")
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await group.close()
    assert survived == 1 and task.cancelled()


async def test_a_task_winding_down_is_not_cancelled_again() -> None:
    finished = asyncio.Event()

    async def with_cleanup() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.6)  # longer than one round: a second cancel would cut it
            finished.set()

    group = TaskGroup()
    group.spawn(with_cleanup(), name="cleanup")
    await asyncio.sleep(0)
    await group.close()
    assert finished.is_set()


async def test_a_task_that_never_stops_is_named_and_close_still_returns(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("router.tasks.CANCEL_WAIT", 0.01)
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    group = TaskGroup()
    task = group.spawn(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await group.close()
    assert "did not stop when cancelled: stubborn" in caplog.text
    release.set()
    task.cancel()
    await asyncio.wait([task])


async def test_finishing_tasks_get_their_grace() -> None:
    group = TaskGroup()
    done = asyncio.Event()

    async def commit() -> None:
        await asyncio.sleep(0.01)
        done.set()

    group.spawn(commit(), name="store-put")
    await group.close(finish=("store-",), grace=5.0)
    assert done.is_set()
