"""What an artifact store removes to stay within its byte budget. Pure.

`choose_evictions` takes what a store holds (keys, the data they name, sizes, last access),
a budget, the time, and what must stay (pinned: being served now), and returns the keys to
remove, least recently used first, until the bytes left fit the budget. Keys may share one
data object (equal bytes): its bytes are freed only when its last key goes.

An object used within `min_idle` seconds is never chosen: a client may still be reading it,
from another process or replica this process cannot see. So a store may stay above its
budget (`over_budget`) when everything in it was used that recently; the next run frees it.

`orphans` is the other half of bucket gc: data no index entry names (an upload whose index
write never came, or whose last key was removed), removed once older than the longest upload.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Held:
    """One key of a store: the data object it names, that object's size, its last use."""

    key: str
    data: str  # the data object (its sha256): keys with equal bytes share it
    size: int
    last_access: float


@dataclass(frozen=True, slots=True)
class Retention:
    """The choice: keys to remove (in order), and what the store holds after."""

    evict: tuple[str, ...]
    freed_bytes: int  # bytes the removal frees (data no kept key names)
    kept_bytes: int
    kept_objects: int  # data objects left
    protected: int  # keys that would have gone but were used within min_idle or pinned
    over_budget: bool  # still above the budget after every removable key is gone


def choose_evictions(
    held: Iterable[Held],
    budget: int,
    now: float,
    *,
    min_idle: float,
    pinned: Collection[str] = (),
) -> Retention:
    """The keys to remove so that the data left fits `budget` bytes, least recently used
    first; never a key used within `min_idle` seconds of `now`, nor one whose data is
    `pinned` (being served)."""
    items = sorted(held, key=lambda h: (h.last_access, h.key))
    sizes: dict[str, int] = {}
    users: dict[str, int] = {}
    for h in items:
        sizes[h.data] = h.size
        users[h.data] = users.get(h.data, 0) + 1
    total = sum(sizes.values())
    evict: list[str] = []
    freed = protected = 0
    for h in items:
        if total <= budget:
            break
        if h.data in pinned or now - h.last_access < min_idle:
            protected += 1
            continue
        evict.append(h.key)
        users[h.data] -= 1
        if users[h.data] == 0:
            total -= sizes[h.data]
            freed += sizes[h.data]
    return Retention(
        evict=tuple(evict),
        freed_bytes=freed,
        kept_bytes=total,
        kept_objects=sum(1 for n in users.values() if n > 0),
        protected=protected,
        over_budget=total > budget,
    )


@dataclass(frozen=True, slots=True)
class Stored:
    """A data object as a listing shows it."""

    data: str
    size: int
    modified: float


def orphans(
    data: Sequence[Stored], named: Collection[str], now: float, *, grace: float
) -> tuple[Stored, ...]:
    """Data objects no index entry names, older than `grace` seconds (data is written
    before its index: a younger one may be an upload whose index is on its way)."""
    return tuple(d for d in data if d.data not in named and now - d.modified >= grace)
