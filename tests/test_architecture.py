"""The core is sealed: `router.core` imports only the standard library and itself, and
reads neither the clock nor randomness except through its arguments."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "router" / "core"
MODULES = sorted(f"router.core.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__")
FORBIDDEN_PACKAGES = ("aiohttp", "asyncio", "redis", "yaml", "uvloop", "prometheus_client")
# Names that read the clock, randomness or the environment when called.
IMPURE_CALLS = {
    ("time", "*"),
    ("random", "*"),
    ("secrets", "*"),
    ("uuid", "*"),
    ("os", "urandom"),
    ("os", "getenv"),
    ("os", "environ"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}
ALLOWED = {("random", "Random")}  # the type of an injected generator


def test_every_core_module_imports_alone_with_nothing_but_the_standard_library() -> None:
    probe = (
        "import importlib, json, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    for module in MODULES:
        done = subprocess.run(
            [sys.executable, "-c", probe, module], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{module}: {done.stderr.strip().splitlines()[-1:]}"
        loaded = json.loads(done.stdout)
        outside = [m for m in loaded if m.startswith("router.") and not m.startswith("router.core")]
        assert outside == [], f"{module} loads {outside}"
        bad = [m for m in loaded if m.split(".")[0] in FORBIDDEN_PACKAGES]
        assert bad == [], f"{module} loads {bad}"
        third_party = [
            m
            for m in loaded
            if "." not in m
            and m not in sys.stdlib_module_names
            and m not in ("router", "__main__")
            and not m.startswith("_")
        ]
        assert third_party == [], f"{module} loads {third_party}"


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_the_core_reads_no_clock_and_no_randomness(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            pair = (node.value.id, node.attr)
            if pair not in ALLOWED and (pair in IMPURE_CALLS or (pair[0], "*") in IMPURE_CALLS):
                found.append(f"{path.name}:{node.lineno}: {pair[0]}.{pair[1]}")
        if isinstance(node, ast.ImportFrom) and node.module in ("time", "secrets", "uuid"):
            found.append(f"{path.name}:{node.lineno}: from {node.module} import ...")
        if isinstance(node, ast.ImportFrom) and node.module in ("random", "os", "datetime"):
            for name in node.names:
                alias = name.name
                if (node.module, alias) in IMPURE_CALLS or alias in ("now", "urandom"):
                    found.append(f"{path.name}:{node.lineno}: from {node.module} import {alias}")
    assert found == []


SERVING = CORE.parent / "serving"
ROUTER = CORE.parent


def _router_imports(path: Path) -> set[str]:
    """The `router.*` modules a file imports (type-checking-only imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("router"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("router"))
    return found


def _serving_order() -> list[str]:
    """The reading order `router/serving/__init__.py` lists (`* `name` - ...` lines)."""
    doc = (SERVING / "__init__.py").read_text()
    return [line.split("`")[1] for line in doc.splitlines() if line.startswith("* `")]


def test_the_serving_package_reads_top_to_bottom() -> None:
    """Each serving module imports only the serving modules listed before it: no cycles,
    and the package's docstring is the order to read it in."""
    order = _serving_order()
    on_disk = sorted(p.stem for p in SERVING.glob("*.py") if p.stem != "__init__")
    assert sorted(order) == on_disk
    for i, name in enumerate(order):
        inside = {
            m.removeprefix("router.serving.")
            for m in _router_imports(SERVING / f"{name}.py")
            if m.startswith("router.serving.")
        }
        later = inside - set(order[:i])
        assert later == set(), f"serving/{name}.py imports {sorted(later)}, listed after it"


def test_the_tiers_know_nothing_of_the_serving_path() -> None:
    """`router.cache` (memory, Redis, disk, bucket) sits below the serving path."""
    for path in sorted((ROUTER / "cache").glob("*.py")):
        above = {m for m in _router_imports(path) if m.startswith("router.serving")}
        assert above == set(), f"cache/{path.name} imports {sorted(above)}"


def test_only_the_composition_root_and_the_app_see_every_service() -> None:
    """The services are built once, frozen, by `router.services`; only `router.app`
    takes the whole of them, every other module is handed what it needs (or reads its
    typed app key), and none reaches back into the application module."""
    import dataclasses

    from router.services import Services

    params = getattr(Services, "__dataclass_params__", None)
    assert params is not None and params.frozen
    fields = {f.name for f in dataclasses.fields(Services)}
    assert {"runtime", "ready", "draining"}.isdisjoint(fields)  # what changes lives in `Live`
    for path in sorted(ROUTER.rglob("*.py")):
        name = str(path.relative_to(ROUTER))
        imports = _router_imports(path)
        if name not in ("services.py", "app.py"):
            assert "router.services" not in imports, f"{name} imports the composition root"
        if name not in ("serve.py", "cli.py", "__main__.py"):
            assert "router.app" not in imports, f"{name} imports router.app"
