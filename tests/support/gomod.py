"""Fixture Go modules: real module zips, go.mod answers and ``h1:`` hashes the go command accepts.

Everything here is deterministic: the same :class:`FixtureModule` always gives byte-identical zips
and the same go.sum lines, so tests can compare what the gateway serves with what was published.

The hash functions follow ``golang.org/x/mod/sumdb/dirhash`` (``Hash1``/``HashZip``) and the go
command's ``goModSum`` exactly; escaping follows ``golang.org/x/mod/module`` (``EscapePath``,
``EscapeVersion``). They are implemented here, independently of ``router/``, on purpose: the
support library is the yardstick the gateway is measured against.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import os
import random
import re
import threading
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import IO, BinaryIO

__all__ = [
    "DEFAULT_TIME",
    "FixtureModule",
    "ModuleSet",
    "RandomBlob",
    "compare_versions",
    "escape_path",
    "escape_version",
    "format_time",
    "gosum_lines",
    "hash1",
    "hash_mod",
    "hash_module",
    "hash_zip",
    "info_json",
    "is_pseudo_version",
    "large_module",
    "legacy_go_mod",
    "module_zip_bytes",
    "package_name_for",
    "pseudo_version_time",
    "simple_module",
    "unescape_path",
    "unescape_version",
    "write_zip",
    "write_zip_to",
]

DEFAULT_TIME = datetime(2024, 1, 1, tzinfo=UTC)
"""Commit time given to fixture modules that do not name one (pseudo-versions use their own)."""

_CHUNK = 1 << 20
_EMPTY: Mapping[str, bytes] = MappingProxyType({})
_NO_BLOBS: Mapping[str, RandomBlob] = MappingProxyType({})

# --------------------------------------------------------------------------------------------
# Versions (a small local port of golang.org/x/mod/semver and module/pseudo.go)
# --------------------------------------------------------------------------------------------

_SEMVER_RE = re.compile(
    r"^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$"
)
_PSEUDO_RE = re.compile(
    r"^v[0-9]+\.(0\.0-|\d+\.\d+-([^+]*\.)?0\.)\d{14}-[A-Za-z0-9]+(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$"
)
_PSEUDO_TIME_RE = re.compile(r"(\d{14})-[A-Za-z0-9]+(?:\+.*)?$")


def _parse_semver(version: str) -> tuple[int, int, int, str]:
    match = _SEMVER_RE.match(version)
    if match is None:
        raise ValueError(f"not a canonical semantic version: {version!r}")
    return int(match[1]), int(match[2]), int(match[3]), match[4] or ""


def _compare_prerelease(a: str, b: str) -> int:
    if a == b:
        return 0
    if not a:
        return 1
    if not b:
        return -1
    for x, y in zip(a.split("."), b.split("."), strict=False):
        if x == y:
            continue
        x_num, y_num = x.isdigit(), y.isdigit()
        if x_num and y_num:
            return -1 if int(x) < int(y) else 1
        if x_num != y_num:
            return -1 if x_num else 1
        return -1 if x < y else 1
    return -1 if len(a.split(".")) < len(b.split(".")) else 1


def compare_versions(a: str, b: str) -> int:
    """Compare two canonical versions like ``semver.Compare``: -1, 0 or 1 (build suffix ignored)."""
    pa, pb = _parse_semver(a), _parse_semver(b)
    if pa[:3] != pb[:3]:
        return -1 if pa[:3] < pb[:3] else 1
    return _compare_prerelease(pa[3], pb[3])


_VERSION_KEY = functools.cmp_to_key(compare_versions)


def is_pseudo_version(version: str) -> bool:
    """Report whether ``version`` is a pseudo-version (``module.IsPseudoVersion``)."""
    return version.count("-") >= 2 and _PSEUDO_RE.match(version) is not None


def pseudo_version_time(version: str) -> datetime:
    """Return the UTC commit time embedded in a pseudo-version."""
    match = _PSEUDO_TIME_RE.search(version)
    if not is_pseudo_version(version) or match is None:
        raise ValueError(f"not a pseudo-version: {version!r}")
    return datetime.strptime(match[1], "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def _is_prerelease(version: str) -> bool:
    return bool(_parse_semver(version)[3])


def format_time(t: datetime) -> str:
    """Format ``t`` as RFC 3339 in UTC with a ``Z`` suffix, as Go's ``time.Time`` marshals it."""
    t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


