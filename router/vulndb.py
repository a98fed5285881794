"""An offline Go vulnerability database, in the layout `govulncheck -db file://DIR` reads.

    DIR/index/db.json        {"modified": "2024-05-01T00:00:00Z"}
    DIR/index/modules.json   [{"path": "example.com/m", "vulns": [{"id": "GO-2024-1234", ...}]}]
    DIR/ID/GO-2024-1234.json one OSV entry

(`index/vulns.json` exists too; it is not needed.) A mirror of vuln.go.dev, or
an internal database in the same format, is copied there by whatever means;
the gateway only reads it.

Loading reads every entry that `index/modules.json` names, skips withdrawn
ones and keeps, per module, the SEMVER ranges of the entries' `affected`
items for the Go ecosystem. Lookups are then in memory, never on disk.

Reloading: `refresh()` stats `index/db.json` and loads the database again when
its modification time, size or inode changed. Call it from a background task
(`run`), not from a request.

Failing: a database that cannot be read when first loaded (missing folder,
bad JSON, an entry named in the index but absent) answers
`DatabaseUnavailable`, and the policy refuses every version (fail closed).
Once a database has loaded, a reload that fails keeps the last good one (a
copy in progress must not refuse everything) and `error` says why; the next
change is tried again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from router.core.policy import Advisory, DatabaseUnavailable, Event

log = logging.getLogger("goproxy_router.vulndb")

MAX_INDEX_BYTES = 64 << 20
MAX_ENTRY_BYTES = 4 << 20
_EVENT_KINDS = ("introduced", "fixed", "last_affected")


class VulnDBError(Exception):
    """The database cannot be read; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One loaded database."""

    modified: str
    by_module: Mapping[str, tuple[Advisory, ...]]
    entries: int
    withdrawn: int

    def advisories(self, module: str) -> tuple[Advisory, ...]:
        return self.by_module.get(module, ())


def _read_json(path: Path, limit: int) -> Any:
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise VulnDBError(f"{path}: no such file") from None
    except OSError as exc:
        raise VulnDBError(f"{path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise VulnDBError(f"{path}: larger than {limit >> 20} MiB")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise VulnDBError(f"{path}: not JSON ({exc})") from None


def _events(raw: Any, where: str) -> tuple[Event, ...]:
    if not isinstance(raw, list):
        raise VulnDBError(f"{where}: events is not a list")
    out: list[Event] = []
    for item in raw:
        if not isinstance(item, dict):
            raise VulnDBError(f"{where}: an event is not an object")
        for kind in _EVENT_KINDS:
            value = item.get(kind)
            if isinstance(value, str):
                out.append(Event(kind, value))  # type: ignore[arg-type]
    return tuple(out)


def _affected(entry: Mapping[str, Any], where: str) -> dict[str, list[Any]]:
    """module -> (ranges, versions) pieces of the entry's Go `affected` items."""
    out: dict[str, list[Any]] = {}
    affected = entry.get("affected") or []
    if not isinstance(affected, list):
        raise VulnDBError(f"{where}: affected is not a list")
    for item in affected:
        package = item.get("package") if isinstance(item, dict) else None
        if not isinstance(package, dict) or package.get("ecosystem", "Go") != "Go":
            continue
        name = package.get("name")
        if not isinstance(name, str):
            raise VulnDBError(f"{where}: an affected package has no name")
        ranges = [
            _events(r.get("events"), where)
            for r in item.get("ranges") or []
            if isinstance(r, dict) and r.get("type") == "SEMVER"
        ]
        versions = [v for v in item.get("versions") or [] if isinstance(v, str)]
        if not ranges and not versions:
            ranges = [(Event("introduced", "0"),)]  # no range given: every version
        slot = out.setdefault(name, [[], []])
        slot[0].extend(ranges)
        slot[1].extend(versions)
    return out


def _advisories(entry: Mapping[str, Any], where: str) -> list[Advisory]:
    vid = entry.get("id")
    if not isinstance(vid, str):
        raise VulnDBError(f"{where}: the entry has no id")
    aliases = tuple(a for a in entry.get("aliases") or [] if isinstance(a, str))
    raw_summary = entry.get("summary")
    summary = raw_summary if isinstance(raw_summary, str) else ""
    return [
        Advisory(vid, module, tuple(ranges), tuple(versions), aliases, summary)
        for module, (ranges, versions) in _affected(entry, where).items()
    ]


