"""The GOAUTH helper: the sh script and its Python twin, one table for both, and the
real go command over HTTPS running it against the gateway.

What `go help goauth` (and cmd/go/internal/auth) specify, and these tests hold the
helper to: the go command runs the command once, with no argument and empty stdin,
before its first HTTPS request; after any 4xx answer it runs it again with the URL as
the last argument and the response's status line and headers (then a blank line) on
stdin, retries that one request with the headers printed, and keeps those from then on;
if the retry fails too, the fetch fails. The output is blocks of https:// URL lines, a
blank line, header lines, a blank line.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
import yaml
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from support.gateway import free_port, write_rules
from support.gocmd import go_binary, go_env, run_go
from support.gomod import ModuleSet, hash_module, simple_module
from support.goproxy_server import FixtureProxy

from router.app import create_app
from router.appkeys import RELOADER
from router.config import load_or_raise
from router.core.tenancy import token_digest
from router.goauth import JOB_VARIABLES

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "goauth-goproxy-router"
TOKEN = "tok-3x4mpl3-s3cret"
GW = "https://gw.example:8443"

# ---------------------------------------------------------------- the implementations

SHELLS = {
    "dash": ["dash"],
    "bash-posix": ["bash", "--posix"],
    "busybox": ["busybox", "sh"],
    "posh": ["posh"],
}


def _implementations() -> list[Any]:
    out = []
    for name, argv in SHELLS.items():
        marks = [] if shutil.which(argv[0]) else [pytest.mark.skip(reason=f"no {argv[0]}")]
        out.append(pytest.param([*argv, str(SCRIPT)], id=f"sh-{name}", marks=marks))
    out.append(pytest.param([sys.executable, "-m", "router.goauth"], id="python"))
    return out


IMPLEMENTATIONS = _implementations()


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_helper(
    argv: list[str],
    env: Mapping[str, str],
    args: tuple[str, ...] = (),
    stdin: bytes | None = None,
) -> Ran:
    done = subprocess.run(
        [*argv, *args],
        env=dict(env),
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=30,
        check=False,
    )
    return Ran(
        done.returncode,
        done.stdout.decode("utf-8", "surrogateescape"),
        done.stderr.decode("utf-8", "surrogateescape"),
    )


def answer(
    *prefixes: str, auth: str | None = None, version: str | None = None, job: str | None = None
) -> str:
    lines = [*prefixes, ""]
    lines += [
        f"{k}: {v}"
        for k, v in [("Authorization", auth), ("X-Go-Version", version), ("X-CI-Job-ID", job)]
        if v
    ]
    return "\n".join(lines) + "\n\n"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def bins(tmp_path: Path) -> Path:
    """A PATH directory with a fake `go` that answers `go env NAME` and logs each call
    (arguments, GOTOOLCHAIN, GOFLAGS) to go-calls.log beside it."""
    d = tmp_path / "bin"
    d.mkdir()
    fake = d / "go"
    fake.write_text(
        "#!/bin/sh\n"
        'printf "%s|GOTOOLCHAIN=%s|GOFLAGS=%s\\n" "$*" "${GOTOOLCHAIN-unset}" '
        '"${GOFLAGS-unset}" >> "$(dirname "$0")/go-calls.log"\n'
        'case "$*" in\n'
        '"env GOVERSION") echo go1.99.1 ;;\n'
        '"env GOPROXY") echo "https://from-go-env.example/p,direct" ;;\n'
        "*) exit 2 ;;\n"
        "esac\n"
    )
    fake.chmod(0o755)
    return d


def go_calls(bins: Path) -> list[str]:
    log = bins / "go-calls.log"
    return log.read_text().splitlines() if log.exists() else []


def base_env(bins: Path | None) -> dict[str, str]:
    """Nothing inherited: only PATH (the fake go first, when given) and a locale."""
    path = ([str(bins)] if bins else []) + ["/usr/bin", "/bin"]
    return {"PATH": os.pathsep.join(path), "LANG": "C.UTF-8"}


# ---------------------------------------------------------------- the shared table


@dataclass(frozen=True)
class Case:
    id: str
    env: dict[str, str]
    expect: str = ""  # stdout (with {token_file} filled in)
    rc: int = 0
    error: str = ""  # expected in stderr (with {token_file} filled in)
    args: tuple[str, ...] = ()
    stdin: bytes | None = None
    token_file: bytes | None = None  # written to tmp/token, path in {token_file}
    go_calls: tuple[str, ...] = ()  # what the fake go must have been asked
    fake_go: bool = True  # the fake go on PATH, else no go at all


V = {"GOVERSION": "go1.24.2"}
R401 = b"HTTP/1.1 401 Unauthorized\nContent-Type: text/plain\nWww-Authenticate: Basic x\n\n"
R404 = b"HTTP/1.1 404 Not Found\nContent-Length: 9\n\n"

CASES = [
    Case(
        "bearer-from-env",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN": TOKEN, **V},
        answer(GW, auth=f"Bearer {TOKEN}", version="go1.24.2"),
    ),
    Case(
        "basic-with-tenant-from-file",
        {
            "GOPROXY_ROUTER_URL": GW,
            "GOPROXY_ROUTER_TOKEN_FILE": "{token_file}",
            "GOPROXY_ROUTER_TENANT": "ci",
            **V,
        },
        answer(GW, auth=basic("ci", TOKEN), version="go1.24.2"),
        token_file=TOKEN.encode() + b"\n",
    ),
    Case(
        "token-file-trimmed-like-a-secret-mount",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN_FILE": "{token_file}", **V},
        answer(GW, auth=f"Bearer {TOKEN}", version="go1.24.2"),
        token_file=b" \t" + TOKEN.encode() + b" \r\n\n",
    ),
    Case(
        "basic-of-utf8-bytes",
        {
            "GOPROXY_ROUTER_URL": GW,
            "GOPROXY_ROUTER_TOKEN_FILE": "{token_file}",
            "GOPROXY_ROUTER_TENANT": "équipe",
            **V,
        },
        answer(GW, auth=basic("équipe", "tök€n"), version="go1.24.2"),
        token_file="tök€n\n".encode(),
    ),
    Case(
        "token-env-whitespace-only-is-no-token",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN": "  ", **V},
        answer(GW, version="go1.24.2"),
    ),
    Case(
        "token-file-missing",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN_FILE": "{token_file}", **V},
        rc=1,
        error="goauth-goproxy-router: cannot read the token file {token_file}\n",
    ),
    Case(
        "token-file-is-a-directory",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN_FILE": "/", **V},
        rc=1,
        error="goauth-goproxy-router: cannot read the token file /\n",
    ),
    Case(
        "token-file-empty",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN_FILE": "{token_file}", **V},
        rc=1,
        error="goauth-goproxy-router: the token file {token_file} is empty\n",
        token_file=b"\n\n",
    ),
    Case(
        "token-file-two-lines",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN_FILE": "{token_file}", **V},
        rc=1,
        error="goauth-goproxy-router: the token file {token_file} holds more than one line"
        " or a control character\n",
        token_file=TOKEN.encode() + b"\nsecond\n",
    ),
    Case(
        "token-env-with-a-control-character",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN": TOKEN + "\x1b[0m", **V},
        rc=1,
        error="goauth-goproxy-router: GOPROXY_ROUTER_TOKEN holds more than one line"
        " or a control character\n",
    ),
    Case(
        "token-and-token-file",
        {
            "GOPROXY_ROUTER_URL": GW,
            "GOPROXY_ROUTER_TOKEN": TOKEN,
            "GOPROXY_ROUTER_TOKEN_FILE": "{token_file}",
            **V,
        },
        rc=1,
        error="goauth-goproxy-router: set GOPROXY_ROUTER_TOKEN or GOPROXY_ROUTER_TOKEN_FILE,"
        " not both\n",
        token_file=b"x\n",
    ),
    Case(
        "tenant-with-a-colon",
        {
            "GOPROXY_ROUTER_URL": GW,
            "GOPROXY_ROUTER_TOKEN": TOKEN,
            "GOPROXY_ROUTER_TENANT": "a:b",
            **V,
        },
        rc=1,
        error="goauth-goproxy-router: GOPROXY_ROUTER_TENANT must not contain ':'\n",
    ),
    Case(
        "url-from-first-goproxy-entry",
        {
            "GOPROXY": "https://gw.example/go|https://other.example,direct",
            "GOPROXY_ROUTER_TOKEN": TOKEN,
            **V,
        },
        answer("https://gw.example/go", auth=f"Bearer {TOKEN}", version="go1.24.2"),
    ),
    Case(
        "url-from-go-env-when-goproxy-unset",
        {"GOPROXY_ROUTER_TOKEN": TOKEN, **V},
        answer("https://from-go-env.example/p", auth=f"Bearer {TOKEN}", version="go1.24.2"),
        go_calls=("env GOPROXY|GOTOOLCHAIN=local|GOFLAGS=",),
    ),
    Case(
        "never-to-the-public-proxy",
        {"GOPROXY": "https://proxy.golang.org,direct", "GOPROXY_ROUTER_TOKEN": TOKEN, **V},
        rc=1,
        error="goauth-goproxy-router: GOPROXY starts with https://proxy.golang.org, not a"
        " goproxy-router: set GOPROXY to the gateway or GOPROXY_ROUTER_URL\n",
    ),
    Case(
        "goproxy-http",
        {"GOPROXY": "http://gw.example", **V},
        rc=1,
        error="goauth-goproxy-router: GOPROXY starts with http://gw.example: the go command"
        " sends GOAUTH headers over https only\n",
    ),
    Case(
        "goproxy-direct",
        {"GOPROXY": "direct", **V},
        rc=1,
        error="goauth-goproxy-router: no gateway URL: set GOPROXY_ROUTER_URL, or GOPROXY to"
        " https://your-gateway\n",
    ),
    Case(
        "several-prefixes",
        {"GOPROXY_ROUTER_URL": f" {GW}  https://gw2.example/x\t", "GOPROXY": "direct", **V},
        answer(GW, "https://gw2.example/x", version="go1.24.2"),
    ),
    Case(
        "url-not-https",
        {"GOPROXY_ROUTER_URL": f"{GW} http://gw.example", **V},
        rc=1,
        error="goauth-goproxy-router: GOPROXY_ROUTER_URL: http://gw.example is not an https://"
        " URL (GOAUTH headers go over https only)\n",
    ),
    Case(
        "go-version-from-go-env-when-run-by-hand",
        {"GOPROXY_ROUTER_URL": GW},
        answer(GW, version="go1.99.1"),
        go_calls=("env GOVERSION|GOTOOLCHAIN=local|GOFLAGS=",),
    ),
    Case(
        "no-go-no-version",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN": TOKEN},
        answer(GW, auth=f"Bearer {TOKEN}"),
        fake_go=False,
    ),
    Case(
        "nothing-to-send-prints-nothing",
        {"GOPROXY_ROUTER_URL": GW},
        "",
        fake_go=False,
    ),
    Case(
        "go-version-verbatim",
        {"GOPROXY_ROUTER_URL": GW, "GOVERSION": "devel go1.25-abcdef Tue Jan 1 00:00:00 2025"},
        answer(GW, version="devel go1.25-abcdef Tue Jan 1 00:00:00 2025"),
    ),
    Case(
        "github-run-and-attempt",
        {
            "GOPROXY_ROUTER_URL": GW,
            "GITHUB_RUN_ID": "9876543210",
            "GITHUB_RUN_ATTEMPT": "2",
            "CI_JOB_ID": "111",
            **V,
        },
        answer(GW, version="go1.24.2", job="9876543210-2"),
    ),
    Case(
        "explicit-job-wins",
        {
            "GOPROXY_ROUTER_URL": GW,
            "GOPROXY_ROUTER_JOB_ID": " build#7 ",
            "GITHUB_RUN_ID": "9876543210",
            **V,
        },
        answer(GW, version="go1.24.2", job="build#7"),
    ),
    Case(
        "explicit-empty-job-sends-none",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_JOB_ID": "", "GITHUB_RUN_ID": "1", **V},
        answer(GW, version="go1.24.2"),
    ),
    Case(
        "job-with-a-control-character-is-dropped",
        {"GOPROXY_ROUTER_URL": GW, "CI_JOB_ID": "12\x0734", **V},
        answer(GW, version="go1.24.2"),
    ),
    Case(
        "retry-after-401-rereads-the-token-file",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN_FILE": "{token_file}", **V},
        answer(GW, auth="Bearer rotated", version="go1.24.2"),
        args=(f"{GW}/example.com/m/@v/list",),
        stdin=R401,
        token_file=b"rotated\n",
    ),
    Case(
        "retry-after-401-without-a-token-answers-as-before",
        {"GOPROXY_ROUTER_URL": GW, **V},
        answer(GW, version="go1.24.2"),
        args=(f"{GW}/example.com/m/@v/list",),
        stdin=R401,
    ),
    Case(
        "retry-after-404-without-a-token-is-fine",
        {"GOPROXY_ROUTER_URL": GW, **V},
        answer(GW, version="go1.24.2"),
        args=(f"{GW}/example.com/m/@v/list",),
        stdin=R404,
    ),
    Case(
        "retry-with-crlf-and-no-blank-line",
        {"GOPROXY_ROUTER_URL": GW, **V},
        answer(GW, version="go1.24.2"),
        args=(f"{GW}/x",),
        stdin=b"HTTP/2.0 401 Unauthorized\r\nA: b\r\n",
    ),
    Case(
        "retry-with-empty-stdin",
        {"GOPROXY_ROUTER_URL": GW, **V},
        answer(GW, version="go1.24.2"),
        args=(f"{GW}/x",),
    ),
    Case(
        "retry-with-headers-after-the-blank-line-unread",
        {"GOPROXY_ROUTER_URL": GW, "GOPROXY_ROUTER_TOKEN": TOKEN, **V},
        answer(GW, auth=f"Bearer {TOKEN}", version="go1.24.2"),
        args=(f"{GW}/x",),
        stdin=R401 + b"X: y\n" * 50_000,
    ),
    Case(
        "two-arguments",
        {"GOPROXY_ROUTER_URL": GW, **V},
        rc=1,
        error="goauth-goproxy-router: usage: goauth-goproxy-router [URL] (run by the go command"
        " through GOAUTH; see --help)\n",
        args=("a", "b"),
    ),
]


def _fill(text: str, token_file: Path) -> str:
    return text.replace("{token_file}", str(token_file))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_helper_table(impl: list[str], case: Case, tmp_path: Path, bins: Path) -> None:
    token_file = tmp_path / "token"
    if case.token_file is not None:
        token_file.write_bytes(case.token_file)
    env = base_env(bins if case.fake_go else None)
    if not case.fake_go:
        assert shutil.which("go", path=env["PATH"]) is None, "a go on /usr/bin:/bin"
    env.update({k: _fill(v, token_file) for k, v in case.env.items()})
    ran = run_helper(impl, env, case.args, case.stdin)
    assert ran.returncode == case.rc, ran.stderr
    assert ran.stdout == _fill(case.expect, token_file)
    if case.rc == 0:
        assert ran.stderr == ""
        parse_user_auth(ran.stdout)
    else:
        assert _fill(case.error, token_file) in ran.stderr
        assert ran.stderr.endswith("\n") and ran.stderr.count("\n") == 1
    for secret in (TOKEN, "rotated", "tök€n"):
        assert secret not in ran.stderr
    assert go_calls(bins) == list(case.go_calls)


JOBS = {
    "GITHUB_RUN_ID": "9876543210",
    "CI_JOB_ID": "4455667788",
    "BUILDKITE_JOB_ID": "0190c5d2-8b4e-4a5e-9b1e-3c2f7b8d9e0a",
    "CIRCLE_WORKFLOW_JOB_ID": "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e",
    "SYSTEM_JOBID": "12f1170f-54f2-53f3-20dd-22fc7dff55f9",
    "BUILD_TAG": "jenkins-folder/app-42",
    "TRAVIS_JOB_ID": "123456789",
}


def test_the_job_table_names_every_variable() -> None:
    assert tuple(JOBS) == JOB_VARIABLES
    text = SCRIPT.read_text()
    for name in JOB_VARIABLES:
        assert f"${name}" in text or f"{{{name}-" in text, name


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_job_precedence(impl: list[str], bins: Path) -> None:
    """Every CI's variable alone names the job; with several, the first in the order
    JOB_VARIABLES (the documented one) wins."""
    for i, name in enumerate(JOB_VARIABLES):
        env = {**base_env(bins), "GOPROXY_ROUTER_URL": GW}
        env.update({n: JOBS[n] for n in JOB_VARIABLES[i:]})
        ran = run_helper(impl, env)
        assert ran.stdout == answer(GW, version="go1.99.1", job=JOBS[name]), name


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_help(impl: list[str]) -> None:
    ran = run_helper(impl, base_env(None), ("--help",))
    assert ran.returncode == 0
    for name in (
        "GOPROXY_ROUTER_URL",
        "GOPROXY_ROUTER_TOKEN_FILE",
        "GOPROXY_ROUTER_TENANT",
        "GOPROXY_ROUTER_JOB_ID",
        "X-CI-Job-ID",
        "go help goauth",
    ):
        assert name in ran.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "goauth-goproxy-router"
    assert script.exists(), "pip install -e . installs the goauth-goproxy-router command"
    env = {**base_env(None), "GOPROXY_ROUTER_URL": GW, "GOVERSION": "go1.24.2"}
    assert run_helper([str(script)], env).stdout == answer(GW, version="go1.24.2")


def test_script_is_posix_and_shellcheck_clean() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
    for argv in SHELLS.values():
        if shutil.which(argv[0]):
            subprocess.run([*argv, "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("no shellcheck (apt-get install shellcheck)")
    subprocess.run(["shellcheck", "--shell=sh", str(SCRIPT)], check=True)


# Values the environment can carry: anything but NUL, weighted towards what is tricky.
_TRICKY = st.sampled_from([*" \t\n\r\x0b\x7f\x01:é€*?[]!$`\\'\"-", "%s", "https://"])
_VALUE = st.lists(
    st.one_of(_TRICKY, st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=4)),
    max_size=6,
).map("".join)
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def parse_user_auth(data: str) -> dict[str, list[tuple[str, str]]]:
    """cmd/go/internal/auth.parseUserAuth, in Python: what the go command accepts (one
    bad line and it drops the command's whole answer)."""
    out: dict[str, list[tuple[str, str]]] = {}
    while data:
        urls = []
        while True:
            line, sep, data = data.partition("\n")
            assert sep, "missing empty line after URLs"
            if not line:
                break
            assert line.startswith("https://") and " " not in line, line
            urls.append(line)
        headers = []
        while True:
            line, sep, data = data.partition("\n")
            assert sep, "missing empty line after headers"
            if not line:
                break
            name, colon, value = line.partition(": ")
            value = value.strip(" \t")
            assert colon and name and set(name) <= _TCHAR, line
            assert all((ord(c) >= 0x20 and ord(c) != 0x7F) or c == "\t" for c in value), line
            headers.append((name, value))
        for url in urls:
            out[url.removeprefix("https://").rstrip("/")] = headers
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(url=_VALUE, token=_VALUE, tenant=_VALUE, job=_VALUE, version=_VALUE, file=st.booleans())
def test_sh_and_python_agree_on_any_values(
    tmp_path: Path, url: str, token: str, tenant: str, job: str, version: str, file: bool
) -> None:
    """Both implementations give the same answer for any values, and whatever they print
    is an answer the go command accepts."""
    env = {
        **base_env(None),
        "GOPROXY_ROUTER_URL": GW + url,
        "GOPROXY_ROUTER_TENANT": tenant,
        "CI_JOB_ID": job,
        "GOVERSION": version,
    }
    if file:
        path = tmp_path / "token"
        path.write_text(token)
        env["GOPROXY_ROUTER_TOKEN_FILE"] = str(path)
    else:
        env["GOPROXY_ROUTER_TOKEN"] = token
    sh = run_helper(["dash", str(SCRIPT)], env)
    py = run_helper([sys.executable, "-m", "router.goauth"], env)
    assert (sh.returncode, sh.stdout, sh.stderr) == (py.returncode, py.stdout, py.stderr)
    if sh.returncode == 0:
        parse_user_auth(sh.stdout)
    secret = token.strip(" \t\n\v\f\r")
    # A short token may be a substring of the helper's own wording ("-", "at"); only a
    # token long enough to be unmistakable can show a leak.
    if len(secret) >= 8 and secret not in GW + url + tenant + job + version:
        assert secret not in sh.stderr


# ---------------------------------------------------------------- the real go command


@dataclass
class Seen:
    """A request as the gateway answered it."""

    path: str
    status: int
    headers: CIMultiDict[str]  # as sent: the go command writes X-Ci-Job-Id


@dataclass
class Site:
    url: str
    ca_file: Path
    rules_path: Path
    app: web.Application
    seen: list[Seen]
    before_answer: list[Callable[[web.Request, web.StreamResponse], Any]]
    upstreams: dict[str, FixtureProxy]

    def seen_for(self, needle: str) -> list[Seen]:
        return [s for s in self.seen if needle in s.path]


TENANTED = simple_module("example.com/tenanted", "v1.0.0")
VERSIONED = simple_module("example.com/versioned", "v1.0.0")
JOBBED = simple_module("example.com/jobbed", "v1.0.0")
OLD, NEW = "old-t0ken-before-rotation", "new-t0ken-after-rotation"
JOB = "9876543210-3"


@functools.cache
def go_version() -> str:
    """The toolchain's exact version, as the go command reports it."""
    done = subprocess.run(
        [go_binary(), "env", "GOVERSION"],
        env={**base_env(None), "GOTOOLCHAIN": "local", "HOME": "/nonexistent"},
        capture_output=True,
        check=True,
        text=True,
    )
    return done.stdout.strip()


def site_rules(path: Path, ups: Mapping[str, FixtureProxy], tokens: list[str]) -> Path:
    exact = go_version().removeprefix("go")
    return write_rules(
        path,
        [{"name": f"{n}-up", "url": p.url} for n, p in ups.items()],
        {n: {"upstreams": [f"{n}-up"]} for n in ups},
        tenants=[{"id": "ci", "tokens": [token_digest(t) for t in tokens], "pool": "ci"}],
        routes=[
            {
                "name": "this-go-exactly",
                "match": {"module": ["example.com/versioned"], "go_version": f"=={exact}"},
                "pool": "modern",
            },
            {
                "name": "this-job",
                "match": {"module": ["example.com/jobbed"], "header": {"X-CI-Job-ID": JOB}},
                "pool": "jobs",
            },
        ],
        default={"pool": "public", "anonymous": False},
        selection={"mode": "ordered"},
        cache={"memory": 0},
    )


@asynccontextmanager
async def https_site(tmp_path: Path, tokens: list[str]) -> AsyncIterator[Site]:
    """The gateway over HTTPS (a trustme CA the go command trusts via SSL_CERT_FILE), with
    one upstream per pool (public, ci: the tenant's, modern: the X-Go-Version route's,
    jobs: the X-CI-Job-ID route's), recording every request as the gateway answers it."""
    modules = ModuleSet([TENANTED, VERSIONED, JOBBED])
    ups = {n: FixtureProxy(modules, name=n) for n in ("public", "ci", "modern", "jobs")}
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with ups["public"], ups["ci"], ups["modern"], ups["jobs"]:
        rules_path = site_rules(tmp_path / "rules.yaml", ups, tokens)
        app = create_app(load_or_raise([rules_path]), rules_paths=(rules_path,))
        seen: list[Seen] = []
        hooks: list[Callable[[web.Request, web.StreamResponse], Any]] = []

        async def record(request: web.Request, response: web.StreamResponse) -> None:
            seen.append(Seen(request.path, response.status, CIMultiDict(request.headers)))
            for hook in hooks:
                await hook(request, response)

        app.on_response_prepare.append(record)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx).start()
        try:
            yield Site(f"https://127.0.0.1:{port}", ca_file, rules_path, app, seen, hooks, ups)
        finally:
            await runner.cleanup()


