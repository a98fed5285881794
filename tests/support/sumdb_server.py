"""A real Go checksum database (sum.golang.org protocol) on loopback, for integration tests.

It holds go.sum records in a Merkle log, signs tree heads with a note key and answers what
``golang.org/x/mod/sumdb/server.go`` answers::

    db = TestSumDB()                                   # fresh key for localhost.localdev/sumdb
    db.add("example.com/x", "v1.0.0", zip_h1, mod_h1)  # or db.add_module(fixture_module)
    async with db:                                     # or db.start_in_thread() ... db.stop()
        env = go_env(tmp, proxy.url, gosumdb=db.gosumdb)   # "<vkey> <url>"

Endpoints, relative to ``db.url``: ``/lookup/M@V`` (``!``-escaped, raw or as ``%21``),
``/latest``, ``/tile/H/L/N[.p/W]`` (hash tiles of any height, the go command asks for 8)
and ``/tile/H/data/N[.p/W]``. Every request is recorded in ``db.requests``.

Faults: ``tamper_signature = True`` serves tree notes whose signature does not verify;
``fork()`` rewrites history so the tree served from then on is inconsistent with every
tree served before (the go command reports ``SECURITY ERROR``).

The log itself is built with ``router.core.sumdb`` (the code under test); what keeps this
honest is that the real go command accepts it (``tests/core/test_sumdb.py``) and that it
reproduces the Go team's vectors byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self
from urllib.parse import unquote

from aiohttp import web

from router.core import sumdb

from .gomod import FixtureModule, hash_mod, hash_module, unescape_path, unescape_version
from .goproxy_server import RecordedRequest
from .threaded import start_loop_thread, stop_loop_thread

__all__ = ["GO_TEST_SKEY", "GO_TEST_VKEY", "TestSumDB"]

GO_TEST_VKEY = "localhost.localdev/sumdb+00000c67+AcTrnkbUA+TU4heY3hkjiSES/DSQniBqIeQ/YppAUtK6"
"""The go command's own test checksum database key (``cmd/go/proxy_test.go``)."""
GO_TEST_SKEY = (
    "PRIVATE+KEY+localhost.localdev/sumdb+00000c67+AXu6+oaVaOYuQOFrf1V59JK1owcFlJcHwwXHDfDGxSPk"
)
"""Its signer key (public in the Go repository; never trust it for anything real)."""

CT_TEXT = "text/plain; charset=UTF-8"
CT_OCTET = "application/octet-stream"
_MOD_VER = re.compile(r"^[^@]+@v[0-9]+\.[0-9]+\.[0-9]+(-[^@]*)?(\+incompatible)?$")


@dataclass(frozen=True, slots=True)
class _Answer:
    """A response: status, body, Content-Type."""

    status: int
    body: bytes
    content_type: str = CT_TEXT


def _error(status: int, message: str) -> _Answer:
    """Go's ``http.Error``: the message and a newline, as UTF-8 plain text."""
    return _Answer(status, message.encode() + b"\n", "text/plain; charset=utf-8")