# --------------------------------------------------------------------------------------------
# Case escaping (golang.org/x/mod/module EscapePath / EscapeVersion and their inverses)
# --------------------------------------------------------------------------------------------


def _escape(text: str, what: str) -> str:
    if not text:
        raise ValueError(f"empty {what}")
    out: list[str] = []
    for ch in text:
        if ch == "!" or not ch.isascii():
            raise ValueError(f"invalid {what} {text!r}: cannot escape {ch!r}")
        out.append("!" + ch.lower() if "A" <= ch <= "Z" else ch)
    return "".join(out)


def _unescape(text: str, what: str) -> str:
    if not text:
        raise ValueError(f"empty escaped {what}")
    out: list[str] = []
    bang = False
    for ch in text:
        if not ch.isascii():
            raise ValueError(f"invalid escaped {what} {text!r}: non-ASCII")
        if bang:
            if not "a" <= ch <= "z":
                raise ValueError(f"invalid escaped {what} {text!r}: '!' before {ch!r}")
            out.append(ch.upper())
            bang = False
        elif ch == "!":
            bang = True
        elif "A" <= ch <= "Z":
            raise ValueError(f"invalid escaped {what} {text!r}: upper-case {ch!r}")
        else:
            out.append(ch)
    if bang:
        raise ValueError(f"invalid escaped {what} {text!r}: trailing '!'")
    return "".join(out)


def escape_path(path: str) -> str:
    """Case-escape a module path: every upper-case letter becomes ``!`` + its lower-case form."""
    return _escape(path, "module path")


def escape_version(version: str) -> str:
    """Case-escape a version the same way (``v1.5.3-PRE`` -> ``v1.5.3-!p!r!e``)."""
    return _escape(version, "version")


def unescape_path(escaped: str) -> str:
    """Invert :func:`escape_path`; raise ``ValueError`` for text Go's ``UnescapePath`` rejects."""
    return _unescape(escaped, "module path")


def unescape_version(escaped: str) -> str:
    """Invert :func:`escape_version`; raise ``ValueError`` for undecodable text."""
    return _unescape(escaped, "version")


# --------------------------------------------------------------------------------------------
# Fixture modules
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RandomBlob:
    """A large file of incompressible bytes generated on demand from a seeded RNG.

    The bytes are produced in fixed 1 MiB chunks, so the content only depends on ``size`` and
    ``seed`` and can be streamed into a zip or a hash without holding it in memory.
    """

    size: int
    seed: int = 0

    def chunks(self) -> Iterator[bytes]:
        """Yield the content in order, 1 MiB at a time."""
        rng = random.Random(self.seed)
        remaining = self.size
        while remaining > 0:
            n = min(_CHUNK, remaining)
            yield rng.randbytes(n)
            remaining -= n

    def sha256_hex(self) -> str:
        """Return the lowercase hex SHA-256 of the content (computed once per blob)."""
        return _blob_sha256(self)


@functools.lru_cache(maxsize=64)
def _blob_sha256(blob: RandomBlob) -> str:
    digest = hashlib.sha256()
    for chunk in blob.chunks():
        digest.update(chunk)
    return digest.hexdigest()


def legacy_go_mod(path: str) -> bytes:
    """The go.mod the go command synthesizes for a module without one (``LegacyGoMod``)."""
    needs_quotes = not path or any(c.isspace() or c in "\"'`" for c in path) or "//" in path
    quoted = json.dumps(path) if needs_quotes else path
    return f"module {quoted}\n".encode()