def helper_command(impl: str, tmp_path: Path) -> str:
    """GOAUTH for `impl`, through a wrapper that logs each run's arguments and stdin
    (never the output: that holds the token) and hands stdin on unchanged."""
    target = {
        "sh": f"sh {SCRIPT}",
        "python": str(Path(sys.executable).parent / "goauth-goproxy-router"),
    }[impl]
    wrapper = tmp_path / "goauth-logged"
    runs = tmp_path / "runs"
    runs.mkdir()
    wrapper.write_text(
        "#!/bin/sh\n"
        f'n=$(ls "{runs}" | wc -l); d="{runs}/$((n + 1))"; mkdir "$d"\n'
        'for a in "$@"; do printf "%s\\n" "$a"; done > "$d/args"\n'
        'cat > "$d/stdin"\n'
        f'exec {target} "$@" < "$d/stdin"\n'
    )
    wrapper.chmod(0o755)
    return f"sh {wrapper}"


@dataclass(frozen=True)
class Run:
    args: list[str]
    stdin: str


def helper_runs(tmp_path: Path) -> list[Run]:
    runs = tmp_path / "runs"
    out = []
    for d in sorted(runs.iterdir(), key=lambda p: int(p.name)):
        out.append(Run((d / "args").read_text().splitlines(), (d / "stdin").read_text()))
    return out