class _Log:
    """Records, their stored hashes and the lookup index (callers hold the lock)."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.hashes: list[bytes] = []
        self.ids: dict[tuple[str, str], int] = {}

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        """The stored hashes at ``indexes`` (a ``tlog.HashReader``)."""
        return [self.hashes[i] for i in indexes]

    def append(self, key: tuple[str, str] | None, text: bytes) -> int:
        """Add a record (findable by ``key`` unless None); its id."""
        record_id = len(self.records)
        new = sumdb.stored_hashes(record_id, text, self.read)
        self.records.append(text)
        self.hashes.extend(new)
        if key is not None:
            self.ids[key] = record_id
        return record_id

    @property
    def tree(self) -> sumdb.Tree:
        """The tree head over all records."""
        n = len(self.records)
        return sumdb.Tree(n, sumdb.tree_hash(n, self.read))


class TestSumDB:
    """An in-memory checksum database served over HTTP on ``127.0.0.1`` and a free port.

    ``signer_key`` is a ``PRIVATE+KEY+...`` string; by default a fresh key is generated
    for ``name``. ``base_path`` mounts the endpoints under a prefix (``url`` then ends with
    it). ``data_tile_ids`` chooses the data tile layout: ``x/mod/sumdb/server.go`` writes
    each record with its id (the default), sum.golang.org without (``False``).
    """

    __test__ = False  # a helper, not a pytest test class

    def __init__(
        self,
        name: str = "localhost.localdev/sumdb",
        signer_key: str | None = None,
        *,
        base_path: str = "",
        data_tile_ids: bool = True,
    ) -> None:
        skey = signer_key if signer_key is not None else sumdb.generate_key(name, os.urandom)[0]
        self.signer = sumdb.Signer.parse(skey)
        if self.signer.name != name:
            raise ValueError(f"signer key is for {self.signer.name!r}, not {name!r}")
        self.name = name
        self.base_path = base_path.rstrip("/")
        self.data_tile_ids = data_tile_ids
        self.tamper_signature = False
        self.requests: list[RecordedRequest] = []
        self.forks = 0
        self._lock = threading.Lock()
        self._log = _Log()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ keys and records

    @property
    def verifier_key(self) -> str:
        """The vkey (``name+hash+key``) clients must trust."""
        return self.signer.verifier.vkey

    @property
    def gosumdb(self) -> str:
        """The GOSUMDB value that points the go command here: ``"<vkey> <url>"``."""
        return f"{self.verifier_key} {self.url}"

    def add(self, module: str, version: str, zip_h1: str, mod_h1: str) -> int:
        """Append the record ``M V h1\\nM V/go.mod h1\\n`` for ``module@version``; its id."""
        text = f"{module} {version} {zip_h1}\n{module} {version}/go.mod {mod_h1}\n"
        return self.add_record(module, version, text)

    def add_module(self, m: FixtureModule) -> int:
        """Append the correct record for a fixture module."""
        return self.add(m.path, m.version, hash_module(m), hash_mod(m.mod))

    def add_record(self, module: str, version: str, text: str | bytes) -> int:
        """Append an arbitrary record (valid ``tlog`` record text) found by ``module@version``."""
        data = text.encode() if isinstance(text, str) else text
        sumdb.format_record(0, data)  # validates
        with self._lock:
            if (module, version) in self._log.ids:
                raise ValueError(f"{module}@{version} already has a record")
            return self._log.append((module, version), data)

    def fork(self, keep: int | None = None) -> None:
        """Rewrite history: serve a log inconsistent with every tree served so far.

        The first ``keep`` records stay (default: all but the last); a marker record takes
        the next id and the dropped records follow it under new ids, so every module still
        resolves but the new tree does not extend the old one.
        """
        with self._lock:
            old = self._log
            keep = len(old.records) - 1 if keep is None else keep
            if not 0 <= keep < len(old.records):
                raise ValueError("fork needs at least one record to rewrite")
            self.forks += 1
            by_id = {i: key for key, i in old.ids.items()}
            log = _Log()
            for i in range(keep):
                log.append(by_id.get(i), old.records[i])
            log.append(None, _marker(self.forks))
            for i in range(keep, len(old.records)):
                log.append(by_id.get(i), old.records[i])
            self._log = log

    @property
    def tree(self) -> sumdb.Tree:
        """The current tree head."""
        with self._lock:
            return self._log.tree

    def signed_tree(self) -> bytes:
        """The signed note for the current tree (tampered if ``tamper_signature``)."""
        signed = sumdb.sign_note(sumdb.format_tree(self.tree).decode(), self.signer)
        return _tamper(signed) if self.tamper_signature else signed

    # ------------------------------------------------------------------ the protocol

    def answer(self, path: str) -> _Answer:
        """What ``x/mod/sumdb/server.go`` answers for a percent-decoded request path."""
        if path.startswith("/lookup/"):
            return self._lookup(path[len("/lookup/") :])
        if path == "/latest":
            return _Answer(200, self.signed_tree())
        if path.startswith("/tile/"):
            return self._tile(path[1:])
        return _error(404, "404 page not found")

    def _lookup(self, mod: str) -> _Answer:
        """``/lookup/M@V``: the record and the signed tree, or server.go's errors."""
        if not _MOD_VER.match(mod):
            return _error(400, "invalid module@version syntax")
        escaped_path, _, escaped_version = mod.partition("@")
        try:
            key = (unescape_path(escaped_path), unescape_version(escaped_version))
        except ValueError as exc:  # Go: not a not-found error, so 500
            return _error(500, str(exc))
        with self._lock:
            record_id = self._log.ids.get(key)
            text = self._log.records[record_id] if record_id is not None else b""
        if record_id is None:
            return _error(404, f"not found: {key[0]}@{key[1]}")
        return _Answer(200, sumdb.format_record(record_id, text) + self.signed_tree())

    def _tile(self, path: str) -> _Answer:
        """``/tile/...``: a hash or data tile that exists in the current log, else 404."""
        try:
            tile = sumdb.parse_tile_path(path)
        except sumdb.BadTilePathError:
            return _error(400, "invalid tile syntax")
        with self._lock:
            size = len(self._log.records)
            start = tile.N << tile.H
            if tile.L == -1:
                if start + tile.W > size:
                    return _error(404, f"not found: {path}")
                records = self._log.records[start : start + tile.W]
                first = start if self.data_tile_ids else None
                return _Answer(200, sumdb.format_data_tile(records, first))
            if (start + tile.W) << (tile.L * tile.H) > size:
                return _error(404, f"not found: {path}")
            return _Answer(200, sumdb.read_tile_data(tile, self._log.read), CT_OCTET)

    # ------------------------------------------------------------------ HTTP

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` plus ``base_path`` (only once started)."""
        if self._port is None:
            raise RuntimeError("the test checksum database is not running")
        return f"http://127.0.0.1:{self._port}{self.base_path}"

    def requests_for(self, path_substring: str = "") -> list[RecordedRequest]:
        """Recorded requests whose raw or decoded path contains ``path_substring``."""
        return [
            r
            for r in list(self.requests)
            if path_substring in r.path or path_substring in r.decoded_path
        ]

    async def _handle(self, request: web.Request) -> web.Response:
        """Record the request, then answer it."""
        raw = request.raw_path
        decoded = unquote(raw.split("?", 1)[0])
        self.requests.append(RecordedRequest(request.method, raw, dict(request.headers), decoded))
        if self.base_path and not decoded.startswith(self.base_path + "/"):
            answer = _error(404, "404 page not found")
        else:
            answer = self.answer(decoded[len(self.base_path) :])
        headers = {"Content-Type": answer.content_type}
        if answer.status >= 400:
            headers["X-Content-Type-Options"] = "nosniff"
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    async def start(self) -> Self:
        """Start serving on the running event loop."""
        if self._runner is not None:
            raise RuntimeError("the test checksum database is already running")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.25)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner, self._port = runner, sock.getsockname()[1]
        return self

    async def aclose(self) -> None:
        """Stop serving."""
        runner, self._runner, self._port = self._runner, None, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def start_in_thread(self, timeout: float = 30.0) -> Self:
        """Serve from a daemon thread with its own event loop; returns once listening."""
        self._loop, self._thread = start_loop_thread(self.start, f"sumdb-{self.name}", timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a database started with :meth:`start_in_thread` and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        stop_loop_thread(loop, thread, self.aclose, timeout)
        self._loop = self._thread = None

    def __enter__(self) -> Self:
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _marker(n: int) -> bytes:
    """A record that exists only in fork number ``n``."""
    fake = base64.b64encode(hashlib.sha256(f"fork {n}".encode()).digest()).decode()
    return f"example.invalid/fork v0.0.{n} h1:{fake}\n".encode()


def _tamper(signed: bytes) -> bytes:
    """Flip one bit of the Ed25519 part of the last signature (the key hash stays valid)."""
    text, _, sig_line = signed[:-1].rpartition(b"\n")
    prefix, _, b64 = sig_line.rpartition(b" ")
    raw = bytearray(base64.b64decode(b64))
    raw[10] ^= 0x01
    return text + b"\n" + prefix + b" " + base64.b64encode(bytes(raw)) + b"\n"
