"""The local artifact store: immutable answers on disk, content-addressed, crash-safe.

Layout under the store's folder:

    data/ab/abcdef...   the bytes, named by their sha256 (shared by keys with equal bytes)
    index/<sha256 of key>.json   what a key maps to (data digest, size, type, origin)
    tmp/                spool files being written; a start removes those of dead processes

A body is written to `tmp/`, checked (length as announced, a module zip by Go's own
rules), fsynced, renamed into `data/`, and only then indexed (again temp file +
rename). A process killed at any point leaves either no index entry or a complete one,
never a partial artifact that is later served. Eviction is least-recently-used under a
byte budget that also counts the spools being written (`SpoolBudget`).

Last access is kept beside the objects: the mtime of a key's index file, set when the key is
read (at most once per `touch_interval`, so a hot key costs no write per hit), read back at
start-up so the least recently used go first after a restart too. An artifact being served
is pinned (`pinned`) and never evicted under its client; `gc` (the `store gc` command) also
spares anything used within its `min_idle`, which covers other processes' clients. A miss
looks for the key's index file on disk, so artifacts written by another process sharing the
folder (`goproxy-router import`, another worker) are found without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from router.cache.health import StorageHealth
from router.cache.tier import Artifact, ArtifactMeta
from router.core.modzip import ZipProblem, zip_problem
from router.core.retention import Held, Retention, choose_evictions

log = logging.getLogger("goproxy_router.store")

GROW = 4 << 20  # a spool of unknown length reserves room in steps of this
TOUCH_INTERVAL = 600.0  # seconds: a key's recorded last access is at most this stale


def check_module_zip(path: Path, module: str, version: str) -> ZipProblem | None:
    """Why the file at `path` is not a module zip the go command would accept (None when
    it is): Go's rules on names and sizes (`router.core.modzip`), then every entry read
    back within its declared size with its CRC checked, so a zip bomb whose headers lie,
    or a corrupt entry, is refused too. Blocking: run it in a thread."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            entries = ((_go_name(i), i.file_size) for i in infos)
            problem = zip_problem(entries, module, version, size)
            if problem is None:
                problem = _read_back(zf, infos)
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as exc:
        return ZipProblem("unreadable", f"not a readable zip file: {exc}")
    return problem


def _go_name(info: zipfile.ZipInfo) -> str:
    """The entry's name as Go reads it: its bytes as UTF-8 (invalid bytes stay invalid)."""
    if info.flag_bits & 0x800:
        return info.orig_filename
    raw = info.orig_filename.encode("cp437")
    return raw.decode("utf-8", "surrogateescape")


def _read_back(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> ZipProblem | None:
    for info in infos:
        if info.is_dir():
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            return ZipProblem("unreadable", f"entry {info.filename!r}: unsupported compression")
        read = 0
        with zf.open(info) as entry:  # zipfile stops at the declared size and checks the CRC
            while chunk := entry.read(1 << 20):
                read += len(chunk)
        if read != info.file_size:
            return ZipProblem("size", f"entry {info.filename!r} is not its declared size")
    return None


class Budget(Protocol):
    """Somewhere bytes can be set aside: the spool budget, the store itself."""

    def reserve(self, size: int) -> bool: ...

    def release(self, size: int) -> None: ...


class Reservation:
    """Bytes set aside in a budget for one spool; it may grow, and is given back once."""

    def __init__(self, budget: Budget, size: int) -> None:
        self._budget = budget
        self.size = size
        self._released = False
        self._lock = threading.Lock()

    def grow(self, more: int) -> bool:
        if self._released or not self._budget.reserve(more):
            return False
        with self._lock:
            if not self._released:
                self.size += more
                return True
        self._budget.release(more)  # released meanwhile: the room goes back
        return False

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._budget.release(self.size)


class SpoolBudget:
    """Bytes all spools may hold at once (`cache.spool`); with an artifact store they are
    also counted in the store's own budget, so `cache.disk` bounds what is on its disk
    including files still being written."""

    def __init__(self, limit: int, store: ArtifactStore | None = None) -> None:
        self.limit = limit
        self.store = store
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, size: int) -> bool:
        with self._lock:
            if size < 0 or self.used + size > self.limit:
                return False
            self.used += size
        # The store's lock is taken with ours released: a commit holds the store's lock
        # and then gives its spool's room back here (one lock order, no deadlock).
        if self.store is not None and not self.store.reserve(size):
            with self._lock:
                self.used -= size
            return False
        return True

    def release(self, size: int) -> None:
        with self._lock:
            self.used -= size
        if self.store is not None:
            self.store.release(size)

    def take(self, size: int) -> Reservation | None:
        """Room for a body of `size` bytes, or None when there is none."""
        return Reservation(self, size) if self.reserve(size) else None