def client_env(
    site: Site, tmp_path: Path, gocache: Path, impl: str, **extra: str
) -> dict[str, str]:
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    (fake / "go").write_text(f'#!/bin/sh\ntouch "{tmp_path}/helper-ran-go"\nexit 1\n')
    (fake / "go").chmod(0o755)
    env = go_env(tmp_path, site.url, ssl_cert_file=site.ca_file, gocache=gocache)
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"  # a go the helper must never need
    env["GOAUTH"] = helper_command(impl, tmp_path)
    env.update(extra)
    return env


E2E_IMPLS = pytest.mark.parametrize("impl", ["sh", "python"])


@pytest.mark.e2e
@E2E_IMPLS
async def test_go_sends_tenant_version_and_job(
    impl: str, tmp_path: Path, gocache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="goproxy_router.access")
    token_file = tmp_path / "token"
    token_file.write_text(OLD + "\n")
    async with https_site(tmp_path, [OLD]) as site:
        env = client_env(
            site,
            tmp_path,
            gocache,
            impl,
            GOPROXY_ROUTER_TOKEN_FILE=str(token_file),
            GOPROXY_ROUTER_TENANT="ci",
            GITHUB_RUN_ID="9876543210",
            GITHUB_RUN_ATTEMPT="3",
        )
        mods = [TENANTED, VERSIONED, JOBBED]
        done = await run_go(
            ["mod", "download", "-json", *(f"{m.path}@{m.version}" for m in mods)], tmp_path, env
        )
        reports = {r["Path"]: r for r in done.check().json_objects()}
        for m in mods:
            assert reports[m.path]["Sum"] == hash_module(m)
        ups = site.upstreams
        # the tenant was identified: its own pool served its module
        assert ups["ci"].count("example.com/tenanted/@v/v1.0.0.zip") == 1
        # the route on this go command's exact version took effect
        assert ups["modern"].count("example.com/versioned/@v/v1.0.0.zip") == 1
        # and the route on the job
        assert ups["jobs"].count("example.com/jobbed/@v/v1.0.0.zip") == 1
        assert ups["public"].requests == []
        assert ups["ci"].count("versioned") == ups["ci"].count("jobbed") == 0
        # what the gateway saw on every request
        assert site.seen and all(s.status == 200 for s in site.seen)
        for s in site.seen:
            assert s.headers["Authorization"] == basic("ci", OLD)
            assert s.headers["X-Go-Version"] == go_version()
            assert s.headers["X-CI-Job-ID"] == JOB
            # its own User-Agent does not say (Go-http-client/1.1 before, GoCommand/1 now)
            assert go_version().removeprefix("go") not in s.headers["User-Agent"]
        # nothing travels upstream: not the token, not the helper's headers
        for up in ups.values():
            for req in up.requests:
                assert not {"Authorization", "X-Go-Version", "X-CI-Job-ID"} & set(req.headers)
    # one run before the first request, none after (nothing failed)
    assert helper_runs(tmp_path) == [Run([], "")]
    assert not (tmp_path / "helper-ran-go").exists(), "GOVERSION comes from the go command"
    access = [r.fields for r in caplog.records if r.name == "goproxy_router.access"]  # type: ignore[attr-defined]
    assert {(a["module"], a["tenant"], a["pool"], a["route"]) for a in access} == {
        ("example.com/tenanted", "ci", "ci", None),
        ("example.com/versioned", "ci", "modern", "this-go-exactly"),
        ("example.com/jobbed", "ci", "jobs", "this-job"),
    }
    assert OLD not in done.stderr and OLD not in caplog.text


