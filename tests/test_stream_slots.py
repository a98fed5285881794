"""A client's share of downloads: over it, requests wait first come first served."""

from __future__ import annotations

import asyncio

from router.limiting import StreamSlots


async def test_a_freed_slot_goes_to_the_first_waiter_and_a_long_wait_gives_up() -> None:
    slots = StreamSlots()
    assert await slots.take("a", 2, 1.0) and await slots.take("a", 2, 1.0)
    order: list[str] = []

    async def wait(name: str, seconds: float) -> None:
        if await slots.take("a", 2, seconds):
            order.append(name)

    first = asyncio.ensure_future(wait("first", 5.0))
    second = asyncio.ensure_future(wait("second", 5.0))
    late = asyncio.ensure_future(wait("late", 0.05))
    # awaited, not slept past: a sleep of its own could end first on a loaded machine
    await asyncio.wait_for(late, 10)
    assert order == []  # gave up: no slot within its wait
    assert not first.done() and not second.done()  # the others still wait
    assert await slots.take("b", 2, 0.0)  # another client is not affected
    slots.give_back("a")
    await first
    assert order == ["first"]
    slots.give_back("a")
    await second
    assert order == ["first", "second"]
    for _ in range(2):
        slots.give_back("a")
    slots.give_back("b")
    assert len(slots) == 0  # nothing is kept for clients with nothing open