class Spool:
    """A body being written to a file, hashed as it is written. Writing never raises: a
    failed write (disk full, I/O error) marks the spool `failed` and reports it once."""

    def __init__(
        self,
        path: Path,
        *,
        reservation: Reservation | None = None,
        health: StorageHealth | None = None,
        tier: str = "spool",
    ) -> None:
        self.path = path
        self.reservation = reservation
        self._health = health
        self._tier = tier
        self._sha = hashlib.sha256()
        self.size = 0
        self.failed = False
        self.no_room = False
        self._synced = False
        self._fd: int | None = None
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except OSError as exc:
            self._fail("creating a spool file", exc)

    def _fail(self, what: str, exc: OSError) -> None:
        if not self.failed:
            self.failed = True
            if self._health is not None:
                self._health.failed(self._tier, what, exc)
            else:
                log.warning("spool %s failed while %s: %s", self.path.name, what, exc)

    def _write(self, chunk: bytes) -> None:
        assert self._fd is not None
        view = memoryview(chunk)
        while view:
            view = view[os.write(self._fd, view) :]
        self._sha.update(chunk)

    async def write(self, chunk: bytes) -> None:
        if self.failed:
            return
        if not self._room_for(len(chunk)):
            self.failed = self.no_room = True  # the budget is full: not a disk failure
            return
        try:
            await asyncio.to_thread(self._write, chunk)
            self.size += len(chunk)
        except OSError as exc:
            self._fail("spooling a body", exc)

    def write_now(self, chunk: bytes) -> None:
        """`write` for a caller already in a thread (an import)."""
        if self.failed:
            return
        if not self._room_for(len(chunk)):
            self.failed = self.no_room = True
            return
        try:
            self._write(chunk)
            self.size += len(chunk)
        except OSError as exc:
            self._fail("spooling a body", exc)

    def _room_for(self, more: int) -> bool:
        res = self.reservation
        if res is None or self.size + more <= res.size:
            return True
        return res.grow(max(more, GROW))

    @property
    def digest(self) -> str:
        return self._sha.hexdigest()

    def close(self, *, sync: bool) -> None:
        """Close the file; with `sync`, its bytes are on disk first (even when an earlier
        close did not sync: a verified zip is closed to be hashed, then kept). Never
        raises: a failure marks the spool `failed`."""
        try:
            if self._fd is not None:
                fd, self._fd = self._fd, None
                try:
                    if sync and not self.failed:
                        os.fsync(fd)
                        self._synced = True
                finally:
                    os.close(fd)
            elif sync and not self.failed and not self._synced:
                with self.path.open("rb") as fh:
                    os.fsync(fh.fileno())
                self._synced = True
        except OSError as exc:
            self._fail("flushing a spool to disk", exc)

    def release(self) -> None:
        """Give its reserved bytes back (it was kept, or thrown away)."""
        if self.reservation is not None:
            self.reservation.release()

    def discard(self) -> None:
        """Close and remove the file, and give its room back. Never raises."""
        self.close(sync=False)
        with contextlib.suppress(OSError):
            self.path.unlink()
        self.release()