@pytest.mark.e2e
@E2E_IMPLS
async def test_a_token_rotated_mid_run_is_picked_up_on_the_401_retry(
    impl: str, tmp_path: Path, gocache: Path
) -> None:
    """The token file is rotated, and the old token revoked at the gateway, while the go
    command runs (here: right after it fetched the .info). The .mod then gets a 401;
    the go command reruns the helper with that URL and the 401 on stdin, the helper
    reads the new token, the retry succeeds and the .zip goes with the new token."""
    token_file = tmp_path / "token"
    token_file.write_text(OLD + "\n")
    async with https_site(tmp_path, [OLD]) as site:

        async def rotate(request: web.Request, response: web.StreamResponse) -> None:
            if request.path.endswith("/@v/v1.0.0.info") and response.status == 200:
                token_file.write_text(NEW + "\n")
                doc = yaml.safe_load(site.rules_path.read_text())
                doc["tenants"][0]["tokens"] = [token_digest(NEW)]
                site.rules_path.write_text(yaml.safe_dump(doc, sort_keys=False))
                reloader = site.app[RELOADER]
                assert reloader is not None and await reloader.reload("rotation")

        site.before_answer.append(rotate)
        env = client_env(
            site,
            tmp_path,
            gocache,
            impl,
            GOPROXY_ROUTER_TOKEN_FILE=str(token_file),
        )
        done = await run_go(
            ["mod", "download", "-json", "example.com/tenanted@v1.0.0"], tmp_path, env
        )
        assert done.check().json_objects()[0]["Sum"] == hash_module(TENANTED)
        trail = [
            (s.path.rsplit("/", 1)[1], s.status, s.headers.get("Authorization")) for s in site.seen
        ]
        assert trail == [
            ("v1.0.0.info", 200, f"Bearer {OLD}"),
            ("v1.0.0.mod", 401, f"Bearer {OLD}"),
            ("v1.0.0.mod", 200, f"Bearer {NEW}"),
            ("v1.0.0.zip", 200, f"Bearer {NEW}"),
        ]
        assert all(s.headers["X-Go-Version"] == go_version() for s in site.seen)
        assert site.upstreams["ci"].count("example.com/tenanted/@v/v1.0.0.mod") == 1
        mod_url = f"{site.url}/example.com/tenanted/@v/v1.0.0.mod"
    runs = helper_runs(tmp_path)
    assert [r.args for r in runs] == [[], [mod_url]]
    assert runs[0].stdin == ""
    status, *headers = runs[1].stdin.split("\n")
    assert status == "HTTP/1.1 401 Unauthorized"
    assert 'Www-Authenticate: Basic realm="goproxy-router"' in headers
    assert runs[1].stdin.endswith("\n\n")
    for secret in (OLD, NEW):
        assert secret not in done.stderr and secret not in runs[1].stdin


