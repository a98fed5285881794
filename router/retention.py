"""Retention of the artifact store: `goproxy-router store gc` and `POST /debug/store/gc`.

The choice of what goes is `router.core.retention` (least recently used first, down to a
byte budget, never anything used within `min_idle` nor being served). This module runs it:

- on the local store (`router.cache.disk`): in the gateway that owns it (`/debug/store/gc`,
  which also spares what its clients are reading right now), or on the folder itself
  (`--rules`: the rules' `cache.dir`). A gateway that still indexes a removed artifact
  finds its file gone and fetches it again: it never serves a partial one.
- on the bucket (`router.cache.bucket`), over its listing and delete calls. Last access of a
  bucket key is kept in Redis (`BucketAccess`: a sorted set, one member per key, written at
  most once per `TOUCH_INTERVAL` per key and process); a key Redis has no time for counts as
  last used when it was published. gc also removes index entries whose data is gone and data
  no index entry names (once older than `grace`, the longest upload: data goes up before
  its index).

A dry run (the default) reports what would go; `apply` removes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from router.cache.disk import TOUCH_INTERVAL, ArtifactStore
from router.core.retention import Held, Retention, Stored, choose_evictions, orphans
from router.fleet import keys

if TYPE_CHECKING:
    from router.cache.bucket import Bucket

MIN_IDLE = 3600.0  # seconds: nothing used this recently is removed
GRACE = 3600.0  # seconds: unnamed bucket data younger than this may be an upload in flight
SHOWN = 1000  # keys listed in a report at most


@dataclass(slots=True)
class GcReport:
    """What one gc run chose (and, with `applied`, removed)."""

    tier: str
    budget: int
    applied: bool
    retention: Retention
    dangling: list[str] = field(default_factory=list)  # bucket index entries naming no data
    orphans: list[str] = field(default_factory=list)  # bucket data no entry names
    orphan_bytes: int = 0

    def as_json(self) -> dict[str, Any]:
        r = self.retention
        return {
            "tier": self.tier,
            "applied": self.applied,
            "budget_bytes": self.budget,
            "removed" if self.applied else "would_remove": {
                "keys": len(r.evict),
                "bytes": r.freed_bytes + self.orphan_bytes,
                "dangling_entries": len(self.dangling),
                "orphan_objects": len(self.orphans),
            },
            "kept": {"bytes": r.kept_bytes, "objects": r.kept_objects},
            "protected": r.protected,
            "over_budget": r.over_budget,
            "keys": list(r.evict[:SHOWN]),
        }

    def lines(self) -> list[str]:
        r = self.retention
        verb = "removed" if self.applied else "would remove"
        out = [
            f"{self.tier}: {verb} {len(r.evict)} key(s), "
            f"{_mib(r.freed_bytes + self.orphan_bytes)}; "
            f"keeps {r.kept_objects} object(s), {_mib(r.kept_bytes)} of {_mib(self.budget)}"
        ]
        if self.dangling or self.orphans:
            out.append(
                f"{self.tier}: {verb} {len(self.dangling)} index entr(ies) naming missing data "
                f"and {len(self.orphans)} data object(s) no entry names"
            )
        if r.protected:
            out.append(f"{self.tier}: {r.protected} key(s) spared: used within min-idle, or in use")
        if r.over_budget:
            out.append(f"{self.tier}: still above the budget (everything left was used recently)")
        out.extend(f"  {key}" for key in r.evict[:20])
        if len(r.evict) > 20:
            out.append(f"  ... and {len(r.evict) - 20} more (--json lists up to {SHOWN})")
        if not self.applied and (r.evict or self.dangling or self.orphans):
            out.append("dry run: nothing removed; run again with --apply")
        return out


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# ---------------------------------------------------------------------------- disk


def gc_disk(store: ArtifactStore, budget: int, *, min_idle: float, apply: bool) -> GcReport:
    """gc of a local store (blocking: run in a thread in the gateway)."""
    plan = store.gc(budget, min_idle=min_idle, apply=apply)
    return GcReport("disk", budget, apply, plan)


# ---------------------------------------------------------------------------- bucket


class BucketAccess:
    """Last access of bucket keys in Redis: sorted set `bucket-access`, key -> unix time.
    `touch` writes a key at most once per `interval` from this process (remembering up to
    `remembered` keys; then it starts over, costing a few more writes, never more memory)."""

    def __init__(
        self, client: Any, *, interval: float = TOUCH_INTERVAL, remembered: int = 100_000
    ) -> None:
        self.client = client
        self.interval = interval
        self.remembered = remembered
        self._last: dict[str, float] = {}

    async def touch(self, key: str, now: float) -> None:
        if now - self._last.get(key, float("-inf")) < self.interval:
            return
        if len(self._last) >= self.remembered:
            self._last.clear()
        self._last[key] = now
        await self.client.zadd(keys.BUCKET_ACCESS, {key: now})

    async def all(self) -> dict[str, float]:
        out: dict[str, float] = {}
        async for member, score in self.client.zscan_iter(keys.BUCKET_ACCESS):
            name = member.decode() if isinstance(member, bytes) else str(member)
            out[name] = float(score)
        return out

    async def forget(self, names: list[str]) -> None:
        for start in range(0, len(names), 500):
            await self.client.zrem(keys.BUCKET_ACCESS, *names[start : start + 500])


async def gc_bucket(
    bucket: Bucket,
    budget: int,
    *,
    now: float,
    min_idle: float = MIN_IDLE,
    grace: float = GRACE,
    apply: bool = False,
    access: Mapping[str, float] | None = None,
    jobs: int = 8,
) -> GcReport:
    """gc of a bucket over its listing: entries and data read, the choice made by the core,
    then (with `apply`) index entries removed first and their data after, so a reader never
    finds an entry naming removed data for longer than that gap."""
    data = [Stored(obj.digest, obj.size, obj.modified) async for obj in bucket.list_objects("data")]
    names = [obj.name async for obj in bucket.list_objects("index")]
    slots = asyncio.Semaphore(jobs)

    async def read(name: str) -> Any:
        async with slots:
            return await bucket.entry_at(name)

    entries = [e for e in await asyncio.gather(*(read(n) for n in names)) if e is not None]
    present = {d.data: d for d in data}
    last = access or {}
    held, dangling = [], []
    for e in entries:
        if e.digest in present:
            held.append(Held(e.key, e.digest, e.size, last.get(e.key, e.stored)))
        else:
            dangling.append(e.key)
    plan = choose_evictions(held, budget, now, min_idle=min_idle)
    unnamed = orphans(data, {h.data for h in held}, now, grace=grace)
    report = GcReport(
        "bucket",
        budget,
        apply,
        plan,
        dangling=dangling,
        orphans=[d.data for d in unnamed],
        orphan_bytes=sum(d.size for d in unnamed),
    )
    if apply:
        gone = set(plan.evict)
        for key in [*plan.evict, *dangling]:
            await bucket.delete(key)
        still_named = {h.data for h in held if h.key not in gone}
        freed = {h.data for h in held if h.key in gone} - still_named
        for digest in sorted(freed | set(report.orphans)):
            await bucket.delete_data(digest)
    return report
