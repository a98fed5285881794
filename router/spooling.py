"""Bodies on disk that clients read while they are still arriving: the upstream is read
at its own pace, not the slowest client's.

A `Tee` is one upstream body and any number of readers. Its bytes go to a spool file as
they arrive (the upstream's connection is released as soon as the body is whole, however
slowly clients read it); readers follow the file with ``pread``. When there is no room to
spool (`cache.spool` full) or the disk fails mid-body, the rest of the body is handed to
the readers from a small in-memory tail instead: then the upstream is read at the pace of
the slowest reader, and the tail never holds more than `TAIL_LIMIT` bytes.

`Spools` makes the spool files: under the artifact store's `tmp/` when there is a store
(counted in its budget), else in a folder of this process under ``$TMPDIR``; a start
removes what dead processes left there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from router.cache.disk import GROW, ArtifactStore, Spool, SpoolBudget, remove_orphans
from router.cache.health import StorageHealth
from router.core.modzip import ZipProblem
from router.upstream import UpstreamAnswer, UpstreamError

log = logging.getLogger("goproxy_router.spooling")

TAIL_LIMIT = 4 << 20  # bytes of a body held in memory when it cannot be spooled
SPOOL_FOLDER = "goproxy-router-spools"


class TeeBroken(Exception):
    """The body cannot be read to its end (the upstream broke, stalled or was too big)."""


class Spools:
    """Makes spool files within one budget."""

    def __init__(
        self,
        budget: SpoolBudget,
        health: StorageHealth,
        *,
        store: ArtifactStore | None = None,
        root: Path | None = None,
    ) -> None:
        self.budget = budget
        self.health = health
        self.store = store
        self._root = root or Path(tempfile.gettempdir()) / SPOOL_FOLDER
        self._folder: Path | None = None

    def new(self, size: int | None) -> Spool | None:
        """A spool for a body of `size` bytes (None: unknown, room is taken as it grows),
        or None when the budget has no room for it."""
        reservation = self.budget.take(GROW if size is None else size)
        if reservation is None:
            return None
        if self.store is not None:
            return self.store.spool(reservation)
        folder = self._own_folder()
        if folder is None:
            reservation.release()
            return None
        return Spool(folder / uuid.uuid4().hex, reservation=reservation, health=self.health)

    def prepare(self) -> None:
        """Make this process's spool folder now, removing what dead processes left
        (blocking; at start)."""
        if self.store is None:
            self._own_folder()

    def _own_folder(self) -> Path | None:
        if self._folder is None:
            try:
                self._root.mkdir(parents=True, exist_ok=True)
                remove_orphans(self._root)
                folder = self._root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
                folder.mkdir()
            except OSError as exc:
                self.health.failed("spool", "creating the spool folder", exc)
                return None
            self._folder = folder
        return self._folder

    def close(self) -> None:
        """Remove this process's spool folder (blocking; at shutdown)."""
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


@dataclass(eq=False, slots=True)
class Reader:
    """One client reading a tee: how far it got."""

    offset: int = 0


