"""The local artifact store: immutable answers on disk, content-addressed, crash-safe.

Layout under the store's folder:

    data/ab/abcdef...   the bytes, named by their sha256 (shared by keys with equal bytes)
    index/<sha256 of key>.json   what a key maps to (data digest, size, type, origin)
    tmp/                spool files being written; emptied at start

A body is written to `tmp/`, checked (length as announced, a well-formed module
zip within Go's limits), fsynced, renamed into `data/`, and only then indexed
(again temp file + rename). A process killed at any point leaves either no
index entry or a complete one, never a partial artifact that is later served.
Eviction is least-recently-used under a byte budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("goproxy_router.store")

MAX_ZIP = 500 << 20


@dataclass(frozen=True, slots=True)
class Artifact:
    key: str
    digest: str
    size: int
    content_type: str | None
    upstream: str
    stored: float
    module: str | None


def check_module_zip(path: Path, module: str, version: str) -> str | None:
    """Why `path` is not a well-formed zip for module@version (None when it is)."""
    prefix = f"{module}@{version}/"
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return f"not a zip file: {exc}"
    if not infos:
        return "empty zip"
    total = 0
    for info in infos:
        if not info.filename.startswith(prefix) or info.filename == prefix:
            return f"unexpected file {info.filename!r} (entries must start with {prefix!r})"
        total += info.file_size
        if total > MAX_ZIP:
            return "uncompressed size exceeds 500 MiB"
    return None


class Spool:
    """A body being written to the store's tmp folder; hashed as it is written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._sha = hashlib.sha256()
        self.size = 0
        self.failed = False
        self._synced = False

    def _write(self, chunk: bytes) -> None:
        self._fh.write(chunk)
        self._sha.update(chunk)

    async def write(self, chunk: bytes) -> None:
        if self.failed:
            return
        try:
            await asyncio.to_thread(self._write, chunk)
            self.size += len(chunk)
        except OSError as exc:
            log.warning("artifact spool write failed: %s", exc)
            self.failed = True

    @property
    def digest(self) -> str:
        return self._sha.hexdigest()

    def close(self, *, sync: bool) -> None:
        """Close the file; with `sync`, its bytes are on disk first (even when an earlier
        close did not sync: a verified zip is closed to be hashed, then kept)."""
        if not self._fh.closed:
            if sync and not self.failed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._synced = True
            self._fh.close()
        elif sync and not self.failed and not self._synced:
            with self.path.open("rb") as fh:
                os.fsync(fh.fileno())
            self._synced = True

    def discard(self) -> None:
        self.close(sync=False)
        with contextlib.suppress(OSError):
            self.path.unlink()


class ArtifactStore:
    """Immutable artifacts on local disk, bounded in bytes, surviving restarts."""

    def __init__(self, root: Path, budget: int, *, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.budget = budget
        self._clock = clock
        self._index: OrderedDict[str, Artifact] = OrderedDict()
        self._users: dict[str, int] = {}  # digest -> how many keys use it
        self.used_bytes = 0
        self._lock = threading.RLock()  # commits run in threads; bookkeeping is shared
        self.evictions = 0
        self._seq = 0

    # ---------------------------------------------------------------- startup (blocking)

    def open(self) -> None:
        """Create the layout, drop leftovers of a crash, load the index. Blocking: run in a
        thread at startup."""
        for sub in ("data", "index", "tmp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for leftover in (self.root / "tmp").iterdir():
            with contextlib.suppress(OSError):
                leftover.unlink()
        loaded = []
        for path in (self.root / "index").glob("*.json"):
            try:
                art = Artifact(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            if self._data_path(art.digest).is_file():
                loaded.append(art)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        for art in sorted(loaded, key=lambda a: a.stored):
            self._remember(art)
        self._evict()

    # ---------------------------------------------------------------- lookups

    def get(self, key: str) -> tuple[Artifact, Path] | None:
        with self._lock:
            art = self._index.get(key)
            if art is None:
                return None
            self._index.move_to_end(key)
        return art, self._data_path(art.digest)

    def __len__(self) -> int:
        return len(self._index)

    # ---------------------------------------------------------------- writing

    def spool(self) -> Spool:
        self._seq += 1
        return Spool(self.root / "tmp" / f"{os.getpid()}-{self._seq}-{time.monotonic_ns()}")

    async def commit(
        self,
        spool: Spool,
        key: str,
        *,
        content_type: str | None,
        upstream: str,
        module: str | None,
        expected_size: int | None,
        check: Callable[[Path], str | None] | None = None,
    ) -> Artifact | None:
        """Move a complete, checked spool into the store; None (and nothing kept) if not."""
        try:
            return await asyncio.to_thread(
                self._commit, spool, key, content_type, upstream, module, expected_size, check
            )
        except OSError as exc:
            log.warning("artifact store: cannot keep %s: %s", key, exc)
            spool.discard()
            return None

    def _commit(
        self,
        spool: Spool,
        key: str,
        content_type: str | None,
        upstream: str,
        module: str | None,
        expected_size: int | None,
        check: Callable[[Path], str | None] | None,
    ) -> Artifact | None:
        spool.close(sync=True)
        problem = None
        if spool.failed:
            problem = "write failed"
        elif expected_size is not None and spool.size != expected_size:
            problem = f"{spool.size} bytes, {expected_size} announced"
        elif spool.size > self.budget:
            problem = "larger than the whole store"
        elif check is not None:
            problem = check(spool.path)
        if problem is not None:
            log.warning("artifact store: not keeping %s: %s", key, problem)
            spool.discard()
            return None
        digest = spool.digest
        target = self._data_path(digest)
        art = Artifact(key, digest, spool.size, content_type, upstream, self._clock(), module)
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:  # bookkeeping only: no fsync while requests may wait for it
            # The old mapping goes first: its bytes may be these very bytes (a key
            # committed twice), which must not be removed after the new file is in place.
            self._forget(key)
            os.replace(spool.path, target)
            self._remember(art)
            self._evict()
        _fsync_dir(target.parent)
        self._write_index(art)
        return art

    async def put_bytes(
        self, key: str, body: bytes, *, content_type: str | None, upstream: str, module: str | None
    ) -> Artifact | None:
        spool = self.spool()
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
        tmp = self.root / "tmp" / f"{path.name}.{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "w") as fh:
            json.dump(asdict(art), fh)
            fh.flush()
            os.fsync(fh.fileno())
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
        while self.used_bytes > self.budget and self._index:
            oldest = next(iter(self._index))
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
