"""Whether the disk under the artifact store and the spools can be written.

A write that fails (disk full, I/O error, read-only file system, quota) is a storage
failure, never a client error: the client still gets the upstream's bytes, the artifact
is not kept. Each failure is counted by cause; it is logged once per cause per minute
(with how many were not logged), and the tier shows as degraded (a gauge, `/readyz`'s
body, `/debug/upstreams`) until a later write to it succeeds.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("goproxy_router.store")

LOG_EVERY = 60.0
_CAUSES = {
    errno.ENOSPC: "disk_full",
    errno.EIO: "io_error",
    errno.EROFS: "read_only",
    errno.EDQUOT: "quota",
    errno.EFBIG: "too_big",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
}
_WORDS = {
    "disk_full": "no space left on the disk",
    "io_error": "I/O error",
    "read_only": "the file system is read-only",
    "quota": "disk quota exceeded",
    "too_big": "file too large",
    "permission": "permission denied",
    "other": "write failed",
}


def cause_of(exc: OSError) -> str:
    """A short, bounded name for why a write failed (a metric label)."""
    return _CAUSES.get(exc.errno or 0, "other")


@dataclass(slots=True)
class _Tier:
    degraded: str | None = None
    since: float = 0.0
    last_logged: dict[str, float] = field(default_factory=dict)
    unlogged: dict[str, int] = field(default_factory=dict)


class StorageHealth:
    """Write failures of the store (`disk`) and the spools (`spool`), by cause."""

    def __init__(
        self,
        on_error: Callable[[str, str], None] = lambda tier, cause: None,
        on_state: Callable[[str, bool], None] = lambda tier, degraded: None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_error = on_error
        self._on_state = on_state
        self._clock = clock
        self._tiers: dict[str, _Tier] = {}

    def failed(self, tier: str, what: str, exc: OSError) -> None:
        """A write to `tier` failed while doing `what` (e.g. "spooling a zip")."""
        cause = cause_of(exc)
        now = self._clock()
        state = self._tiers.setdefault(tier, _Tier())
        self._on_error(tier, cause)
        if state.degraded is None:
            state.since = now
            self._on_state(tier, True)
        state.degraded = cause
        last = state.last_logged.get(cause)
        if last is not None and now - last < LOG_EVERY:
            state.unlogged[cause] = state.unlogged.get(cause, 0) + 1
            return
        more = state.unlogged.pop(cause, 0)
        state.last_logged[cause] = now
        also = f" ({more} more since the last report)" if more else ""
        log.error(
            "%s storage: %s while %s: %s; serving without keeping%s",
            tier,
            _WORDS[cause],
            what,
            exc.strerror or exc,
            also,
        )

    def ok(self, tier: str) -> None:
        """A write to `tier` succeeded: it is healthy again."""
        state = self._tiers.get(tier)
        if state is not None and state.degraded is not None:
            log.warning("%s storage writes succeed again", tier)
            state.degraded = None
            self._on_state(tier, False)

    def degraded(self) -> dict[str, str]:
        """Each degraded tier and why, in words."""
        return {
            tier: _WORDS[s.degraded] for tier, s in self._tiers.items() if s.degraded is not None
        }