@dataclass(frozen=True, slots=True)
class FixtureModule:
    """One version of a fixture module, as a proxy would serve it.

    ``files`` maps names relative to the module root to their content (``go.mod`` included unless
    the module is a legacy/``+incompatible`` one). ``blobs`` adds large generated files; a module
    with blobs is "large" and is written to disk rather than built in memory. ``go_mod`` is the
    ``.mod`` answer: left as ``None`` it becomes the zip's ``go.mod`` or, without one, the
    synthesized ``module PATH`` line. A pseudo-version's ``time`` defaults to (and must equal) the
    timestamp embedded in the version.
    """

    path: str
    version: str
    files: Mapping[str, bytes] = field(default_factory=lambda: _EMPTY)
    time: datetime = DEFAULT_TIME
    go_mod: bytes | None = None
    blobs: Mapping[str, RandomBlob] = field(default_factory=lambda: _NO_BLOBS)

    def __post_init__(self) -> None:
        _parse_semver(self.version)
        escape_path(self.path)
        if self.time.tzinfo is None:
            raise ValueError(f"{self.path}@{self.version}: time must be timezone-aware")
        files = MappingProxyType(dict(self.files))
        blobs = MappingProxyType(dict(self.blobs))
        for name in (*files, *blobs):
            _check_file_name(name)
        if set(files) & set(blobs):
            raise ValueError(f"{self.path}@{self.version}: a name is both a file and a blob")
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "blobs", blobs)
        if is_pseudo_version(self.version):
            embedded = pseudo_version_time(self.version)
            if self.time == DEFAULT_TIME:
                object.__setattr__(self, "time", embedded)
            elif self.time != embedded:
                raise ValueError(
                    f"{self.path}@{self.version}: time {format_time(self.time)} differs from the "
                    f"pseudo-version timestamp {format_time(embedded)}"
                )
        if self.go_mod is None:
            mod = files.get("go.mod")
            object.__setattr__(self, "go_mod", mod if mod is not None else legacy_go_mod(self.path))

    def __hash__(self) -> int:
        return hash((self.path, self.version))

    @property
    def key(self) -> tuple[str, str]:
        """``(path, version)``, the identity of this module version."""
        return (self.path, self.version)

    @property
    def mod(self) -> bytes:
        """The ``.mod`` answer (never ``None``, unlike the raw ``go_mod`` field's type)."""
        assert self.go_mod is not None
        return self.go_mod

    @property
    def prefix(self) -> str:
        """The zip entry prefix ``PATH@VERSION/`` (real case, not escaped)."""
        return f"{self.path}@{self.version}/"

    @property
    def is_large(self) -> bool:
        """True when the module has generated blobs and should be served from a file on disk."""
        return bool(self.blobs)

    @property
    def is_pseudo(self) -> bool:
        """True when the version is a pseudo-version (never listed in ``@v/list``)."""
        return is_pseudo_version(self.version)

    @property
    def escaped_path(self) -> str:
        """The module path as it appears in GOPROXY URLs."""
        return escape_path(self.path)

    @property
    def escaped_version(self) -> str:
        """The version as it appears in GOPROXY URLs."""
        return escape_version(self.version)

    def url_path(self, kind: str) -> str:
        """The GOPROXY request path (leading ``/``) for ``kind`` in info, mod, zip, list, latest."""
        base = "/" + self.escaped_path
        if kind == "list":
            return base + "/@v/list"
        if kind == "latest":
            return base + "/@latest"
        if kind not in ("info", "mod", "zip"):
            raise ValueError(f"unknown kind {kind!r}")
        return f"{base}/@v/{self.escaped_version}.{kind}"


