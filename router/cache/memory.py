"""The in-memory answer cache: entries with lifetimes, a byte budget, an eviction policy.

Which keys stay is decided by a `CachePolicy` (LRU-K with time decay by
default); this module only stores bytes, tracks freshness and keeps the
module -> keys index that purges need. Every operation is O(1) amortised
(plus the policy's own cost); nothing scans the whole cache.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from router.cache.policy import CachePolicy, LRUPolicy

__all__ = ["CachePolicy", "Entry", "LRUPolicy", "Lookup", "MemoryCache"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer."""

    status: int
    body: bytes
    content_type: str | None
    upstream: str
    stored: float  # wall-clock seconds
    fresh_until: float
    stale_until: float
    module: str | None
    mutable: bool  # list / latest / query / negative: what a purge drops

    @property
    def size(self) -> int:
        return len(self.body) + 256  # headers and bookkeeping, roughly

    def age(self, now: float) -> int:
        return max(0, int(now - self.stored))


@dataclass(frozen=True, slots=True)
class Lookup:
    entry: Entry
    fresh: bool


class MemoryCache:
    """Answers by key, bounded in bytes and entries."""

    def __init__(self, policy: CachePolicy) -> None:
        self._policy = policy
        self._entries: dict[Hashable, Entry] = {}
        self._by_module: dict[str, set[Hashable]] = {}
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def used_bytes(self) -> int:
        return self._policy.used_bytes

    def get(self, key: Hashable, now: float, *, allow_stale: bool = True) -> Lookup | None:
        """The entry for `key` if fresh (or, with `allow_stale`, still within its stale time)."""
        entry = self._entries.get(key)
        if entry is None:
            self._policy.access(key, 0, now)  # records the reference for LRU-K history
            return None
        self._policy.access(key, entry.size, now)
        if now < entry.fresh_until:
            return Lookup(entry, True)
        if now < entry.stale_until:
            return Lookup(entry, False) if allow_stale else None
        self.remove(key)
        return None

    def get_fresh(self, key: Hashable, now: float) -> Entry | None:
        """A fresh entry (recorded as a hit), or None without touching anything."""
        entry = self._entries.get(key)
        if entry is None or now >= entry.fresh_until:
            return None
        self._policy.access(key, entry.size, now)
        return entry

    def get_stale(self, key: Hashable, now: float) -> Entry | None:
        """An entry past freshness but within stale-if-error, for when upstreams fail."""
        entry = self._entries.get(key)
        if entry is not None and now < entry.stale_until:
            return entry
        return None

    def put(self, key: Hashable, entry: Entry, now: float) -> bool:
        """Store `entry`; False when the policy did not admit it."""
        self.remove(key)
        evicted = self._policy.admit(key, entry.size, now)
        for old in evicted:
            if old != key:
                self._drop(old)
                self.evictions += 1
        if key in evicted:
            return False
        self._entries[key] = entry
        if entry.module is not None:
            self._by_module.setdefault(entry.module, set()).add(key)
        return True

    def remove(self, key: Hashable) -> None:
        self._policy.remove(key)
        self._drop(key)

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.module is not None:
            keys = self._by_module.get(entry.module)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_module[entry.module]

    def purge(self, module: str, version: str | None = None) -> int:
        """Drop the mutable and negative entries of `module` (and, with `version`, that
        version's negative entries); immutable answers stay. Returns how many."""
        dropped = 0
        for key in list(self._by_module.get(module, ())):
            entry = self._entries.get(key)
            if entry is None:
                continue
            if entry.mutable and (version is None or version in str(key) or entry.status != 200):
                self.remove(key)
                dropped += 1
        return dropped

    def drop_upstream(self, upstream: str) -> int:
        """Drop every entry an upstream served (a rolled-back mirror's answers). O(entries):
        for rare operator-level events only."""
        keys = [k for k, e in self._entries.items() if e.upstream == upstream]
        for key in keys:
            self.remove(key)
        return len(keys)
