"""The module versions a build needs, read from a go.sum, a go.mod or `go list -m all`. Pure.

One reader for every command that takes such a list (`audit`, `warm`, `export`). What each
input can tell:

- go.sum: every module version whose hashes the build checked. `M V h1:` means the build
  needed the zip (its source); a version with only `M V/go.mod h1:` was needed for its
  go.mod alone (the module graph), never unpacked (`gomod_only`). go.sum is not a lock file:
  it may keep lines of versions the build no longer uses, and it never lists the main module.
- go.mod: the `require` lines only (direct and `// indirect`), without the rest of the graph
  and without knowing which are unpacked; `replace` and `exclude` are not applied.
- `go list -m all`: the whole build list after replacements (a directory replacement is left
  out), without knowing which are unpacked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath


@dataclass(frozen=True, slots=True, order=True)
class Requirement:
    module: str
    version: str
    gomod_only: bool = False  # go.sum has only its /go.mod line


def _strip_comment(line: str) -> str:
    return line.split("//", 1)[0].strip()


def parse_go_sum(text: str) -> list[Requirement]:
    full: set[tuple[str, str]] = set()
    mods: set[tuple[str, str]] = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        module, version = parts[0], parts[1]
        if version.endswith("/go.mod"):
            mods.add((module, version.removesuffix("/go.mod")))
        else:
            full.add((module, version))
    return sorted(
        [Requirement(m, v) for m, v in full]
        + [Requirement(m, v, gomod_only=True) for m, v in mods - full]
    )


def parse_go_mod(text: str) -> list[Requirement]:
    out: set[Requirement] = set()
    block = ""
    for raw in text.splitlines():
        line = _strip_comment(raw)
        if not line:
            continue
        if block:
            if line == ")":
                block = ""
            elif block == "require":
                out.update(_require(line.split()))
            continue
        words = line.split()
        if len(words) == 2 and words[1] == "(":
            block = words[0]
        elif words[0] == "require":
            out.update(_require(words[1:]))
    return sorted(out)


def _require(words: Sequence[str]) -> list[Requirement]:
    if len(words) != 2:
        return []
    return [Requirement(words[0].strip('"`'), words[1])]


def parse_go_list(text: str) -> list[Requirement]:
    """`go list -m all`: `path version [=> path version | => ./dir]`; the main module (no
    version) and replacements by a directory are left out."""
    out: set[Requirement] = set()
    for line in text.splitlines():
        words = line.split()
        if "=>" in words:
            words = words[words.index("=>") + 1 :]
        if len(words) == 2 and words[1].startswith("v"):
            out.add(Requirement(words[0], words[1]))
    return sorted(out)


def parse_requirements(text: str, name: str = "") -> list[Requirement]:
    """The module versions of a go.sum, go.mod or `go list -m all` output (told apart by
    the file name, else by the content)."""
    base = PurePath(name).name
    if base == "go.sum" or (base != "go.mod" and " h1:" in text):
        return parse_go_sum(text)
    if base == "go.mod" or any(line.startswith("module ") for line in text.splitlines()):
        return parse_go_mod(text)
    return parse_go_list(text)


def requirements_of(texts: Iterable[tuple[str, str]]) -> list[Requirement]:
    """Every (name, text) input read, merged: a version needed whole anywhere is needed whole."""
    seen: dict[tuple[str, str], Requirement] = {}
    for name, text in texts:
        for req in parse_requirements(text, name):
            old = seen.get((req.module, req.version))
            if old is None or (old.gomod_only and not req.gomod_only):
                seen[(req.module, req.version)] = req
    return sorted(seen.values())


def go_sum_hashes(text: str) -> dict[tuple[str, str, str], str]:
    """The `h1:` hashes of a go.sum: (module, version, "zip" or "mod") -> hash."""
    out: dict[tuple[str, str, str], str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith("h1:"):
            continue
        module, version, h1 = parts
        if version.endswith("/go.mod"):
            out[(module, version.removesuffix("/go.mod"), "mod")] = h1
        else:
            out[(module, version, "zip")] = h1
    return out
