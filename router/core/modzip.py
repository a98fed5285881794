"""Go's rules for module zip files (golang.org/x/mod/zip ``CheckZip``), pure.

A module zip the go command will extract: every entry under ``MODULE@VERSION/``, each
name a clean, valid file path (``module.CheckFilePath``: no ``..``, no absolute or
backslashed names, no control characters), no two names equal under Unicode case
folding, no name that is both a file and a directory, ``go.mod`` only at the root and
spelled in lower case, at most 500 MiB in the zip and in its uncompressed content, and
``go.mod`` and ``LICENSE`` at most 16 MiB each.

`zip_problem` takes the entries as (name, uncompressed size) pairs read from the zip's
central directory; reading the file is the caller's business.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from router.core.errors import ModuleError
from router.core.modpath import check_file_path

MAX_ZIP = 500 << 20  # x/mod's MaxZipFile: the zip itself and its uncompressed content
MAX_GO_MOD = 16 << 20
MAX_LICENSE = 16 << 20


@dataclass(frozen=True, slots=True)
class ZipProblem:
    """Why a zip is not a well-formed module zip: a short cause (a metric label) and the
    sentence for people."""

    cause: str  # name, collision, size, prefix, go_mod, empty, unreadable
    message: str


def fold(name: str) -> str:
    """A key equal for two names when Go's ``strings.EqualFold`` says they are: each
    character replaced by the smallest one of its simple case-folding orbit (ASCII
    letters by their lower case), like x/mod's ``strToFold``."""
    if name.isascii():
        return name.lower()
    return "".join(_fold_char(ch) for ch in name)


def _fold_char(ch: str) -> str:
    orbit = [ch]
    for other in (ch.lower(), ch.upper(), ch.lower().upper(), ch.upper().lower()):
        if len(other) == 1:
            orbit.append(other)
    least = min(orbit)
    return least.lower() if "A" <= least <= "Z" else least


def zip_problem(
    entries: Iterable[tuple[str, int]], module: str, version: str, zip_size: int
) -> ZipProblem | None:
    """The first reason the zip with these entries breaks Go's rules, or None."""
    if zip_size > MAX_ZIP:
        return ZipProblem("size", f"zip is {_mib(zip_size)}, over Go's limit of {_mib(MAX_ZIP)}")
    prefix = f"{module}@{version}/"
    seen: dict[str, tuple[str, bool]] = {}  # folded path -> (path, is_dir)
    total = 0
    files = 0
    for raw, size in entries:
        if not raw.startswith(prefix):
            return ZipProblem("prefix", f"entry {raw!r} is outside {prefix!r}")
        name = raw[len(prefix) :]
        if name == "":
            continue
        is_dir = name.endswith("/")
        name = name.removesuffix("/")
        problem = _name_problem(name) or _collision(seen, name, is_dir)
        if problem is not None:
            return problem
        if is_dir:
            continue
        files += 1
        if size < 0 or size > MAX_ZIP - total:
            return ZipProblem("size", f"uncompressed content exceeds Go's limit of {_mib(MAX_ZIP)}")
        total += size
        problem = _special_file_problem(name, size)
        if problem is not None:
            return problem
    if files == 0:
        return ZipProblem("empty", "zip holds no file of the module")
    return None


def _name_problem(name: str) -> ZipProblem | None:
    if posixpath.normpath(name) != name or name.startswith("/"):
        return ZipProblem("name", f"file path {name!r} is not clean")
    try:
        check_file_path(name)
    except ModuleError as exc:
        return ZipProblem("name", str(exc))
    return None


def _collision(seen: dict[str, tuple[str, bool]], name: str, is_dir: bool) -> ZipProblem | None:
    """Record `name` and its parent folders; a problem when a name repeats or clashes."""
    path, directory = name, is_dir
    while True:
        key = fold(path)
        other = seen.get(key)
        if other is None:
            seen[key] = (path, directory)
        elif other[0] != path:
            return ZipProblem(
                "collision", f"case-insensitive file name collision: {other[0]!r} and {path!r}"
            )
        elif other[1] != directory:
            return ZipProblem("collision", f"entry {path!r} is both a file and a directory")
        elif not directory:
            return ZipProblem("collision", f"more than one entry for file {path!r}")
        parent = posixpath.dirname(path)
        if parent == "":
            return None
        path, directory = parent, True


def _special_file_problem(name: str, size: int) -> ZipProblem | None:
    base = posixpath.basename(name)
    if base.lower() == "go.mod":
        if base != name:
            return ZipProblem("go_mod", f"go.mod file {name!r} is not in the module root")
        if name != "go.mod":
            return ZipProblem("go_mod", f"go.mod file {name!r} must have a lower-case name")
        if size > MAX_GO_MOD:
            return ZipProblem(
                "size", f"go.mod is {_mib(size)}, over Go's limit of {_mib(MAX_GO_MOD)}"
            )
    if name == "LICENSE" and size > MAX_LICENSE:
        return ZipProblem(
            "size", f"LICENSE is {_mib(size)}, over Go's limit of {_mib(MAX_LICENSE)}"
        )
    return None


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB" if n >= 1 << 20 else f"{n} bytes"
