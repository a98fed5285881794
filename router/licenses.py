"""Licence detection from a module zip, the way pkg.go.dev does it.

Which files: those at the module root (never in a subdirectory, so never under
`vendor/`) whose name, compared case-insensitively, is one pkg.go.dev reads:
LICENSE, LICENCE, COPYING, UNLICENSE and their usual variants (`LICENSE.md`,
`LICENSE-APACHE`, `MIT-LICENSE.txt`...).

What they say: `licenseclassifier`, a Python port of google/licensecheck (the
matcher pkg.go.dev itself runs), with licensecheck's 75 % coverage threshold,
so a file that is mostly something else, or a licence text with edits, is not
recognised rather than guessed at. The ids it reports are put in current SPDX
form with `license-expression` (`GPL-3.0` becomes `GPL-3.0-only`).

Bounds: a zip over 500 MiB, a zip that cannot be read, more than 16 licence
files, a licence file over 1 MiB: the licence is unknown, with the reason.
`IsolatedDetector` runs detection in a child process with a time limit and a
memory cap, recycled after a number of jobs (the matcher's memory grows with
the variety of texts it has seen).

A result is immutable for a module version: serialise it with
`Detection.to_json` and keep it (`DetectionStore` keeps it in a folder).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import hashlib
import json
import logging
import multiprocessing
import os
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from router.core.policy import LicenceFile, LicenceFindings

log = logging.getLogger("goproxy_router.licenses")

# The names pkg.go.dev looks for (internal/licenses), compared case-insensitively.
_STEMS = ("LICENSE", "LICENCE")
FILE_NAMES = frozenset(
    name.lower()
    for name in (
        "COPYING",
        "COPYING.md",
        "COPYING.markdown",
        "COPYING.txt",
        "UNLICENSE",
        "UNLICENCE",
        *(
            stem + suffix
            for stem in _STEMS
            for suffix in (
                "",
                ".md",
                ".markdown",
                ".txt",
                "-2.0.txt",
                "-APACHE",
                "-APACHE-2.0.txt",
                "-MIT",
                ".MIT",
                ".code",
                ".docs",
                ".rst",
            )
        ),
        *(
            prefix + stem + suffix
            for stem in _STEMS
            for prefix in ("MIT-", "MIT_")
            for suffix in (("", ".md", ".markdown", ".txt") if prefix == "MIT-" else ("",))
        ),
    )
)

MAX_ZIP_BYTES = 500 << 20  # the go command's own limit for a module zip
MAX_FILE_BYTES = 1 << 20
MAX_FILES = 16

# Ids licensecheck reports that are notices, not licences (pkg.go.dev ignores them too).
IGNORED_IDS = frozenset({"CC-Notice", "GooglePatentClause", "GooglePatentsFile"})


def detector_name() -> str:
    """The library and version that identified the texts, kept with every result."""
    try:
        return f"licenseclassifier {metadata.version('licenseclassifier')}"
    except metadata.PackageNotFoundError:  # pragma: no cover - a broken install
        return "licenseclassifier"


@dataclass(frozen=True, slots=True)
class Detection:
    """The licences of one module version."""

    module: str
    version: str
    findings: LicenceFindings
    detector: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "version": self.version,
            "detector": self.detector,
            "files": [{"path": f.path, "ids": list(f.ids)} for f in self.findings.files],
            "problem": self.findings.problem,
        }

    @classmethod
    def from_json(cls, data: Any) -> Detection:
        """The detection `to_json` wrote; ValueError when `data` is not one."""
        try:
            files = tuple(
                LicenceFile(str(f["path"]), tuple(str(i) for i in f["ids"])) for f in data["files"]
            )
            return cls(
                module=str(data["module"]),
                version=str(data["version"]),
                findings=LicenceFindings(files, str(data.get("problem", ""))),
                detector=str(data.get("detector", "")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a licence detection: {exc!r}") from None


def is_licence_file(name: str, root: str) -> bool:
    """Whether zip entry `name` is a licence file directly under `root` (`MOD@VER/`)."""
    if not name.startswith(root):
        return False
    rest = name[len(root) :]
    return "/" not in rest and rest.lower() in FILE_NAMES


@functools.cache
def _spdx() -> Any:
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def canonical_id(licence_id: str) -> str | None:
    """The current SPDX form of an id (`GPL-3.0` -> `GPL-3.0-only`, `mit` -> `MIT`);
    None when SPDX does not know it."""
    result = _spdx().validate(licence_id, strict=True)
    normalized = result.normalized_expression
    if result.errors or not isinstance(normalized, str):
        return None
    return normalized if " " not in normalized else None


@functools.cache
def _known_ids() -> dict[str, str]:
    """Lower-case id -> id, for every SPDX licence id (no LicenseRef- keys)."""
    keys = _spdx().known_symbols
    return {k.lower(): k for k in keys if isinstance(k, str) and not k.startswith("LicenseRef-")}


def close_ids(text: str) -> list[str]:
    """SPDX ids that look like `text`, closest first (for "did you mean")."""
    known = _known_ids()
    return [known[k] for k in difflib.get_close_matches(text.lower(), known, n=1, cutoff=0.8)]


def identify(text: str) -> tuple[str, ...]:
    """The SPDX ids recognised in one licence text, sorted, once each."""
    from licenseclassifier import identify_license

    found: set[str] = set()
    for match in identify_license(text):
        if match.id in IGNORED_IDS:
            continue
        found.add(canonical_id(match.id) or match.id)
    return tuple(sorted(found))


def _read_bounded(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with archive.open(info) as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError("larger than 1 MiB")
    return data


def detect(zip_path: str | os.PathLike[str], module: str, version: str) -> Detection:
    """The licences at the root of the module zip at `zip_path`. Never raises for a bad
    zip: a zip that cannot be examined gives findings with a `problem`."""
    return Detection(module, version, _findings(Path(zip_path), module, version), detector_name())


def _findings(path: Path, module: str, version: str) -> LicenceFindings:
    try:
        size = path.stat().st_size
    except OSError as exc:
        return LicenceFindings(problem=f"the zip cannot be read ({exc.strerror or exc})")
    if size > MAX_ZIP_BYTES:
        return LicenceFindings(problem="the zip is larger than 500 MiB")
    root = f"{module}@{version}/"
    try:
        with zipfile.ZipFile(path) as archive:
            entries = [i for i in archive.infolist() if is_licence_file(i.filename, root)]
            if len(entries) > MAX_FILES:
                return LicenceFindings(problem=f"more than {MAX_FILES} licence files")
            files: list[LicenceFile] = []
            for info in sorted(entries, key=lambda i: i.filename):
                shown = info.filename[len(root) :]
                try:
                    data = _read_bounded(archive, info)
                except (ValueError, OSError, zipfile.BadZipFile, NotImplementedError) as exc:
                    return LicenceFindings(tuple(files), f"{shown} cannot be read ({exc})")
                files.append(LicenceFile(shown, identify(data.decode("utf-8", "replace"))))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return LicenceFindings(problem=f"the zip cannot be read ({exc})")
    return LicenceFindings(tuple(files))


# ---------------------------------------------------------------------------
# Detection in a child process: bounded in time and memory
# ---------------------------------------------------------------------------


def _child(conn: Connection, memory_limit: int) -> None:
    """The child's loop: (zip path, module, version) in, a detection's JSON out."""
    if memory_limit:
        import resource

        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        path, module, version = job
        try:
            answer: dict[str, Any] = detect(path, module, version).to_json()
        except MemoryError:
            answer = {"error": "detection ran out of memory"}
        except Exception as exc:  # anything the library throws is one unknown licence
            answer = {"error": f"detection failed ({type(exc).__name__}: {exc})"}
        conn.send(answer)


@dataclass(slots=True)
class _Worker:
    process: BaseProcess
    conn: Connection
    jobs: int = 0


class IsolatedDetector:
    """`detect` in child processes, at most `workers` at once, each job at most
    `timeout` seconds, each child under `memory_limit` bytes of address space and
    replaced after `recycle_after` jobs. A job that overruns kills its child: the
    licence is then unknown ("detection took longer than ...")."""

    def __init__(
        self,
        *,
        workers: int = 1,
        timeout: float = 20.0,
        memory_limit: int = 1 << 30,
        recycle_after: int = 200,
    ) -> None:
        self.timeout = timeout
        self.memory_limit = memory_limit
        self.recycle_after = recycle_after
        self._ctx: BaseContext = multiprocessing.get_context("forkserver")
        self._idle: list[_Worker] = []
        self._slots = asyncio.Semaphore(workers)
        self._closed = False

    def _start(self) -> _Worker:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(  # type: ignore[attr-defined]
            target=_child, args=(child, self.memory_limit), name="licence-detector", daemon=True
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    async def detect(
        self, zip_path: str | os.PathLike[str], module: str, version: str
    ) -> Detection:
        async with self._slots:
            if self._closed:
                raise RuntimeError("the licence detector is closed")
            worker = self._idle.pop() if self._idle else self._start()
            try:
                answer = await asyncio.wait_for(
                    asyncio.to_thread(self._exchange, worker, (str(zip_path), module, version)),
                    self.timeout,
                )
            except (TimeoutError, EOFError, OSError) as exc:
                self._kill(worker)
                why = (
                    f"detection took longer than {self.timeout:g}s"
                    if isinstance(exc, TimeoutError)
                    else "the detector process died"
                )
                log.warning("licence detection of %s@%s: %s", module, version, why)
                return Detection(module, version, LicenceFindings(problem=why), detector_name())
            worker.jobs += 1
            if worker.jobs >= self.recycle_after or self._closed:
                self._stop(worker)
            else:
                self._idle.append(worker)
        if "error" in answer:
            return Detection(module, version, LicenceFindings(problem=answer["error"]))
        return Detection.from_json(answer)

    @staticmethod
    def _exchange(worker: _Worker, job: tuple[str, str, str]) -> dict[str, Any]:
        worker.conn.send(job)
        answer: dict[str, Any] = worker.conn.recv()
        return answer

    @staticmethod
    def _kill(worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join(5)
        worker.conn.close()

    @staticmethod
    def _stop(worker: _Worker) -> None:
        with contextlib.suppress(OSError):
            worker.conn.send(None)
        worker.process.join(2)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(2)
        worker.conn.close()

    def close(self) -> None:
        """Stop every idle child; a job under way ends its child when it finishes."""
        self._closed = True
        while self._idle:
            self._stop(self._idle.pop())


# ---------------------------------------------------------------------------
# Keeping results: one small JSON file per module version
# ---------------------------------------------------------------------------


class DetectionStore:
    """Detections kept in a folder, one JSON file per module version (named by the
    sha256 of `module@version`), written atomically. Results never change, so there is
    nothing to invalidate; a file that cannot be read is treated as absent."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def _path(self, module: str, version: str) -> Path:
        digest = hashlib.sha256(f"{module}@{version}".encode()).hexdigest()
        return self.folder / digest[:2] / f"{digest}.json"

    def get(self, module: str, version: str) -> Detection | None:
        try:
            detection = Detection.from_json(json.loads(self._path(module, version).read_bytes()))
        except (OSError, ValueError):
            return None
        if (detection.module, detection.version) != (module, version):
            return None
        return detection

    def put(self, detection: Detection) -> None:
        path = self._path(detection.module, detection.version)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(json.dumps(detection.to_json(), sort_keys=True).encode())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
