"""Running an asyncio server from synchronous test code: a daemon thread with its own loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable


def start_loop_thread(
    start: Callable[[], Awaitable[object]], name: str, timeout: float
) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    """Run `start()` on a new loop in a daemon thread, keep the loop running; returns
    once `start()` finished (its exception, if any, is raised here)."""
    ready: concurrent.futures.Future[asyncio.AbstractEventLoop] = concurrent.futures.Future()

    def run() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(start())
        except BaseException as exc:
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return ready.result(timeout), thread


def stop_loop_thread(
    loop: asyncio.AbstractEventLoop,
    thread: threading.Thread,
    close: Callable[[], Awaitable[None]],
    timeout: float,
) -> None:
    """Run `close()` on the thread's loop, stop the loop and join the thread."""
    asyncio.run_coroutine_threadsafe(close(), loop).result(timeout)  # type: ignore[arg-type]
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout)