class Tee:
    """One body, written once, read by many. See the module docstring."""

    def __init__(
        self,
        spool: Spool | None,
        *,
        expected: int | None,
        content_type: str | None,
        upstream: str,
        tail_limit: int = TAIL_LIMIT,
    ) -> None:
        self.spool = spool
        self.expected = expected
        self.content_type = content_type
        self.upstream = upstream
        self.tail_limit = tail_limit
        self.file_end = 0  # bytes readers can read from the file
        self.written = 0  # bytes received
        self.done = False
        self.error: str | None = None
        self.cause = ""  # why it broke, as an upstream error cause (timeout, truncated...)
        self.kept = False  # the file now belongs to the artifact store
        self.unreadable = False  # its file no longer reads back whole
        self.fill_seconds: float | None = None  # how long the upstream took to send it
        self.checked = asyncio.Event()  # set once the zip was checked (or cannot be)
        self.problem: ZipProblem | None = None  # why it breaks Go's rules, once checked
        self.on_close: Callable[[], None] | None = None
        self._closed = False
        self._tail: deque[tuple[int, bytes]] = deque()  # (offset, chunk), past file_end
        self._tail_bytes = 0
        self._readers: set[Reader] = set()
        self._holds = 0
        self._changed = asyncio.Event()
        self._fd: int | None = None
        if spool is not None and not spool.failed:
            try:
                self._fd = os.open(spool.path, os.O_RDONLY)
            except OSError as exc:
                log.warning("cannot read back spool %s: %s", spool.path.name, exc)
                spool.discard()
                self.spool = None

    @classmethod
    def of_file(
        cls, path: Path, size: int, *, content_type: str | None, upstream: str
    ) -> Tee | None:
        """A whole file of `size` bytes (an artifact in the store) as a finished tee; None
        if it is gone or no longer that size."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            whole = os.fstat(fd).st_size == size
        except OSError:
            whole = False
        if not whole:
            os.close(fd)
            return None
        tee = cls(None, expected=size, content_type=content_type, upstream=upstream)
        tee._fd, tee.file_end, tee.written, tee.done, tee.kept = fd, size, size, True, True
        tee.checked.set()  # the store keeps only checked zips
        return tee

    @classmethod
    def of_spool(cls, spool: Spool, *, content_type: str | None, upstream: str) -> Tee:
        """A spool already written whole (a verified or compared zip) as a finished tee."""
        tee = cls(spool, expected=spool.size, content_type=content_type, upstream=upstream)
        tee.file_end = tee.written = spool.size
        tee.done = True
        return tee

    # ------------------------------------------------------------------ writing

    async def fill(self, answer: UpstreamAnswer, limit: int, deadline: float) -> None:
        """Copy `answer`'s body in, to its end (or until nobody could use the rest)."""
        began = time.monotonic()
        try:
            async with asyncio.timeout(deadline):
                async for chunk in answer.iter_body(limit):
                    await self._take(chunk)
                    if not self._readers and not self._keepable:
                        raise TeeBroken("every client left and nothing is kept")
            if self.expected is not None and self.written != self.expected:
                raise TeeBroken("body shorter than announced")
            answer.release()
            self.done = True
            self.fill_seconds = time.monotonic() - began
        except TimeoutError:
            self._broken(answer, f"transfer exceeded {deadline:g}s", "timeout")
        except UpstreamError as exc:
            self._broken(answer, exc.reason, exc.cause)
        except TeeBroken as exc:
            self._broken(answer, str(exc), "truncated")
        except BaseException:
            self._broken(answer, "cancelled", "cancelled")
            raise
        finally:
            self._notify()

    def _broken(self, answer: UpstreamAnswer, reason: str, cause: str) -> None:
        self.error, self.cause = reason, cause
        answer.close()

    async def _take(self, chunk: bytes) -> None:
        start = self.written
        spool = self.spool
        if spool is not None and not spool.failed and self.file_end == start:
            await spool.write(chunk)
            if not spool.failed:
                self.written = self.file_end = start + len(chunk)
                self._notify()
                return
            why = "the spool budget is full" if spool.no_room else "the disk failed"
            log.info("spool of %s stopped (%s): the rest goes through memory", self.upstream, why)
        self._tail.append((start, chunk))
        self._tail_bytes += len(chunk)
        self.written = start + len(chunk)
        self._notify()
        while self._tail_bytes > self.tail_limit and self._readers:
            await self._changed.wait()  # the slowest reader sets the pace now

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ reading

    def attach(self) -> Reader | None:
        """A new reader from byte 0; None when the start is no longer to be had."""
        if self.error is not None or self._closed:
            return None
        first_in_memory = self._tail[0][0] if self._tail else self.written
        if first_in_memory > self.file_end:
            return None  # bytes between the file and the memory tail are gone
        reader = Reader()
        self._readers.add(reader)
        self._holds += 1
        return reader

    def detach(self, reader: Reader) -> None:
        if reader in self._readers:
            self._readers.discard(reader)
            self._holds -= 1
            self._trim()
            self._notify()
            self._maybe_close()

    def hold(self) -> None:
        """Keep the file while someone who will attach later (a follower) is on its way."""
        self._holds += 1

    def unhold(self) -> None:
        self._holds -= 1
        self._maybe_close()

    def file_for(self, reader: Reader) -> tuple[int, int] | None:
        """(file descriptor, end) when the next bytes for `reader` are in this tee's file
        (a stored artifact, or a spool as far as it is written): they can be sent
        without reading them."""
        if self._fd is None or reader.offset >= self.file_end:
            return None
        return self._fd, self.file_end

    async def wait(self, reader: Reader) -> None:
        """Until there is something new for `reader`: bytes, the end, or an error."""
        while (
            reader.offset >= self.file_end
            and not self._from_tail(reader.offset, 1)
            and not (self.done and reader.offset >= self.written)
            and self.error is None
        ):
            await self._changed.wait()

    async def read(self, reader: Reader, size: int) -> bytes:
        """The next bytes for `reader` (b"" at the end); TeeBroken if there is no end."""
        while True:
            off = reader.offset
            if off < self.file_end and self._fd is not None:
                data = await asyncio.to_thread(
                    os.pread, self._fd, min(size, self.file_end - off), off
                )
                if not data:
                    self.unreadable = True
                    raise TeeBroken("the file is shorter than it was")
                reader.offset += len(data)
                return data
            data = self._from_tail(off, size)
            if data:
                reader.offset += len(data)
                self._trim()
                return data
            if self.done and off >= self.written:
                return b""
            if self.error is not None:
                raise TeeBroken(self.error)
            await self._changed.wait()

    def _from_tail(self, offset: int, size: int) -> bytes:
        for start, chunk in self._tail:
            if start <= offset < start + len(chunk):
                return chunk[offset - start : offset - start + size]
        return b""

    def _trim(self) -> None:
        """Drop tail chunks every reader has passed."""
        if not self._tail:
            return
        low = min((r.offset for r in self._readers), default=self.written)
        dropped = False
        while self._tail and self._tail[0][0] + len(self._tail[0][1]) <= low:
            _, chunk = self._tail.popleft()
            self._tail_bytes -= len(chunk)
            dropped = True
        if dropped:
            self._notify()

    # ------------------------------------------------------------------ the end

    @property
    def _keepable(self) -> bool:
        spool = self.spool
        return spool is not None and not spool.failed and self.file_end == self.written

    @property
    def upstream_paced(self) -> bool:
        """Whether the body came at the upstream's pace (spooled whole), not a client's:
        only then does its transfer time say how fast the upstream is."""
        return self.done and self._keepable

    @property
    def whole_on_disk(self) -> bool:
        """The whole body is in the spool file (it can be checked and kept)."""
        return self.done and self._keepable

    def _maybe_close(self) -> None:
        if self._closed or self._holds > 0 or not (self.done or self.error is not None):
            return
        self._closed = True
        if self.on_close is not None:
            self.on_close()
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self.spool is not None and not self.kept:
            self.spool.discard()
        self._tail.clear()
        self._tail_bytes = 0