def _ids_in_index(modules: Any, where: Path) -> set[str]:
    if not isinstance(modules, list):
        raise VulnDBError(f"{where}: not a list of modules")
    ids: set[str] = set()
    for item in modules:
        vulns = item.get("vulns") if isinstance(item, dict) else None
        if not isinstance(vulns, list):
            raise VulnDBError(f"{where}: a module has no vulns list")
        ids.update(v["id"] for v in vulns if isinstance(v, dict) and isinstance(v.get("id"), str))
    return ids


def _safe_id(vid: str, where: Path) -> str:
    if not vid or "/" in vid or "\\" in vid or vid.startswith("."):
        raise VulnDBError(f"{where}: bad entry id {vid!r}")
    return vid


def load(root: str | os.PathLike[str]) -> Snapshot:
    """Read a whole database; VulnDBError names the first problem."""
    base = Path(root)
    meta = _read_json(base / "index" / "db.json", MAX_INDEX_BYTES)
    if not isinstance(meta, dict) or not isinstance(meta.get("modified"), str):
        raise VulnDBError(f"{base / 'index' / 'db.json'}: no modified time")
    index_path = base / "index" / "modules.json"
    ids = _ids_in_index(_read_json(index_path, MAX_INDEX_BYTES), index_path)
    by_module: dict[str, list[Advisory]] = {}
    withdrawn = 0
    for vid in sorted(ids):
        path = base / "ID" / f"{_safe_id(vid, index_path)}.json"
        entry = _read_json(path, MAX_ENTRY_BYTES)
        if not isinstance(entry, dict):
            raise VulnDBError(f"{path}: not an OSV entry")
        if entry.get("withdrawn"):
            withdrawn += 1
            continue
        for advisory in _advisories(entry, str(path)):
            by_module.setdefault(advisory.module, []).append(advisory)
    frozen = MappingProxyType({m: tuple(a) for m, a in by_module.items()})
    return Snapshot(meta["modified"], frozen, len(ids), withdrawn)


def _signature(root: Path) -> tuple[int, int, int] | None:
    """What changes when index/db.json is rewritten (None: it cannot be stat'ed)."""
    try:
        st = (root / "index" / "db.json").stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


@dataclass(slots=True)
class VulnDatabase:
    """One database folder: the last good snapshot, and why the last load failed."""

    root: Path
    snapshot: Snapshot | None = None
    error: str = ""
    _seen: tuple[int, int, int] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def lookup(self, module: str) -> tuple[Advisory, ...] | DatabaseUnavailable:
        """The advisories for `module` (in memory; no I/O)."""
        snapshot = self.snapshot
        if snapshot is None:
            return DatabaseUnavailable(str(self.root), self.error or "not loaded yet")
        return snapshot.advisories(module)

    def refresh(self) -> bool:
        """Load the database if index/db.json changed since the last look; True when a
        new snapshot was loaded. Blocking: run it in a thread."""
        with self._lock:
            signature = _signature(self.root)
            if signature is not None and signature == self._seen:
                return False
            self._seen = signature
            try:
                snapshot = load(self.root)
            except VulnDBError as exc:
                self.error = str(exc)
                if self.snapshot is None:
                    log.error("vulnerability database %s cannot be read: %s", self.root, exc)
                else:
                    log.warning(
                        "vulnerability database %s: reload failed, keeping %s: %s",
                        self.root,
                        self.snapshot.modified,
                        exc,
                    )
                return False
            self.snapshot, self.error = snapshot, ""
            log.info(
                "vulnerability database %s loaded: modified %s, %d entries (%d withdrawn)",
                self.root,
                snapshot.modified,
                snapshot.entries,
                snapshot.withdrawn,
            )
            return True


class VulnDatabases:
    """The databases the rules name, one handle per folder, kept across rules reloads
    (a folder that stays named keeps its snapshot)."""

    def __init__(self) -> None:
        self._by_root: dict[str, VulnDatabase] = {}

    def get(self, root: str) -> VulnDatabase:
        db = self._by_root.get(root)
        if db is None:
            db = self._by_root[root] = VulnDatabase(Path(root))
        return db

    def keep_only(self, roots: set[str]) -> None:
        """Forget the databases the rules no longer name."""
        for root in list(self._by_root):
            if root not in roots:
                del self._by_root[root]

    def all(self) -> list[VulnDatabase]:
        return list(self._by_root.values())

    def refresh_all(self) -> None:
        for db in self.all():
            db.refresh()

    async def run(
        self, interval: float = 5.0, sleep: Callable[[float], Any] = asyncio.sleep
    ) -> None:
        """Check every database for changes every `interval` seconds, forever (a cheap stat
        each; a load only when one changed), in a worker thread."""
        while True:
            await asyncio.to_thread(self.refresh_all)
            await sleep(interval)
