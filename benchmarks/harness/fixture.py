"""The upstream's GOPROXY tree on disk, and the request paths of each workload."""

from __future__ import annotations

import io
import json
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

VERSIONS = ("v1.0.0", "v1.1.0")
FIXTURE_TIME = "2024-01-01T00:00:00Z"
SMALL_ZIP_BYTES = 1 << 10
LARGE_ZIP_BYTES = 1 << 20
CONTENT_TYPES = {".info": "application/json", ".mod": "text/plain", ".zip": "application/zip"}
WORKLOADS = ("info", "metadata", "zip-1k", "zip-1m")


@dataclass(frozen=True, slots=True)
class Fixture:
    root: Path
    paths: dict[str, list[str]]  # workload -> URL paths (escaped)
    files: dict[str, Path]  # workload -> a file listing its paths, for wrk
    nfiles: int
    total_bytes: int

    def expected(self, path: str) -> bytes:
        return (self.root / path.lstrip("/")).read_bytes()


def escape_path(path: str) -> str:
    """GOPROXY case escaping: an upper-case letter becomes '!' + its lower case."""
    return "".join("!" + c.lower() if c.isupper() else c for c in path)


def module_zip(module: str, version: str, size: int, rng: random.Random) -> bytes:
    """A real module zip (stored, not compressed) of about `size` bytes."""

    def build(payload: int) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
            prefix = f"{module}@{version}/"
            for name, data in (
                ("go.mod", f"module {module}\n".encode()),
                ("data.bin", rng.randbytes(payload)),
            ):
                zf.writestr(zipfile.ZipInfo(prefix + name, (2024, 1, 1, 0, 0, 0)), data)
        return buf.getvalue()

    return build(max(0, size - len(build(0))))


def build_fixture(root: Path, modules: int, large_modules: int) -> Fixture:
    """Write the tree: `modules` with 1 KiB zips (every tenth `!`-escaped), and
    `large_modules` with 1 MiB zips, two versions each."""
    rng = random.Random(20240101)
    paths: dict[str, list[str]] = {w: [] for w in WORKLOADS}
    count = total = 0

    def write(rel: str, data: bytes) -> None:
        nonlocal count, total
        target = root / rel.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        count += 1
        total += len(data)

    def module(path: str, zip_size: int, zip_workload: str) -> None:
        base = "/" + escape_path(path) + "/@v/"
        write(base + "list", "".join(v + "\n" for v in VERSIONS).encode())
        paths["metadata"].append(base + "list")
        for version in VERSIONS:
            stem = base + version
            info = json.dumps({"Version": version, "Time": FIXTURE_TIME}, separators=(",", ":"))
            write(stem + ".info", info.encode())
            write(stem + ".mod", f"module {path}\n\ngo 1.21\n".encode())
            write(stem + ".zip", module_zip(path, version, zip_size, rng))
            paths["metadata"] += [stem + ".info", stem + ".mod"]
            paths["info"].append(stem + ".info")
            paths[zip_workload].append(stem + ".zip")

    for i in range(modules):
        name = f"github.com/BenchOrg/mod{i:04d}" if i % 10 == 9 else f"example.com/bench/m{i:04d}"
        module(name, SMALL_ZIP_BYTES, "zip-1k")
    for i in range(large_modules):
        module(f"example.com/bench/large/m{i:02d}", LARGE_ZIP_BYTES, "zip-1m")
    files: dict[str, Path] = {}
    for workload, listed in paths.items():
        rng.shuffle(listed)
        files[workload] = root.parent / f"paths-{workload}.txt"
        files[workload].write_text("".join(p + "\n" for p in listed))
    return Fixture(root=root, paths=paths, files=files, nfiles=count, total_bytes=total)


def expected_type(path: str) -> str:
    return CONTENT_TYPES.get(Path(path).suffix, "text/plain")
