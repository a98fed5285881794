"""Storage failures: counted by cause, logged once per cause per minute, degraded until a
write succeeds again (an injected clock, no sleeps)."""

from __future__ import annotations

import errno
import logging

import pytest

from router.cache.health import StorageHealth, cause_of


def test_causes_are_named_from_errno() -> None:
    assert cause_of(OSError(errno.ENOSPC, "x")) == "disk_full"
    assert cause_of(OSError(errno.EIO, "x")) == "io_error"
    assert cause_of(OSError(errno.EROFS, "x")) == "read_only"
    assert cause_of(OSError(errno.EDQUOT, "x")) == "quota"
    assert cause_of(OSError(errno.EBADF, "x")) == "other"


def test_one_log_line_per_cause_per_minute_and_degraded_until_a_write_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    errors: list[tuple[str, str]] = []
    states: list[tuple[str, bool]] = []
    health = StorageHealth(
        lambda t, c: errors.append((t, c)), lambda t, d: states.append((t, d)), clock=lambda: now[0]
    )
    full = OSError(errno.ENOSPC, "No space left on device")
    with caplog.at_level(logging.ERROR, logger="goproxy_router.store"):
        for _ in range(100):
            health.failed("disk", "keeping an artifact", full)
            now[0] += 0.1
        assert len(caplog.records) == 1
        now[0] = 61.0
        health.failed("disk", "keeping an artifact", full)
        assert len(caplog.records) == 2
        assert "(99 more since the last report)" in caplog.records[1].getMessage()
        health.failed("disk", "keeping an artifact", OSError(errno.EIO, "I/O error"))
        assert len(caplog.records) == 3  # another cause is reported at once
    assert len(errors) == 102 and errors[0] == ("disk", "disk_full")
    assert health.degraded() == {"disk": "I/O error"}
    health.ok("disk")
    assert health.degraded() == {}
    assert states == [("disk", True), ("disk", False)]