@pytest.mark.e2e
async def test_a_bad_token_fails_after_one_retry(tmp_path: Path, gocache: Path) -> None:
    """No loop: one 401, one helper rerun, one retry, then the go command gives up."""
    token_file = tmp_path / "token"
    token_file.write_text("not-the-token\n")
    async with https_site(tmp_path, [OLD]) as site:
        env = client_env(site, tmp_path, gocache, "sh", GOPROXY_ROUTER_TOKEN_FILE=str(token_file))
        done = await asyncio.wait_for(
            run_go(["mod", "download", "example.com/tenanted@v1.0.0"], tmp_path, env), 60
        )
        assert done.returncode != 0
        assert "v1.0.0.info: 401 Unauthorized\n\tserver response: invalid credentials" in (
            done.stderr
        )
        assert [(s.path, s.status) for s in site.seen] == [
            ("/example.com/tenanted/@v/v1.0.0.info", 401)
        ] * 2
        assert site.upstreams["ci"].requests == []
        info_url = f"{site.url}/example.com/tenanted/@v/v1.0.0.info"
    assert [r.args for r in helper_runs(tmp_path)] == [[], [info_url]]
    assert "not-the-token" not in done.stderr


@pytest.mark.e2e
async def test_without_a_token_the_gateway_says_what_is_missing(
    tmp_path: Path, gocache: Path
) -> None:
    """A helper's message on stderr would be lost (the go command logs GOAUTH errors only
    with -x, and only when no command gave credentials for the URL, while X-Go-Version
    always does): so the helper answers the retry as before, and the gateway's 401 body
    is what the user reads."""
    async with https_site(tmp_path, [OLD]) as site:
        env = client_env(site, tmp_path, gocache, "sh", GOPROXY_ROUTER_URL=site.url)
        done = await run_go(["mod", "download", "example.com/tenanted@v1.0.0"], tmp_path, env)
        assert done.returncode != 0
        assert "401 Unauthorized\n\tserver response: credentials required" in done.stderr
        assert len(site.seen) == 2
        for s in site.seen:
            assert s.status == 401 and "Authorization" not in s.headers
            assert s.headers["X-Go-Version"] == go_version()
    assert len(helper_runs(tmp_path)) == 2