def _check_file_name(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid module file name {name!r}")


_GO_KEYWORDS = frozenset(
    (
        "break", "case", "chan", "const", "continue", "default", "defer", "else", "fallthrough",
        "for", "func", "go", "goto", "if", "import", "interface", "map", "package", "range",
        "return", "select", "struct", "switch", "type", "var",
    )
)  # fmt: skip


def package_name_for(path: str) -> str:
    """A valid Go package name for a module path's root package.

    Drops a ``/vN`` major suffix and a gopkg.in ``.vN`` suffix, lower-cases, and replaces characters
    that cannot appear in an identifier (``example.com/Upper/Mod`` -> ``mod``,
    ``gopkg.in/fixture.v3`` -> ``fixture``, ``example.com/multi/v2`` -> ``multi``).
    """
    elems = path.split("/")
    if len(elems) > 1 and re.fullmatch(r"v[0-9]+", elems[-1]):
        elems = elems[:-1]
    last = elems[-1]
    if path.startswith("gopkg.in/"):
        last = re.sub(r"\.v[0-9]+(-unstable)?$", "", last)
    name = re.sub(r"[^a-z0-9_]", "_", last.lower()) or "pkg"
    if name[0].isdigit():
        name = "p" + name
    return name + "_" if name in _GO_KEYWORDS else name


def _go_string(text: str) -> str:
    return json.dumps(text)


def _dep_key(dep: FixtureModule | tuple[str, str]) -> tuple[str, str]:
    return dep.key if isinstance(dep, FixtureModule) else dep


def _render_go_mod(
    path: str, go_directive: str, deps: Sequence[tuple[str, str]], retract: Sequence[str]
) -> bytes:
    lines = [f"module {path}", "", f"go {go_directive}"]
    if deps:
        lines += ["", "require ("]
        lines += [f"\t{p} {v}" for p, v in deps]
        lines.append(")")
    if retract:
        lines.append("")
        lines += [f"retract {r}" for r in retract]
    return ("\n".join(lines) + "\n").encode()


def _render_hello(package: str, path: str, version: str, deps: Sequence[tuple[str, str]]) -> bytes:
    lines = [
        f"// Package {package} is a fixture module served by tests/support.",
        f"package {package}",
    ]
    if deps:
        lines += ["", "import ("]
        lines += [f"\td{i} {_go_string(p)}" for i, (p, _) in enumerate(deps)]
        lines.append(")")
    lines += [
        "",
        "// Hello names this module version and, in brackets, what its dependencies say.",
        "func Hello() string {",
        f"\ts := {_go_string(f'{path}@{version}')}",
    ]
    lines += [f'\ts += " [" + d{i}.Hello() + "]"' for i in range(len(deps))]
    lines += ["\treturn s", "}"]
    return ("\n".join(lines) + "\n").encode()


def simple_module(
    path: str,
    version: str,
    *,
    deps: Sequence[FixtureModule | tuple[str, str]] = (),
    package_name: str | None = None,
    extra_files: Mapping[str, bytes] | None = None,
    go_directive: str = "1.21",
    retract: Sequence[str] = (),
    time: datetime | None = None,
) -> FixtureModule:
    """A module with ``go.mod`` and one package (``hello.go``) exporting ``Hello() string``.

    ``Hello`` returns ``"PATH@VERSION"`` followed by each dependency's ``Hello()`` in brackets, so
    ``go build`` really needs every dep. ``retract`` entries are written verbatim after
    ``retract`` (``"v1.0.0"``, ``"[v1.0.1, v1.0.5]"``). A ``+incompatible`` version gets no
    ``go.mod`` in its zip (deps and retractions are then impossible and rejected).
    """
    dep_keys = [_dep_key(d) for d in deps]
    package = package_name or package_name_for(path)
    files: dict[str, bytes] = {"hello.go": _render_hello(package, path, version, dep_keys)}
    if version.endswith("+incompatible"):
        if dep_keys or retract:
            raise ValueError("a +incompatible module has no go.mod: no deps or retract possible")
    else:
        files["go.mod"] = _render_go_mod(path, go_directive, dep_keys, retract)
    files.update(extra_files or {})
    return FixtureModule(path=path, version=version, files=files, time=time or DEFAULT_TIME)


def large_module(
    path: str,
    version: str,
    size_bytes: int,
    *,
    seed: int = 0,
    blob_name: str = "data/random.bin",
    time: datetime | None = None,
) -> FixtureModule:
    """A buildable module whose zip is ``size_bytes`` long (give or take a few dozen bytes).

    The bulk is one :class:`RandomBlob` stored uncompressed; the module is flagged large, so the
    fixture proxy writes its zip to disk and streams it. Use :func:`write_zip` for files on disk.
    """
    base = simple_module(path, version, time=time)
    small = len(module_zip_bytes(base))
    # A stored entry costs two headers (30 + 46 bytes) plus its name twice, plus zip64 extras.
    overhead = 76 + 2 * len(base.prefix + blob_name) + (140 if size_bytes >= 1 << 31 else 0)
    blob = RandomBlob(size=max(0, size_bytes - small - overhead), seed=seed)
    return FixtureModule(
        path=path, version=version, files=base.files, time=base.time, blobs={blob_name: blob}
    )


# --------------------------------------------------------------------------------------------
# Zips
# --------------------------------------------------------------------------------------------


def _zip_date(m: FixtureModule) -> tuple[int, int, int, int, int, int]:
    t = max(m.time.astimezone(UTC), datetime(1980, 1, 1, tzinfo=UTC))
    return (t.year, t.month, t.day, t.hour, t.minute, t.second)


def _zip_info(m: FixtureModule, name: str, compress: int, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(m.prefix + name, date_time=_zip_date(m))
    info.create_system = 3
    info.external_attr = 0o644 << 16
    info.compress_type = compress
    info.file_size = size
    return info


def write_zip_to(m: FixtureModule, fileobj: IO[bytes]) -> None:
    """Write the module zip to a seekable binary file object (entries sorted, no directories)."""
    with zipfile.ZipFile(fileobj, "w", allowZip64=True) as zf:
        for name in sorted((*m.files, *m.blobs)):
            if name in m.files:
                data = m.files[name]
                info = _zip_info(m, name, zipfile.ZIP_DEFLATED, len(data))
                zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
                continue
            blob = m.blobs[name]
            info = _zip_info(m, name, zipfile.ZIP_STORED, blob.size)
            with zf.open(info, "w", force_zip64=blob.size >= (1 << 31)) as out:
                for chunk in blob.chunks():
                    out.write(chunk)


def write_zip(m: FixtureModule, dest_path: str | os.PathLike[str]) -> Path:
    """Stream the module zip into ``dest_path`` (parents created) and return the path."""
    dest = Path(dest_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".tmp")
    with tmp.open("wb") as out:
        write_zip_to(m, out)
    tmp.replace(dest)
    return dest


def module_zip_bytes(m: FixtureModule) -> bytes:
    """The module zip in memory: ``PATH@VERSION/<name>`` entries, real case, deterministic."""
    buf = io.BytesIO()
    write_zip_to(m, buf)
    return buf.getvalue()


# --------------------------------------------------------------------------------------------
# Hashes (dirhash.Hash1, dirhash.HashZip, goModSum) and go.sum lines
# --------------------------------------------------------------------------------------------


def _hash1_from_digests(digests: Iterable[tuple[str, str]]) -> str:
    summary = hashlib.sha256()
    for name, hexdigest in sorted(digests):
        if "\n" in name:
            raise ValueError(f"dirhash: filenames with newlines are not supported: {name!r}")
        summary.update(f"{hexdigest}  {name}\n".encode())
    return "h1:" + base64.b64encode(summary.digest()).decode()


def hash1(files: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> str:
    """``dirhash.Hash1`` over in-memory files (names exactly as given)."""
    items = files.items() if isinstance(files, Mapping) else files
    return _hash1_from_digests((name, hashlib.sha256(data).hexdigest()) for name, data in items)


def hash_mod(mod_bytes: bytes) -> str:
    """The go.sum ``/go.mod`` hash: ``Hash1`` of a single file literally named ``go.mod``."""
    return hash1({"go.mod": mod_bytes})


def _sha256_stream(stream: BinaryIO | IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def hash_zip(zip_source: bytes | str | os.PathLike[str], prefix_check: bool = True) -> str:
    """``dirhash.HashZip``: ``Hash1`` over every entry of a zip (bytes or a path), streaming.

    Directory entries count like empty files, as in Go. With ``prefix_check`` every entry must
    start with one shared first element followed by ``/`` and have a name after it (what a module
    zip looks like); otherwise ``ValueError``. Pass ``prefix_check=False`` for odd zips.
    """
    source: IO[bytes] | str | os.PathLike[str]
    source = io.BytesIO(zip_source) if isinstance(zip_source, bytes) else zip_source
    with zipfile.ZipFile(source) as zf:
        infos = zf.infolist()
        if prefix_check:
            _check_single_prefix([i.filename for i in infos])
        digests = []
        for info in infos:
            with zf.open(info) as entry:
                digests.append((info.filename, _sha256_stream(entry)))
    return _hash1_from_digests(digests)


def _check_single_prefix(names: Sequence[str]) -> None:
    prefixes = {n.split("/", 1)[0] for n in names}
    if len(prefixes) > 1:
        raise ValueError(f"zip entries have different prefixes: {sorted(prefixes)}")
    for name in names:
        if "/" not in name or name.endswith("/"):
            raise ValueError(f"zip entry {name!r} is not a file under the module prefix")


def hash_module(m: FixtureModule) -> str:
    """The go.sum zip hash of ``m`` computed from its files (equals ``hash_zip`` of its zip)."""
    digests = [(m.prefix + n, hashlib.sha256(d).hexdigest()) for n, d in m.files.items()]
    digests += [(m.prefix + n, b.sha256_hex()) for n, b in m.blobs.items()]
    return _hash1_from_digests(digests)


def gosum_lines(m: FixtureModule) -> list[str]:
    """The two go.sum lines for ``m``: ``PATH VERSION h1:…`` and ``PATH VERSION/go.mod h1:…``."""
    return [
        f"{m.path} {m.version} {hash_module(m)}",
        f"{m.path} {m.version}/go.mod {hash_mod(m.mod)}",
    ]


# --------------------------------------------------------------------------------------------
# Module sets
# --------------------------------------------------------------------------------------------


def info_json(m: FixtureModule) -> bytes:
    """The ``.info`` answer: ``{"Version":"…","Time":"…Z"}`` (compact, like proxy.golang.org)."""
    doc = {"Version": m.version, "Time": format_time(m.time)}
    return json.dumps(doc, separators=(",", ":")).encode()


class ModuleSet:
    """Fixture modules keyed by ``(path, version)``: what a fixture proxy knows.

    Safe to read from a server thread while a test adds modules. Adding a different module under
    an existing key raises (proxies are immutable); use ``replace=True`` to simulate a bad upstream.
    """

    def __init__(self, modules: Iterable[FixtureModule] = ()) -> None:
        self._lock = threading.Lock()
        self._modules: dict[tuple[str, str], FixtureModule] = {}
        self.add(*modules)

    def add(self, *modules: FixtureModule, replace: bool = False) -> None:
        """Add modules; re-adding an identical module is a no-op."""
        with self._lock:
            for m in modules:
                old = self._modules.get(m.key)
                if old is not None and old != m and not replace:
                    raise ValueError(f"{m.path}@{m.version} is already in the set, differently")
                self._modules[m.key] = m

    def remove(self, path: str, version: str) -> None:
        """Forget one module version (``KeyError`` if unknown)."""
        with self._lock:
            del self._modules[(path, version)]

    def get(self, path: str, version: str) -> FixtureModule | None:
        """The module at exactly ``path@version``, or ``None``."""
        with self._lock:
            return self._modules.get((path, version))

    def __getitem__(self, key: tuple[str, str]) -> FixtureModule:
        with self._lock:
            return self._modules[key]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._modules

    def __iter__(self) -> Iterator[FixtureModule]:
        with self._lock:
            return iter(list(self._modules.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._modules)

    def paths(self) -> list[str]:
        """Every module path in the set, sorted."""
        with self._lock:
            return sorted({p for p, _ in self._modules})

    def has_path(self, path: str) -> bool:
        """True when at least one version of ``path`` exists."""
        with self._lock:
            return any(p == path for p, _ in self._modules)

    def modules_of(self, path: str) -> list[FixtureModule]:
        """All versions of ``path`` (pseudo-versions included), in semver order."""
        with self._lock:
            found = [m for (p, _), m in self._modules.items() if p == path]
        return sorted(found, key=lambda m: _VERSION_KEY(m.version))

    def versions(self, path: str) -> list[str]:
        """The ``@v/list`` answer: tagged versions (no pseudo-versions), in semver order."""
        return [m.version for m in self.modules_of(path) if not m.is_pseudo]

    def latest(self, path: str) -> FixtureModule | None:
        """``@latest`` like Go's test proxy: highest release, else prerelease, else pseudo."""
        mods = self.modules_of(path)
        releases = [m for m in mods if not m.is_pseudo and not _is_prerelease(m.version)]
        prereleases = [m for m in mods if not m.is_pseudo and _is_prerelease(m.version)]
        for group in (releases, prereleases, mods):
            if group:
                return group[-1]
        return None

    def list_text(self, path: str) -> bytes:
        """The ``@v/list`` body: one version per line, each ending in ``\\n``."""
        return "".join(v + "\n" for v in self.versions(path)).encode()

    @staticmethod
    def info_json(m: FixtureModule) -> bytes:
        """The ``.info`` answer for ``m`` (see :func:`info_json`)."""
        return info_json(m)
