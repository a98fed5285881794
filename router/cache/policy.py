"""Replacement policies for the gateway's metadata cache: pure, clock-free, measured.

A policy only decides *which keys* stay resident; the adapter that stores the
values sits on top of it. The caller passes time in (``now``, seconds, any
monotonic origin), so nothing here reads a clock, sleeps, does I/O or touches
asyncio, and decay is testable without waiting. There is no randomness.

Two implementations of :class:`CachePolicy`:

* :class:`LRUPolicy` - plain least-recently-used, the baseline.
* :class:`LRUKPolicy` - the gateway's policy: an adaptive window in front of an
  LRU-K main region, with admission by time-decayed frequency. Design and
  measurements are in ``benchmarks/CACHE.md``; in short:

  - every reference updates the key's LRU-K history (K times) and a decayed
    frequency ``f <- f * decay**dt + 1``; references within the correlated
    reference period (``crp``) of the previous one are one burst: they update
    the last-seen time only (O'Neil, Weikum & O'Neil 1993);
  - new keys enter a small LRU *window*; a key leaving the window contends
    with the main region's LRU-K victim (largest backward K-distance) and
    enters only if its decayed frequency *before* its latest reference beats
    the victim's: one-off scans and loops larger than the cache cannot flush
    a working set;
  - history (K times, frequency) of evicted keys is retained in a bounded
    ghost table, so a key that returns regains its K-history and frequency;
  - the window size adapts ARC-style: a miss on a key the window evicted
    recently grows the window, a miss on a key the main region evicted
    recently shrinks it. This is what keeps recency-heavy traces near LRU.

Costs: ``access`` is O(1); ``admit`` and ``remove`` are amortized O(log n)
(heap operations, each re-ordering paid for by an earlier hit); nothing ever
scans the whole cache on the request path. Memory: one small record per
resident key plus at most ``history`` records for evicted keys.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import Protocol, runtime_checkable

__all__ = ["CachePolicy", "LRUKPolicy", "LRUPolicy"]

_NEVER = float("-inf")
# Keys with fewer than K references have an infinite backward K-distance: they
# sort before every key with a full history, ordered by last reference (LRU).
_SHORT_HISTORY_OFFSET = 1e15

_FROM_NOWHERE, _FROM_WINDOW, _FROM_MAIN = 0, 1, 2

_INITIAL_WINDOW_SHARE = 0.01
_MIN_WINDOW_SHARE = 0.0
_MAX_WINDOW_SHARE = 1.0
# Adaptation: a ghost hit counts only if the key was evicted among the last
# _GHOST_RANK_SHARE x residents evictions of its region (it would still be
# resident had that region been that much larger); each counted hit moves the
# window by _STEP_ENTRIES entries' worth of share.
_GHOST_RANK_SHARE = 0.1
_STEP_ENTRIES = 2.0
_HISTORY_PER_ENTRY = 4
_STALE_SLACK = 32


@runtime_checkable
class CachePolicy(Protocol):
    """What a cache adapter needs from a replacement policy.

    Protocol of use: ``access`` on every lookup; on a miss, fetch the value
    and ``admit`` it; drop the values of every key ``admit`` returns (which
    may include the key just offered, if admission rejected it).
    """

    capacity_bytes: int
    max_entries: int

    @property
    def used_bytes(self) -> int:
        """Bytes currently accounted to resident keys."""
        ...

    def access(self, key: Hashable, size: int, now: float) -> bool:
        """Record a reference to ``key`` at ``now``; True if it is resident (a hit)."""
        ...

    def admit(self, key: Hashable, size: int, now: float) -> list[Hashable]:
        """Offer ``key`` of ``size`` bytes after a miss; return the keys evicted."""
        ...

    def remove(self, key: Hashable) -> None:
        """Forget that ``key`` is resident (purge, TTL expiry); no-op if absent."""
        ...

    def __contains__(self, key: object) -> bool:
        """True if ``key`` is resident."""
        ...

    def __len__(self) -> int:
        """Number of resident keys."""
        ...


def _check_bounds(capacity_bytes: int, max_entries: int) -> None:
    """Reject negative budgets early."""
    if capacity_bytes < 0 or max_entries < 0:
        raise ValueError("capacity_bytes and max_entries must be >= 0")


def _check_size(size: int) -> None:
    """Sizes are byte counts."""
    if size < 0:
        raise ValueError("size must be >= 0")


class LRUPolicy:
    """Plain LRU bounded in bytes and entries: the baseline every row is compared to."""

    def __init__(self, capacity_bytes: int, max_entries: int) -> None:
        """Create an empty cache with the two budgets."""
        _check_bounds(capacity_bytes, max_entries)
        self.capacity_bytes = capacity_bytes
        self.max_entries = max_entries
        self._sizes: OrderedDict[Hashable, int] = OrderedDict()
        self._used = 0

    @property
    def used_bytes(self) -> int:
        """Bytes currently accounted to resident keys."""
        return self._used

    def access(self, key: Hashable, size: int, now: float) -> bool:
        """Refresh ``key`` if resident; ``size`` and ``now`` are not needed by LRU."""
        if key in self._sizes:
            self._sizes.move_to_end(key)
            return True
        return False

    def admit(self, key: Hashable, size: int, now: float) -> list[Hashable]:
        """Insert ``key`` as most recent, evicting least recent keys until it fits."""
        _check_size(size)
        if size > self.capacity_bytes or self.max_entries == 0:
            self.remove(key)
            return [key]
        self._used += size - self._sizes.pop(key, 0)
        self._sizes[key] = size
        evicted: list[Hashable] = []
        while self._used > self.capacity_bytes or len(self._sizes) > self.max_entries:
            old, old_size = self._sizes.popitem(last=False)
            self._used -= old_size
            evicted.append(old)
        return evicted

    def remove(self, key: Hashable) -> None:
        """Drop ``key`` if resident."""
        self._used -= self._sizes.pop(key, 0)

    def __contains__(self, key: object) -> bool:
        """True if ``key`` is resident."""
        return key in self._sizes

    def __len__(self) -> int:
        """Number of resident keys."""
        return len(self._sizes)


class _Record:
    """Per-key state: LRU-K history, decayed frequency, size, and eviction bookkeeping."""

    __slots__ = ("freq", "hist", "last", "origin", "size", "stamp", "token")

    def __init__(self, k: int, size: int, now: float) -> None:
        """A key seen once, at ``now``."""
        self.hist = [now] + [_NEVER] * (k - 1)  # HIST(p, 1..K), most recent first
        self.last = now  # LAST(p): latest reference, correlated or not
        self.freq = 1.0  # decayed reference count as of hist[0], the latest counted one
        self.size = size
        self.origin = _FROM_NOWHERE  # which region evicted it (ghosts only)
        self.stamp = 0  # that region's eviction count at the time
        self.token = 0  # identifies this record's live heap entry

    def priority(self) -> float:
        """Eviction order in the main region: smallest first (oldest K-th reference)."""
        oldest = self.hist[-1]
        if oldest == _NEVER:
            return self.last - _SHORT_HISTORY_OFFSET
        return oldest


class _LRUKRegion:
    """Resident keys ordered by backward K-distance, with a lazily re-keyed heap.

    Priorities only grow (a reference moves HIST(p, K) forward), so a heap
    entry is a lower bound: when it reaches the top with an outdated
    priority it is pushed back with the current one. Each record has exactly
    one live entry; entries of removed keys are skipped when they surface and
    the heap is rebuilt if they ever outnumber the live ones.
    """

    def __init__(self) -> None:
        """An empty region."""
        self.records: dict[Hashable, _Record] = {}
        self._heap: list[tuple[float, int, Hashable]] = []
        self._tokens = itertools.count(1)
        self._stale = 0

    def add(self, key: Hashable, rec: _Record) -> None:
        """Make ``key`` resident here."""
        rec.token = next(self._tokens)
        self.records[key] = rec
        heapq.heappush(self._heap, (rec.priority(), rec.token, key))

    def pop(self, key: Hashable) -> _Record:
        """Take ``key`` out of the region; its heap entry goes stale."""
        rec = self.records.pop(key)
        self._stale += 1
        if self._stale > len(self.records) + _STALE_SLACK:
            self._rebuild()
        return rec

    def victim(self) -> Hashable | None:
        """The key with the largest backward K-distance, or None if empty."""
        heap = self._heap
        while heap:
            prio, token, key = heap[0]
            rec = self.records.get(key)
            if rec is None or rec.token != token:
                heapq.heappop(heap)
                self._stale -= 1
                continue
            current = rec.priority()
            if current == prio:
                return key
            rec.token = next(self._tokens)
            heapq.heapreplace(heap, (current, rec.token, key))
        return None

    def _rebuild(self) -> None:
        """Drop stale entries (amortized over the removals that created them)."""
        self._heap = [(r.priority(), r.token, k) for k, r in self.records.items()]
        heapq.heapify(self._heap)
        self._stale = 0


class LRUKPolicy:
    """Adaptive-window, admission-filtered LRU-K with time-decayed frequency.

    Args:
        capacity_bytes: byte budget over all resident keys.
        max_entries: entry budget over all resident keys.
        k: the K of LRU-K (main region order); 2 by default.
        decay: per-second decay factor of the reference frequency that drives
            admission (``f * decay**seconds``); 1.0 disables decay.
        crp: correlated reference period, seconds; a reference within ``crp``
            of the previous one neither shifts the K-history nor counts as
            another reference.
        history: how many evicted keys keep their history (default
            ``4 * max_entries``).
    """

    def __init__(
        self,
        capacity_bytes: int,
        max_entries: int,
        *,
        k: int = 2,
        decay: float = 0.999,
        crp: float = 0.3,
        history: int | None = None,
    ) -> None:
        """Create an empty cache; see the class docstring for the parameters."""
        _check_bounds(capacity_bytes, max_entries)
        if k < 1 or not 0.0 < decay <= 1.0 or crp < 0.0:
            raise ValueError("need k >= 1, 0 < decay <= 1 and crp >= 0")
        self.capacity_bytes = capacity_bytes
        self.max_entries = max_entries
        self.k = k
        self.decay = decay
        self.crp = crp
        self.history = _HISTORY_PER_ENTRY * max_entries if history is None else history
        self._rate = -math.log(decay)
        self._now = _NEVER
        self._window: OrderedDict[Hashable, _Record] = OrderedDict()
        self._window_bytes = 0
        self._used = 0  # bytes of window + main
        self._count = 0  # entries of window + main
        self._main = _LRUKRegion()
        # Retained histories of non-resident keys, oldest first, keyed by
        # hash(key) so that evicted keys themselves are not kept alive.
        self._ghosts: OrderedDict[int, _Record] = OrderedDict()
        self._window_share = _INITIAL_WINDOW_SHARE
        self._evictions = {_FROM_WINDOW: 0, _FROM_MAIN: 0}

    # -- public API ---------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        """Bytes currently accounted to resident keys."""
        return self._used

    @property
    def window_share(self) -> float:
        """Current share of both budgets given to the recency window (0..1)."""
        return self._window_share

    def access(self, key: Hashable, size: int, now: float) -> bool:
        """Record a reference at ``now``; True on a hit.

        ``size`` is not needed here: a resident key's size changes only
        through :meth:`admit`.
        """
        now = self._clock(now)
        rec = self._window.get(key)
        if rec is not None:
            self._reference(rec, now)
            self._window.move_to_end(key)
            return True
        rec = self._main.records.get(key)
        if rec is not None:
            self._reference(rec, now)
            return True
        self._reference_ghost(key, now)
        return False

    def admit(self, key: Hashable, size: int, now: float) -> list[Hashable]:
        """Offer ``key`` (``size`` bytes) after a miss; return the evicted keys.

        The key enters the window; whatever overflows the window contends for
        the main region. The result may contain ``key`` itself when it cannot
        be kept. Offering a resident key updates its size.
        """
        _check_size(size)
        now = self._clock(now)
        if size > self.capacity_bytes or self.max_entries == 0:
            self.remove(key)
            return [key]
        if not self._resize(key, size):
            rec = self._ghosts.pop(hash(key), None) or _Record(self.k, size, now)
            rec.size = size
            self._window_put(key, rec)
        evicted: list[Hashable] = []
        self._drain_window(now, evicted)
        self._fit(evicted)
        return evicted

    def remove(self, key: Hashable) -> None:
        """Drop ``key`` if resident; its history is kept as a ghost."""
        if key in self._window:
            self._bury(key, self._window_take(key), _FROM_NOWHERE)
        elif key in self._main.records:
            self._bury(key, self._main_take(key), _FROM_NOWHERE)

    def __contains__(self, key: object) -> bool:
        """True if ``key`` is resident."""
        return key in self._window or key in self._main.records

    def __len__(self) -> int:
        """Number of resident keys."""
        return self._count

    # -- references ---------------------------------------------------------

    def _clock(self, now: float) -> float:
        """Never let time run backwards."""
        if now > self._now:
            self._now = now
        return self._now

    def _reference(self, rec: _Record, now: float) -> None:
        """Apply one reference to a record (LRU-K history with CRP, decayed count)."""
        last = rec.last
        if now - last > self.crp:
            # HIST(i) = HIST(i-1) + (LAST - HIST(1)): a correlated burst counts
            # as one reference; for i = 2 that is simply LAST.
            hist = rec.hist
            rec.freq = rec.freq * math.exp(self._rate * (hist[0] - now)) + 1.0
            correlated_span = last - hist[0]
            for i in range(len(hist) - 1, 1, -1):
                hist[i] = hist[i - 1] + correlated_span
            if len(hist) > 1:
                hist[1] = last
            hist[0] = now
        rec.last = now

    def _frequency(self, rec: _Record, now: float) -> float:
        """Decayed reference count of ``rec`` as seen at ``now``."""
        return rec.freq * math.exp(self._rate * (rec.hist[0] - now))

    def _reference_ghost(self, key: Hashable, now: float) -> None:
        """A miss: update (or start) the key's retained history, adapt the window."""
        ghost = hash(key)
        rec = self._ghosts.get(ghost)
        if rec is None:
            self._ghosts[ghost] = _Record(self.k, 0, now)
            self._trim_ghosts()
            return
        self._reference(rec, now)
        self._ghosts.move_to_end(ghost)
        self._adapt(rec)

    # -- adaptation ---------------------------------------------------------

    def _adapt(self, rec: _Record) -> None:
        """Move the window/main split towards the region whose ghost was hit."""
        origin, rec.origin = rec.origin, _FROM_NOWHERE
        if origin == _FROM_NOWHERE:
            return
        residents = max(self._count, 1)
        if self._evictions[origin] - rec.stamp > _GHOST_RANK_SHARE * residents:
            return
        step = _STEP_ENTRIES / residents
        share = self._window_share + (step if origin == _FROM_WINDOW else -step)
        self._window_share = min(_MAX_WINDOW_SHARE, max(_MIN_WINDOW_SHARE, share))

    # -- placement and eviction ---------------------------------------------

    def _resize(self, key: Hashable, size: int) -> bool:
        """Update the size of a resident key; False if ``key`` is not resident."""
        rec = self._window.get(key)
        if rec is not None:
            self._window_bytes += size - rec.size
        else:
            rec = self._main.records.get(key)
            if rec is None:
                return False
        self._used += size - rec.size
        rec.size = size
        return True

    def _window_put(self, key: Hashable, rec: _Record) -> None:
        """Insert ``key`` as the window's most recent entry."""
        self._window[key] = rec
        self._window_bytes += rec.size
        self._used += rec.size
        self._count += 1

    def _window_take(self, key: Hashable) -> _Record:
        """Take ``key`` out of the window."""
        rec = self._window.pop(key)
        self._window_bytes -= rec.size
        self._used -= rec.size
        self._count -= 1
        return rec

    def _main_put(self, key: Hashable, rec: _Record) -> None:
        """Make ``key`` resident in the main region."""
        self._main.add(key, rec)
        self._used += rec.size
        self._count += 1

    def _main_take(self, key: Hashable) -> _Record:
        """Take ``key`` out of the main region."""
        rec = self._main.pop(key)
        self._used -= rec.size
        self._count -= 1
        return rec

    def _window_over(self) -> bool:
        """True if the window exceeds its share (it always may hold one entry)."""
        count = len(self._window)
        share = self._window_share
        return count > 1 and (
            count > share * self.max_entries or self._window_bytes > share * self.capacity_bytes
        )

    def _drain_window(self, now: float, evicted: list[Hashable]) -> None:
        """Move the window's oldest entries into contention for the main region."""
        while self._window_over():
            key = next(iter(self._window))
            self._contend(key, self._window_take(key), now, evicted)

    def _contend(self, key: Hashable, rec: _Record, now: float, evicted: list[Hashable]) -> None:
        """Admit a window leaver to main if it out-references the victims it displaces."""
        while self._used + rec.size > self.capacity_bytes or self._count >= self.max_entries:
            victim = self._main.victim()
            if victim is None:
                break
            if not self._wins(rec, self._main.records[victim], now):
                self._bury(key, rec, _FROM_WINDOW)
                evicted.append(key)
                return
            self._bury(victim, self._main_take(victim), _FROM_MAIN)
            evicted.append(victim)
        self._main_put(key, rec)

    def _wins(self, candidate: _Record, victim: _Record, now: float) -> bool:
        """Admission test: candidate's frequency before its latest reference vs victim's."""
        before_latest = (candidate.freq - 1.0) * math.exp(self._rate * (candidate.hist[0] - now))
        return before_latest > self._frequency(victim, now)

    def _fit(self, evicted: list[Hashable]) -> None:
        """Evict main victims (then window entries) until both budgets hold."""
        while self._used > self.capacity_bytes or self._count > self.max_entries:
            victim = self._main.victim()
            if victim is not None:
                self._bury(victim, self._main_take(victim), _FROM_MAIN)
                evicted.append(victim)
                continue
            key = next(iter(self._window))
            self._bury(key, self._window_take(key), _FROM_WINDOW)
            evicted.append(key)

    def _bury(self, key: Hashable, rec: _Record, origin: int) -> None:
        """Keep the history of a key that is no longer resident."""
        rec.origin = origin
        if origin != _FROM_NOWHERE:
            self._evictions[origin] += 1
            rec.stamp = self._evictions[origin]
        self._ghosts[hash(key)] = rec  # residents are never ghosts: this appends
        self._trim_ghosts()

    def _trim_ghosts(self) -> None:
        """Forget the oldest retained history beyond the ``history`` bound."""
        if len(self._ghosts) > self.history:
            self._ghosts.popitem(last=False)