class ArtifactStore:
    """Immutable artifacts on local disk, bounded in bytes, surviving restarts."""

    def __init__(
        self,
        root: Path,
        budget: int,
        *,
        clock: Callable[[], float] = time.time,
        health: StorageHealth | None = None,
        touch_interval: float = TOUCH_INTERVAL,
    ) -> None:
        self.root = root
        self.budget = budget
        self._clock = clock
        self.touch_interval = touch_interval
        self._access: dict[str, float] = {}  # key -> last access (also its index file's mtime)
        self._pins: dict[str, int] = {}  # digest -> clients being served its bytes
        self.health = health or StorageHealth()
        self._index: OrderedDict[str, Artifact] = OrderedDict()
        self._users: dict[str, int] = {}  # digest -> how many keys use it
        self.used_bytes = 0
        self.reserved = 0  # bytes set aside for spools being written
        self._lock = threading.RLock()  # commits run in threads; bookkeeping is shared
        self.evictions = 0
        self._seq = 0

    # ---------------------------------------------------------------- startup (blocking)

    def open(self, *, evict: bool = True) -> None:
        """Create the layout, drop leftovers of dead processes, load the index (dropping
        zips kept before they were checked by Go's rules), least recently used first.
        Without `evict`, nothing kept is removed even above the budget (a gc dry run).
        Blocking: run in a thread."""
        for sub in ("data", "index", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        remove_orphans(self.root / "tmp")
        loaded = []
        for path in (self.root / "index").glob("*.json"):
            found = self._load_index(path)
            if found is not None:
                loaded.append(found)
                continue
            with contextlib.suppress(OSError):
                path.unlink()
        for art, last in sorted(loaded, key=lambda found: found[1]):
            self._remember(art)
            self._access[art.key] = last
        if evict:
            self._evict()

    def _load_index(self, path: Path) -> tuple[Artifact, float] | None:
        """A usable index entry and its last access (the file's mtime); None otherwise."""
        try:
            art = Artifact(**json.loads(path.read_text()))
            last = path.stat().st_mtime
        except (OSError, ValueError, TypeError):
            return None
        if _usable(art) and self._data_path(art.digest).is_file():
            return art, last
        return None

    # ---------------------------------------------------------------- lookups

    def get(self, key: str) -> tuple[Artifact, Path] | None:
        now = self._clock()
        with self._lock:
            art = self._index.get(key)
            if art is None:
                art = self._adopt(key)
                if art is None:
                    return None
            self._index.move_to_end(key)
            touch = now - self._access.get(key, 0.0) >= self.touch_interval
            if touch:
                self._access[key] = now
        if touch:  # last access beside the object; a failure only makes it look older
            with contextlib.suppress(OSError):
                os.utime(self._index_path(key), (now, now))
        return art, self._data_path(art.digest)

    def _adopt(self, key: str) -> Artifact | None:
        """An entry another process wrote into this folder (an import, another worker)."""
        found = self._load_index(self._index_path(key))
        if found is None or found[0].key != key:
            return None
        art, last = found
        self._remember(art)
        self._access[key] = last
        self._evict()
        return self._index.get(key)

    @contextlib.contextmanager
    def pinned(self, key: str) -> Iterator[None]:
        """While inside, the bytes of `key` are not evicted (a client is reading them)."""
        with self._lock:
            art = self._index.get(key)
            digest = art.digest if art is not None else None
            if digest is not None:
                self._pins[digest] = self._pins.get(digest, 0) + 1
        try:
            yield
        finally:
            if digest is not None:
                with self._lock:
                    left = self._pins.get(digest, 1) - 1
                    if left > 0:
                        self._pins[digest] = left
                    else:
                        self._pins.pop(digest, None)

    def retention(self, budget: int, *, min_idle: float) -> Retention:
        """What `gc` would remove to fit `budget` bytes (nothing used within `min_idle`
        seconds, nothing being served)."""
        with self._lock:
            held = [
                Held(k, a.digest, a.size, self._access.get(k, a.stored))
                for k, a in self._index.items()
            ]
            pins = set(self._pins)
        return choose_evictions(held, budget, self._clock(), min_idle=min_idle, pinned=pins)

    def gc(self, budget: int, *, min_idle: float, apply: bool) -> Retention:
        """Remove what `retention` chooses (with `apply`; else only report it). Blocking."""
        plan = self.retention(budget, min_idle=min_idle)
        if apply:
            with self._lock:
                for key in plan.evict:
                    art = self._index.get(key)
                    if art is not None and art.digest not in self._pins:
                        self._forget(key)
                        self.evictions += 1
        return plan

    def __len__(self) -> int:
        return len(self._index)

    # ---------------------------------------------------------------- room

    def reserve(self, size: int) -> bool:
        """Set `size` bytes aside for a spool, evicting the least recently used artifacts
        to make room; False when even an empty store could not hold it beside the other
        spools."""
        with self._lock:
            if self.reserved + size > self.budget:
                return False
            self.reserved += size
            self._evict()
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self.reserved -= size

    # ---------------------------------------------------------------- writing

    def spool(self, reservation: Reservation | None = None) -> Spool:
        """A new file in `tmp/` (named after this process, so a later start knows it is
        an orphan once this process is gone)."""
        self._seq += 1
        name = f"{os.getpid()}-{self._seq}-{time.monotonic_ns()}"
        return Spool(
            self.root / "tmp" / name, reservation=reservation, health=self.health, tier="disk"
        )

    async def commit(
        self,
        spool: Spool,
        key: str,
        *,
        content_type: str | None,
        upstream: str,
        module: str | None,
        expected_size: int | None,
        checked: bool = False,
    ) -> Artifact | None:
        """Move a complete spool into the store; None (and nothing kept) if it cannot be:
        a failed write, a size other than announced, no room. Never raises."""
        return await asyncio.to_thread(
            self.keep,
            spool,
            key,
            content_type=content_type,
            upstream=upstream,
            module=module,
            expected_size=expected_size,
            checked=checked,
        )

    async def commit_checked(self, spool: Spool, key: str, meta: ArtifactMeta) -> Artifact | None:
        """Keep a spool of checked bytes (by Go's rules, or as published after them) as
        `meta` describes them: nothing is kept (and what `key` had stays) unless its size
        and sha256 are meta's."""
        if spool.size != meta.size or spool.digest != meta.sha256:
            log.info("artifact store: not keeping %s: not the bytes that were checked", key)
            spool.discard()
            return None
        return await self.commit(
            spool,
            key,
            content_type=meta.content_type,
            upstream=meta.upstream,
            module=meta.module,
            expected_size=meta.size,
            checked=True,
        )

    def keep(
        self,
        spool: Spool,
        key: str,
        *,
        content_type: str | None,
        upstream: str,
        module: str | None,
        expected_size: int | None,
        checked: bool = False,
    ) -> Artifact | None:
        """`commit` for a caller already in a thread (an import). Never raises."""
        try:
            art = self._commit(spool, key, content_type, upstream, module, expected_size, checked)
        except OSError as exc:
            self.health.failed("disk", "keeping an artifact", exc)
            spool.discard()
            return None
        if art is not None:
            self.health.ok("disk")
        return art

    def _commit(
        self,
        spool: Spool,
        key: str,
        content_type: str | None,
        upstream: str,
        module: str | None,
        expected_size: int | None,
        checked: bool,
    ) -> Artifact | None:
        spool.close(sync=True)
        problem = None
        if spool.failed:
            problem = "write failed"
        elif expected_size is not None and spool.size != expected_size:
            problem = f"{spool.size} bytes, {expected_size} announced"
        elif spool.size > self.budget:
            problem = "larger than the whole store"
        if problem is not None:
            log.info("artifact store: not keeping %s: %s", key, problem)
            spool.discard()
            return None
        digest = spool.digest
        target = self._data_path(digest)
        art = Artifact(
            key, digest, spool.size, content_type, upstream, self._clock(), module, checked
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:  # bookkeeping only: no fsync while requests may wait for it
            # The old mapping goes first: its bytes may be these very bytes (a key
            # committed twice), which must not be removed after the new file is in place.
            self._forget(key)
            os.replace(spool.path, target)
            spool.release()  # its room is now the artifact's
            self._remember(art)
            self._access[key] = art.stored
            self._evict()
        _fsync_dir(target.parent)
        self._write_index(art)
        return art

    async def put_bytes(
        self, key: str, body: bytes, *, content_type: str | None, upstream: str, module: str | None
    ) -> Artifact | None:
        if not self.reserve(len(body)):
            return None
        spool = self.spool(Reservation(self, len(body)))
        await spool.write(body)
        return await self.commit(
            spool,
            key,
            content_type=content_type,
            upstream=upstream,
            module=module,
            expected_size=len(body),
        )

    def _write_index(self, art: Artifact) -> None:
        path = self._index_path(art.key)
        tmp = self.root / "tmp" / f"{os.getpid()}-index-{threading.get_ident()}-{path.name}"
        with open(tmp, "w") as fh:
            json.dump(asdict(art), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.utime(tmp, (art.stored, art.stored))  # its last access: now, by the store's clock
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    # ---------------------------------------------------------------- bookkeeping

    def _remember(self, art: Artifact) -> None:
        self._index[art.key] = art
        users = self._users.get(art.digest, 0)
        if users == 0:
            self.used_bytes += art.size
        self._users[art.digest] = users + 1

    def forget(self, key: str) -> None:
        """Drop `key` from the index (and its bytes when no other key uses them)."""
        with self._lock:
            self._forget(key)

    def _forget(self, key: str) -> None:
        art = self._index.pop(key, None)
        self._access.pop(key, None)
        if art is None:
            return
        with contextlib.suppress(OSError):
            self._index_path(key).unlink()
        users = self._users.get(art.digest, 1) - 1
        if users <= 0:
            self._users.pop(art.digest, None)
            self.used_bytes -= art.size
            with contextlib.suppress(OSError):
                self._data_path(art.digest).unlink()
        else:
            self._users[art.digest] = users

    def drop_upstream(self, upstream: str) -> int:
        """Forget every artifact an upstream served (a rolled-back mirror's). Blocking."""
        with self._lock:
            keys = [k for k, art in self._index.items() if art.upstream == upstream]
            for key in keys:
                self._forget(key)
        return len(keys)

    def _evict(self) -> None:
        """Least recently used first, never bytes being served (the store may then stay
        above its budget by what its clients are reading, until they are done)."""
        while self.used_bytes + self.reserved > self.budget and self._index:
            oldest = next((k for k, a in self._index.items() if a.digest not in self._pins), None)
            if oldest is None:
                return
            self._forget(oldest)
            self.evictions += 1

    def _data_path(self, digest: str) -> Path:
        return self.root / "data" / digest[:2] / digest

    def _index_path(self, key: str) -> Path:
        return self.root / "index" / (hashlib.sha256(key.encode()).hexdigest() + ".json")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _usable(art: Artifact) -> bool:
    """Whether a kept artifact may be served: zips only once checked by Go's rules."""
    return art.checked or not art.key.endswith(".zip")


def owner_alive(name: str) -> bool:
    """Whether the process whose pid starts `name` (``PID-...``) still runs."""
    head = name.split("-", 1)[0]
    if not head.isdigit():
        return False
    pid = int(head)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(folder: Path) -> int:
    """Remove what processes that are gone left in `folder` (spools, index temp files):
    a kill -9 leaves them behind, a later start cleans up. Blocking."""
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for leftover in folder.iterdir():
            if owner_alive(leftover.name):
                continue
            with contextlib.suppress(OSError):
                if leftover.is_dir():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink()
                removed += 1
    return removed
