"""Air-gap bundles: `goproxy-router export go.sum OUT.tar` and `goproxy-router import OUT.tar`.

A bundle is a plain tar:

    manifest.json               first: {"format", "version", "files": [{"path", "module",
                                "version", "file", "size", "sha256", "h1"?}, ...]}
    files/<escaped module>/@v/<escaped version>.<info|mod|zip>

Export fetches every needed file (the same files as `warm`, see `router.warming`) through a
gateway (`--gateway URL`, with the tenant's credentials), so the tenant's rules, checksum
verification and policy apply to what leaves; a file whose `h1:` hash differs from the go.sum
line is refused. Nothing is written unless every file was fetched: a bundle that lacks a file
would only fail later, on the far side of the air gap. The tar is written to a temporary name
and renamed into place.

Import checks the whole bundle before it keeps anything: every member's name must be one
the manifest lists (`files/...`, no links, no absolute or `..` names, no duplicates), its
size and sha256 as listed, a zip valid by Go's rules and its `h1:` as listed, a go.mod its
`h1:` as listed, an .info a JSON object naming its version, and no listed file may be
missing. One problem and nothing is imported (every problem is reported). Then each file is
kept in the rules' `cache.dir` under the key the rules give it for the tenant (the key a
gateway over that folder looks for); a running gateway finds them on its next miss. A file
the rules verify against a checksum database is not imported (the check cannot be made
offline): it is reported as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp

from router.cache.disk import ArtifactStore, Reservation, Spool, check_module_zip
from router.core.dirhash import DirHashError, hash_go_mod, hash_zip_file
from router.core.errors import ModuleError
from router.core.model import Rules
from router.core.modzip import MAX_ZIP
from router.core.requirements import Requirement
from router.warming import client_timeout, file_path, files_of

FORMAT = "goproxy-router-bundle"
VERSION = 1
MANIFEST = "manifest.json"
MAX_MANIFEST = 16 << 20
MAX_META = 16 << 20  # an .info or .mod larger than this is not one
CONTENT_TYPES = {"info": "application/json", "mod": "text/plain; charset=utf-8"}
CONTENT_TYPES["zip"] = "application/zip"
MAX_PROBLEMS = 100  # a bundle of junk is not read to its end
UPSTREAM = "bundle"  # the origin recorded for imported artifacts


class BundleError(Exception):
    """The bundle cannot be made or read; the message says why in plain words."""


@dataclass(frozen=True, slots=True)
class Entry:
    path: str  # escaped, without a leading slash: example.com/m/@v/v1.0.0.zip
    module: str
    version: str
    file: str
    size: int
    sha256: str
    h1: str | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "path": self.path,
            "module": self.module,
            "version": self.version,
            "file": self.file,
            "size": self.size,
            "sha256": self.sha256,
        }
        if self.h1:
            doc["h1"] = self.h1
        return doc


# ---------------------------------------------------------------------------- export


@dataclass(slots=True)
class ExportReport:
    entries: list[Entry] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def lines(self, out: Path) -> list[str]:
        if self.problems:
            return [*self.problems, f"export: {len(self.problems)} problem(s); {out} not written"]
        size = sum(e.size for e in self.entries)
        return [f"export: {len(self.entries)} file(s), {size} bytes, written to {out}"]


async def export_bundle(
    gateway: str,
    reqs: Sequence[Requirement],
    hashes: dict[tuple[str, str, str], str],
    out: Path,
    *,
    headers: dict[str, str] | None = None,
    jobs: int = 8,
) -> ExportReport:
    """Fetch every needed file through `gateway` and write the bundle to `out` (only when
    every file was fetched and matched its go.sum hash)."""
    report = ExportReport()
    base = gateway.rstrip("/")
    slots = asyncio.Semaphore(max(1, jobs))
    out.parent.mkdir(parents=True, exist_ok=True)
    local: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent) as tmp:
        async with aiohttp.ClientSession(timeout=client_timeout()) as session:

            async def one(req: Requirement, ext: str, dest: Path) -> None:
                path = file_path(req.module, req.version, ext)
                async with slots:
                    problem = await _download(session, base + path, headers or {}, dest)
                where = f"{req.module}@{req.version} .{ext}"
                if problem is not None:
                    report.problems.append(f"{where}: {problem}")
                    return
                h1 = hashes.get((req.module, req.version, ext))
                problem = await asyncio.to_thread(
                    _check_file, dest, req.module, req.version, ext, h1
                )
                if problem is not None:
                    report.problems.append(f"{where}: {problem}")
                    return
                local[path[1:]] = dest
                report.entries.append(
                    Entry(
                        path[1:],
                        req.module,
                        req.version,
                        ext,
                        dest.stat().st_size,
                        await asyncio.to_thread(_sha256_file, dest),
                        h1,
                    )
                )

            work = []
            for i, req in enumerate(reqs):
                for ext in files_of(req):
                    work.append(one(req, ext, Path(tmp) / f"{i}.{ext}"))
            await asyncio.gather(*work)
        if report.problems:
            report.problems.sort()
            return report
        report.entries.sort(key=lambda e: e.path)
        await asyncio.to_thread(_write_tar, out, report.entries, local)
    return report


async def _download(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], dest: Path
) -> str | None:
    """None once the file is in `dest`; else why not."""
    try:
        async with session.get(url, headers=headers) as resp:
            if resp.status != 200:
                text = (await resp.content.read(500)).decode("utf-8", "replace").strip()
                return (
                    f"{resp.status} {text.splitlines()[0] if text else resp.reason or ''}".strip()
                )
            size = 0
            with dest.open("wb") as fh:
                async for chunk in resp.content.iter_chunked(256 << 10):
                    size += len(chunk)
                    if size > MAX_ZIP:
                        return f"larger than {MAX_ZIP >> 20} MiB, the most a module zip may be"
                    fh.write(chunk)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}".rstrip(": ")
    return None


def _write_tar(out: Path, entries: Sequence[Entry], local: dict[str, Path]) -> None:
    manifest = json.dumps(
        {"format": FORMAT, "version": VERSION, "files": [e.as_json() for e in entries]},
        indent=1,
    ).encode()
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(manifest), 0o644
            tar.addfile(info, io.BytesIO(manifest))
            for e in entries:
                info = tarfile.TarInfo(f"files/{e.path}")
                info.size, info.mode = e.size, 0o644
                with local[e.path].open("rb") as fh:
                    tar.addfile(info, fh)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
    return sha.hexdigest()


def _check_file(path: Path, module: str, version: str, ext: str, h1: str | None) -> str | None:
    """Why a downloaded or imported file is not what it must be (None when it is)."""
    try:
        if ext == "zip":
            problem = check_module_zip(path, module, version)
            if problem is not None:
                return f"not a valid module zip: {problem.message}"
            if h1 is not None:
                with path.open("rb") as fh:
                    got = hash_zip_file(fh, f"{module}@{version}/")
                if got != h1:
                    return f"zip hash {got}, go.sum says {h1}"
            return None
        if path.stat().st_size > MAX_META:
            return f"larger than {MAX_META >> 20} MiB"
        data = path.read_bytes()
        if ext == "mod":
            if h1 is not None and hash_go_mod(data) != h1:
                return f"go.mod hash {hash_go_mod(data)}, go.sum says {h1}"
            return None
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("Version") != version:
            return f"an .info that does not name version {version}"
    except (OSError, ValueError, DirHashError) as exc:
        return f"unreadable: {exc}"
    return None


# ---------------------------------------------------------------------------- import


@dataclass(slots=True)
class ImportReport:
    imported: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # why a listed file was not kept
    problems: list[str] = field(default_factory=list)  # any one: nothing was kept

    def lines(self) -> list[str]:
        if self.problems:
            return [*self.problems, f"import: {len(self.problems)} problem(s); nothing imported"]
        size = sum(e.size for e in self.imported)
        out = list(self.skipped)
        out.append(
            f"import: {len(self.imported)} file(s), {size} bytes imported"
            + (f", {len(self.skipped)} skipped" if self.skipped else "")
        )
        return out


def read_manifest(tar: tarfile.TarFile) -> list[Entry]:
    """The manifest, the bundle's first member; BundleError when missing or malformed."""
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise BundleError(f"not a bundle: its first member is not {MANIFEST}")
    if first.size > MAX_MANIFEST:
        raise BundleError(f"{MANIFEST} is larger than {MAX_MANIFEST >> 20} MiB")
    fh = tar.extractfile(first)
    try:
        doc = json.loads(fh.read() if fh is not None else b"")
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise BundleError(f"not a {FORMAT} version {VERSION} manifest")
        entries = [_entry(item) for item in doc["files"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{MANIFEST} is malformed: {exc}") from None
    paths = [e.path for e in entries]
    if len(set(paths)) != len(paths):
        raise BundleError(f"{MANIFEST} lists a file twice")
    return entries


def _entry(item: Any) -> Entry:
    module, version, ext = item["module"], item["version"], item["file"]
    if ext not in CONTENT_TYPES or not isinstance(module, str) or not isinstance(version, str):
        raise ValueError(f"bad entry {item!r}")
    try:
        path = file_path(module, version, ext)[1:]
    except ModuleError as exc:
        raise ValueError(f"bad module version {module}@{version}: {exc}") from None
    if item["path"] != path:
        raise ValueError(f"path {item['path']!r} is not {path!r}")
    size, sha = item["size"], item["sha256"]
    if not isinstance(size, int) or size < 0 or not isinstance(sha, str) or len(sha) != 64:
        raise ValueError(f"bad size or sha256 for {path}")
    h1 = item.get("h1")
    if h1 is not None and not isinstance(h1, str):
        raise ValueError(f"bad h1 for {path}")
    return Entry(path, module, version, ext, size, sha.lower(), h1)


def member_problem(member: tarfile.TarInfo, listed: dict[str, Entry]) -> str | None:
    """Why a tar member may not be read into the store (None when it may)."""
    name = member.name
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or "\\" in name:
        return f"member {name!r}: a path outside the bundle"
    if not member.isfile():
        return f"member {name!r}: not a regular file (links and devices are refused)"
    if not name.startswith("files/") or name[len("files/") :] not in listed:
        return f"member {name!r}: not listed in {MANIFEST}"
    entry = listed[name[len("files/") :]]
    if member.size != entry.size:
        return f"{entry.path}: {member.size} bytes, the manifest says {entry.size}"
    return None


def import_bundle(
    bundle: Path, store: ArtifactStore, rules: Rules, *, tenant: str | None, token: str | None
) -> ImportReport:
    """Check the whole bundle, then keep its files in `store` (all, or none). Blocking."""
    report = ImportReport()
    spools: list[tuple[Entry, Spool]] = []
    try:
        with tarfile.open(bundle, "r:") as tar:
            _check_members(tar, store, report, spools)
    except (BundleError, tarfile.TarError, OSError) as exc:
        report.problems.append(
            str(exc) if isinstance(exc, BundleError) else f"cannot read {bundle}: {exc}"
        )
    if report.problems:
        for _, spool in spools:
            spool.discard()
        return report
    for entry, spool in spools:
        key, why = _key_for(rules, entry, tenant, token)
        if key is None:
            report.skipped.append(f"{entry.module}@{entry.version} .{entry.file}: skipped: {why}")
            spool.discard()
            continue
        art = store.keep(
            spool,
            key,
            content_type=CONTENT_TYPES[entry.file],
            upstream=UPSTREAM,
            module=entry.module,
            expected_size=entry.size,
            checked=entry.file == "zip",  # checked by Go's rules above
        )
        if art is None:
            report.skipped.append(f"{entry.path}: skipped: the store did not keep it (no room)")
        else:
            report.imported.append(entry)
    return report


def _check_members(
    tar: tarfile.TarFile,
    store: ArtifactStore,
    report: ImportReport,
    spools: list[tuple[Entry, Spool]],
) -> None:
    """Every member read into a spool and checked; problems go to the report."""
    entries = read_manifest(tar)
    listed = {e.path: e for e in entries}
    seen: set[str] = set()
    while (member := tar.next()) is not None:  # after the manifest
        if len(report.problems) >= MAX_PROBLEMS:
            report.problems.append(f"... stopped after {MAX_PROBLEMS} problems")
            return
        problem = member_problem(member, listed)
        path = member.name[len("files/") :]
        if problem is None and path in seen:
            problem = f"member {member.name!r}: twice in the bundle"
        if problem is not None:
            report.problems.append(problem)
            continue
        seen.add(path)
        entry = listed[path]
        spool, problem = _spool_member(tar, member, entry, store)
        if spool is not None:
            spools.append((entry, spool))
        if problem is not None:
            report.problems.append(f"{entry.path}: {problem}")
    report.problems.extend(f"{p}: listed but not in the bundle" for p in listed if p not in seen)


def _spool_member(
    tar: tarfile.TarFile, member: tarfile.TarInfo, entry: Entry, store: ArtifactStore
) -> tuple[Spool | None, str | None]:
    """The member copied into a store spool and checked: (spool, problem or None)."""
    if not store.reserve(entry.size):
        return None, "larger than the room left in the store"
    spool = store.spool(Reservation(store, entry.size))
    fh = tar.extractfile(member)
    if fh is None:
        spool.discard()
        return None, "unreadable member"
    try:
        with fh:
            while chunk := fh.read(1 << 20):
                spool.write_now(chunk)
    except (OSError, tarfile.TarError, EOFError) as exc:
        return spool, f"unreadable member: {exc}"
    spool.close(sync=False)
    if spool.failed:
        return spool, "could not be written to the store's disk"
    if spool.size != entry.size or spool.digest != entry.sha256:
        return spool, "sha256 differs from the manifest"
    problem = _check_file(spool.path, entry.module, entry.version, entry.file, entry.h1)
    return spool, problem


def _key_for(
    rules: Rules, entry: Entry, tenant: str | None, token: str | None
) -> tuple[str | None, str]:
    """The store key a gateway with these rules uses for the file, or None and why not."""
    from router.explain import Question, explain

    view = explain(
        rules,
        Question(
            module=entry.module, version=entry.version, kind=entry.file, tenant=tenant, token=token
        ),
    )
    answer = view.get("answer")
    if answer is not None:
        return None, f"{answer['status']} {answer['reason']}"
    if view.get("verify_checksums"):
        return None, "the rules verify it against a checksum database, which an import cannot reach"
    key = view.get("cache_key")
    return (key, "") if isinstance(key, str) else (None, "no cache key")
