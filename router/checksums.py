"""Checksum databases as the gateway uses them: verify-before-serve and a checked sumdb proxy.

One :class:`ChecksumDatabase` per configured DB (name and key) lives for the whole process,
across reloads: it remembers the latest tree head it verified, so every new head must be
proven consistent with it (a fork is an alarm), plus the tiles and records it already proved.
Reading a DB goes through the pool's upstreams that proxy it (``/sumdb/NAME/...``), then its
own ``url``; a source that serves a bad signature, a tree inconsistent with what this process
saw, or tiles that do not prove, is ejected for a while and the next one is asked.

The protocol itself (notes, tlog proofs, tiles, go.sum lines) is the pure
``router.core.sumdb``; this module only fetches the bytes it names.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from router.cache.disk import Spool
from router.core import sumdb
from router.core.dirhash import hash_go_mod, hash_zip_file
from router.core.model import ChecksumDB, Rules, Upstream
from router.core.protocol import MAX_BYTES, Kind, SumdbRequest
from router.observability import Metrics
from router.serving.walk import Rejected, spool_body
from router.tasks import TaskGroup
from router.upstream import UpstreamAnswer, UpstreamClient, UpstreamError

log = logging.getLogger("goproxy_router.checksums")

GO_SUMDB = ChecksumDB(
    name="sum.golang.org",
    key="sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8",
    url="https://sum.golang.org",
)
"""The go command's default checksum database and its built-in verifier key."""

EJECT_SECONDS = 300.0  # a source that lied is not asked again for this long
MAX_TILES = 2048  # proven tiles kept (a full height-8 tile is 8 KiB: at most 16 MiB)
MAX_RECORDS = 65536  # proven module@version hashes kept
_LIMIT = MAX_BYTES[Kind.SUMDB]


class ChecksumUnavailable(Exception):
    """The checksum DB could not vouch for a module version: serve nothing (fail closed)."""


class _Untrusted(Exception):
    """A source's answer failed a cryptographic check: eject the source, count, go on."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # signature | fork | proof


class DirectSumdbClient(UpstreamClient):
    """A checksum DB read from its own ``url``: ``sumdb/NAME/rest`` maps to ``url/rest``."""

    def __init__(self, db: ChecksumDB, on_connection: Callable[[str, str], None] | None) -> None:
        assert db.url is not None
        super().__init__(Upstream(name=f"sumdb:{db.name}", url=db.url.rstrip("/")), on_connection)
        self._prefix = f"sumdb/{db.name}/"

    def url_for(self, path: str) -> str:
        return f"{self.config.url}/{path.removeprefix(self._prefix)}"


@dataclass(slots=True)
class ChecksumDatabase:
    """What this process knows and has proven about one checksum database."""

    config: ChecksumDB
    metrics: Metrics
    clock: Callable[[], float] = time.monotonic
    direct: DirectSumdbClient | None = None
    latest: tuple[sumdb.Tree, bytes] | None = None
    state_file: Path | None = None  # where the latest head survives restarts (cache.dir)
    alarm: str | None = None  # the last cryptographic failure, for /debug
    ejected: dict[str, float] = field(default_factory=dict)
    _verifier: sumdb.Verifier = field(init=False)
    _tiles: OrderedDict[str, bytes] = field(default_factory=OrderedDict)
    _records: OrderedDict[tuple[str, str], sumdb.GoSumHashes] = field(default_factory=OrderedDict)
    _flights: dict[tuple[str, str], asyncio.Future[sumdb.GoSumHashes]] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self._verifier = sumdb.Verifier.parse(self.config.key)

    @property
    def name(self) -> str:
        return self.config.name

    # ------------------------------------------------------------------ sources

    def sources(self, clients: Iterable[UpstreamClient]) -> list[UpstreamClient]:
        """Who to read this DB from: `clients` that proxy it, then its url; ejected ones
        only when nobody else is left."""
        found = [c for c in clients if self.name in c.config.sumdb]
        if self.direct is not None:
            found.append(self.direct)
        now = self.clock()
        trusted = [c for c in found if self.ejected.get(c.name, 0.0) <= now]
        return trusted or found

    def eject(self, source: str, reason: str, message: str) -> None:
        self.ejected[source] = self.clock() + EJECT_SECONDS
        self.alarm = f"{reason}: {source}: {message.splitlines()[0]}"
        self.metrics.sumdb_inconsistent.labels(self.name, reason).inc()
        log.error(
            "checksum database %s: source %s ejected for %gs (%s): %s",
            self.name,
            source,
            EJECT_SECONDS,
            reason,
            message,
        )

    async def _get(self, source: UpstreamClient, rest: str) -> UpstreamAnswer:
        return await source.fetch(f"sumdb/{self.name}/{rest}", limit=_LIMIT)

    # ------------------------------------------------------------------ tree heads

    async def accept_note(self, note_text: bytes, source: UpstreamClient) -> sumdb.Tree:
        """The tree in a signed note, once its signature verifies and it is proven
        consistent with the latest tree this process accepted (which it may advance)."""
        try:
            note = sumdb.open_note(note_text, [self._verifier])
            tree = sumdb.parse_tree(note.text)
        except (sumdb.InvalidSignatureError, sumdb.UnverifiedNoteError) as exc:
            raise _Untrusted("signature", f"tree note does not verify: {exc}") from exc
        except sumdb.SumDBError as exc:  # garbage, not a forgery: not worth an alarm
            raise ChecksumUnavailable(f"{source.name}: malformed tree note: {exc}") from exc
        async with self._lock:
            if self.latest is None:
                self._adopt(tree, note_text)
                await self._save(note_text)
                return tree
            old, old_note = self.latest
            if tree.n == old.n:
                if tree.hash != old.hash:
                    raise _Untrusted(
                        "fork", f"two different signed trees of size {tree.n}: the log forked"
                    )
                return tree
            if tree.n > old.n:
                await self._prove(old, old_note, tree, note_text, source)
                self._adopt(tree, note_text)
                await self._save(note_text)
            else:
                await self._prove(tree, note_text, old, old_note, source)
            return tree

    async def _save(self, note_text: bytes) -> None:
        if self.state_file is not None:
            try:
                await asyncio.to_thread(_write_atomically, self.state_file, note_text)
            except OSError as exc:
                log.warning("checksum database %s: cannot save its tree head: %s", self.name, exc)

    def load(self, state_file: Path) -> None:
        """Start from the tree head a previous run accepted (it must still verify)."""
        self.state_file = state_file
        if self.latest is not None:
            return
        try:
            note_text = state_file.read_bytes()
            tree = sumdb.parse_tree(sumdb.open_note(note_text, [self._verifier]).text)
        except FileNotFoundError:
            return
        except (OSError, sumdb.SumDBError) as exc:
            log.warning("checksum database %s: ignoring saved tree head: %s", self.name, exc)
            return
        self._adopt(tree, note_text)
        log.info("checksum database %s: continuing from tree#%d", self.name, tree.n)

    def _adopt(self, tree: sumdb.Tree, note_text: bytes) -> None:
        self.latest = (tree, note_text)
        self.metrics.sumdb_tree_size.labels(self.name).set(tree.n)

    async def _prove(
        self,
        older: sumdb.Tree,
        older_note: bytes,
        newer: sumdb.Tree,
        newer_note: bytes,
        source: UpstreamClient,
    ) -> None:
        tiles = await self._fetch_tiles(sumdb.consistency_tiles(older, newer), source)
        try:
            sumdb.check_trees(older, older_note, newer, newer_note, tiles)
        except sumdb.ForkError as exc:
            raise _Untrusted("fork", exc.report) from exc
        except sumdb.SumDBError as exc:
            raise _Untrusted("proof", f"tiles do not prove tree#{newer.n}: {exc}") from exc
        self._keep_tiles(tiles)

    # ------------------------------------------------------------------ tiles

    async def _fetch_tiles(
        self,
        wanted: Sequence[sumdb.Tile],
        source: UpstreamClient,
        known: Mapping[sumdb.Tile, bytes] | None = None,
    ) -> dict[sumdb.Tile, bytes]:
        """The tiles `wanted`: proven ones from memory, `known` ones as given (they are
        proven along with the rest), the others from `source`."""
        got: dict[sumdb.Tile, bytes] = {}
        missing = []
        for tile in wanted:
            data = self._tiles.get(tile.path())
            if data is not None:
                self._tiles.move_to_end(tile.path())
            elif known is not None:
                data = known.get(tile)
            if data is None:
                missing.append(tile)
            else:
                got[tile] = data
        fetched = await asyncio.gather(*(self._fetch_tile(t, source) for t in missing))
        got.update(zip(missing, fetched, strict=True))
        return got

    async def _fetch_tile(self, tile: sumdb.Tile, source: UpstreamClient) -> bytes:
        answer = await self._get(source, tile.path())
        if answer.status in (404, 410) and tile.W != 1 << tile.H:
            # A partial tile may have been completed since; the full one holds it.
            full = await self._get(source, replace(tile, W=1 << tile.H).path())
            if full.status == 200:
                return (full.body or b"")[: tile.W * sumdb.HASH_SIZE]
        if answer.status != 200:
            raise ChecksumUnavailable(f"{source.name}: {tile.path()}: status {answer.status}")
        return answer.body or b""

    def _keep_tiles(self, tiles: Mapping[sumdb.Tile, bytes]) -> None:
        """Remember tiles that just proved something (never unproven ones)."""
        for tile, data in tiles.items():
            self._tiles[tile.path()] = data
            self._tiles.move_to_end(tile.path())
        while len(self._tiles) > MAX_TILES:
            self._tiles.popitem(last=False)

    # ------------------------------------------------------------------ records

    async def hashes(
        self, module: str, version: str, sources: Sequence[UpstreamClient]
    ) -> sumdb.GoSumHashes:
        """The proven go.sum hashes of module@version; ChecksumUnavailable if no source
        can prove them. Concurrent asks for one version share one lookup."""
        key = (module, version)
        known = self._records.get(key)
        if known is not None:
            self._records.move_to_end(key)
            return known
        flight = self._flights.get(key)
        if flight is not None:
            return await asyncio.shield(flight)
        future: asyncio.Future[sumdb.GoSumHashes] = asyncio.get_running_loop().create_future()
        self._flights[key] = future
        try:
            found = await self._lookup(module, version, sources)
            future.set_result(found)
            return found
        except BaseException as exc:
            # Followers fail closed with a reason; they are not cancelled with the leader.
            shared = exc if isinstance(exc, Exception) else ChecksumUnavailable("lookup cancelled")
            future.set_exception(shared)
            future.exception()  # retrieved: followers may or may not exist
            raise
        finally:
            del self._flights[key]

    async def _lookup(
        self, module: str, version: str, sources: Sequence[UpstreamClient]
    ) -> sumdb.GoSumHashes:
        if not sources:
            raise ChecksumUnavailable(
                f"checksum database {self.name}: no upstream of this pool proxies it "
                "and it has no url"
            )
        problems = []
        for source in sources:
            try:
                return await self._lookup_at(module, version, source)
            except _Untrusted as exc:
                self.eject(source.name, exc.reason, str(exc))
                problems.append(f"{source.name}: {str(exc).splitlines()[0]}")
            except (ChecksumUnavailable, UpstreamError, sumdb.SumDBError) as exc:
                text = str(exc)
                problems.append(text if source.name in text else f"{source.name}: {text}")
        raise ChecksumUnavailable(
            f"checksum database {self.name} cannot vouch for {module}@{version}: "
            + "; ".join(problems)
        )

    async def _lookup_at(
        self, module: str, version: str, source: UpstreamClient
    ) -> sumdb.GoSumHashes:
        answer = await self._get(source, sumdb.lookup_path(module, version).lstrip("/"))
        if answer.status in (404, 410):
            raise ChecksumUnavailable(f"{source.name}: no record of {module}@{version}")
        if answer.status != 200:
            raise ChecksumUnavailable(f"{source.name}: lookup answered {answer.status}")
        try:
            found = sumdb.parse_lookup(answer.body or b"")
        except sumdb.SumDBError as exc:
            raise ChecksumUnavailable(f"{source.name}: malformed lookup answer: {exc}") from exc
        return await self._prove_record(found, module, version, source)

    async def _prove_record(
        self, found: sumdb.Lookup, module: str, version: str, source: UpstreamClient
    ) -> sumdb.GoSumHashes:
        """Check a lookup answer: its note, then its record by an inclusion proof."""
        tree = await self.accept_note(found.note, source)
        tiles = await self._fetch_tiles(sumdb.record_tiles(tree, found.id), source)
        try:
            sumdb.verify_record(tree, found.id, found.text, tiles)
        except sumdb.SumDBError as exc:
            raise _Untrusted("proof", f"record {found.id} is not proven in the log: {exc}") from exc
        self._keep_tiles(tiles)
        hashes = sumdb.gosum_lines(found.text, module, version)
        self._records[(module, version)] = hashes
        while len(self._records) > MAX_RECORDS:
            self._records.popitem(last=False)
        return hashes

    # ------------------------------------------------------------------ the proxy

    async def check_proxied(
        self, request: SumdbRequest, source: UpstreamClient, answer: UpstreamAnswer
    ) -> Rejected | None:
        """A proxied answer, before anyone gets it: a lookup's note and record proven, a
        latest note verified and consistent, a hash tile proven against a signed tree.
        A source caught lying is ejected."""
        body = answer.body or b""
        try:
            if request.rest.startswith("tile/"):
                await self._check_tile(request.rest, body, source)
            elif request.module is not None and request.version is not None:
                try:
                    found = sumdb.parse_lookup(body)
                except sumdb.SumDBError as exc:
                    raise ChecksumUnavailable(f"malformed lookup answer: {exc}") from exc
                await self._prove_record(found, request.module, request.version, source)
            else:
                await self.accept_note(body, source)
        except _Untrusted as exc:
            first = str(exc).splitlines()[0]
            self.eject(answer.upstream, exc.reason, str(exc))
            return Rejected(f"checksum database {self.name}: {first}", "sumdb_inconsistent")
        except (sumdb.SumDBError, ChecksumUnavailable, UpstreamError) as exc:
            return Rejected(f"checksum database {self.name}: {exc}", "sumdb_unproven")
        return None

    async def _check_tile(self, rest: str, data: bytes, source: UpstreamClient) -> None:
        """A hash tile must hold exactly the hashes a signed tree proves (data tiles are
        records, which the go command checks itself)."""
        tile = sumdb.parse_tile_path(rest)
        if tile.L < 0:
            return
        level, first = tile.L * tile.H, tile.N << tile.H
        tree = await self._tree_covering((first + tile.W) << level, source)
        indexes = [sumdb.stored_hash_index(level, first + i) for i in range(tile.W)]
        reader = sumdb.TileHashReader(tree, tile.H)
        tiles = await self._fetch_tiles(reader.hashes_for(indexes), source, known={tile: data})
        try:
            hashes = reader.read_hashes(tiles, indexes)
        except sumdb.SumDBError as exc:
            why = f"{tile.path()} is not proven by tree#{tree.n}: {exc}"
            raise _Untrusted("proof", why) from exc
        if b"".join(hashes) != data:
            raise _Untrusted("proof", f"{tile.path()} differs from what tree#{tree.n} proves")
        self._keep_tiles(tiles)

    async def _tree_covering(self, size: int, source: UpstreamClient) -> sumdb.Tree:
        """The latest accepted tree if it has `size` records, else the source's latest."""
        if self.latest is not None and self.latest[0].n >= size:
            return self.latest[0]
        answer = await self._get(source, "latest")
        if answer.status != 200:
            raise ChecksumUnavailable(f"{source.name}: latest answered {answer.status}")
        tree = await self.accept_note(answer.body or b"", source)
        if tree.n < size:
            raise ChecksumUnavailable(f"{source.name}: a tile beyond its own tree#{tree.n}")
        return tree

    def view(self) -> dict[str, object]:
        now = self.clock()
        return {
            "tree_size": self.latest[0].n if self.latest else None,
            "alarm": self.alarm,
            "ejected": {k: round(v - now, 1) for k, v in self.ejected.items() if v > now},
            "proven_records": len(self._records),
            "proven_tiles": len(self._tiles),
        }


class ChecksumRegistry:
    """Every checksum database the rules name (sum.golang.org when they name none)."""

    def __init__(
        self, metrics: Metrics, on_connection: Callable[[str, str], None] | None = None
    ) -> None:
        self.metrics = metrics
        self._on_connection = on_connection
        self._dbs: dict[tuple[str, str], ChecksumDatabase] = {}
        self.configured: dict[str, ChecksumDatabase] = {}
        self.primary: ChecksumDatabase | None = None
        self._retired: list[UpstreamClient] = []  # closed at the next reload, not mid-request
        self._state_dir: str | None = None  # cache.dir as the process started (restart only)

    async def apply(self, rules: Rules) -> None:
        """Adopt a rule set: databases whose name and key did not change keep their state.

        Only databases the rules name are proxied and checked at `/sumdb/NAME/`; the
        implicit sum.golang.org is what verification uses when the rules name none."""
        retired, self._retired = self._retired, []
        for client in retired:
            await client.close()
        if self._state_dir is None:
            self._state_dir = rules.cache.dir
        configured: dict[str, ChecksumDatabase] = {}
        for cfg in rules.checksum_dbs or (GO_SUMDB,):
            db = configured[cfg.name] = await self._database(cfg)
            if self._state_dir:
                db.load(Path(self._state_dir) / "sumdb" / f"{cfg.name}.latest")
        for db in self._dbs.values():
            if db.direct is not None and configured.get(db.name) is not db:
                self._retired.append(db.direct)  # no longer named by the rules
                db.direct = None
        self.primary = next(iter(configured.values()))
        self.configured = configured if rules.checksum_dbs else {}

    async def _database(self, cfg: ChecksumDB) -> ChecksumDatabase:
        db = self._dbs.get((cfg.name, cfg.key))
        if db is None:
            db = ChecksumDatabase(cfg, self.metrics)
            self._dbs[(cfg.name, cfg.key)] = db
        if db.config.url != cfg.url and db.direct is not None:
            self._retired.append(db.direct)  # requests in flight may still use it
            db.direct = None
        db.config = cfg
        if cfg.url and db.direct is None:
            db.direct = DirectSumdbClient(cfg, self._on_connection)
            await db.direct.start()
        return db

    def get(self, name: str) -> ChecksumDatabase | None:
        return self.configured.get(name)

    def view(self) -> dict[str, object]:
        shown = dict(self.configured)
        if self.primary is not None:
            shown.setdefault(self.primary.name, self.primary)
        return {name: db.view() for name, db in shown.items()}

    async def close(self) -> None:
        for client in self._retired:
            await client.close()
        self._retired = []
        for db in self._dbs.values():
            await _close(db.direct)
            db.direct = None


async def _close(client: UpstreamClient | None) -> None:
    if client is not None:
        await client.close()


@dataclass(slots=True)
class Verification:
    """Verify-before-serve for one .mod or .zip request.

    :meth:`start` begins the checksum lookup while the upstream walk fetches the artifact;
    :meth:`check` is the walk's acceptance test: it hashes the answer (a zip is spooled to
    a file and hashed from there, never held in memory) and compares it with the DB's."""

    db: ChecksumDatabase
    sources: Sequence[UpstreamClient]
    module: str
    version: str
    kind: Kind
    metrics: Metrics
    tasks: TaskGroup
    new_spool: Callable[[int | None], Spool | None] | None = None
    deadline: float = 600.0
    spool: Spool | None = None  # the accepted zip, closed
    _expected: asyncio.Task[sumdb.GoSumHashes | ChecksumUnavailable] | None = None

    def start(self) -> None:
        if self._expected is None:
            self._expected = self.tasks.spawn(self._lookup(), name="checksum-lookup")

    async def _lookup(self) -> sumdb.GoSumHashes | ChecksumUnavailable:
        try:
            return await self.db.hashes(self.module, self.version, self.sources)
        except ChecksumUnavailable as exc:
            return exc  # a value: the walk decides, nothing to log as a task failure

    async def expected(self) -> str:
        """The DB's h1 hash for this artifact; ChecksumUnavailable when it has none."""
        self.start()
        assert self._expected is not None
        hashes = await asyncio.shield(self._expected)
        if isinstance(hashes, ChecksumUnavailable):
            self.metrics.verifications.labels(self.kind.value, "unavailable").inc()
            raise ChecksumUnavailable(str(hashes))
        want = hashes.zip if self.kind is Kind.ZIP else hashes.mod
        if want is None:
            self.metrics.verifications.labels(self.kind.value, "unavailable").inc()
            raise ChecksumUnavailable(
                f"checksum database {self.db.name}: the record of {self.module}@{self.version} "
                f"has no {self.what} hash"
            )
        return want

    @property
    def what(self) -> str:
        return "zip" if self.kind is Kind.ZIP else "go.mod"

    async def check(self, client: UpstreamClient, answer: UpstreamAnswer) -> Rejected | None:
        """The walk's acceptance test: None when the answer has the DB's hash."""
        try:
            return await self._check(client, answer)
        except BaseException:
            self.discard()  # cancelled, or the DB cannot vouch: no spool is left behind
            raise

    async def _check(self, client: UpstreamClient, answer: UpstreamAnswer) -> Rejected | None:
        if self.kind is Kind.ZIP:
            got_or_rejected = await self._hash_zip(answer)
            if isinstance(got_or_rejected, Rejected):
                return got_or_rejected
            got = got_or_rejected
        else:
            got = hash_go_mod(answer.body or b"")
        want = await self.expected()
        if got == want:
            self.metrics.verifications.labels(self.kind.value, "ok").inc()
            return None
        self.discard()
        self.metrics.verifications.labels(self.kind.value, "mismatch").inc()
        reason = (
            f"checksum mismatch for {self.module}@{self.version} {self.what}: "
            f"{client.name} served {got}, checksum database {self.db.name} has {want}"
        )
        log.error("%s; answer discarded", reason)
        return Rejected(reason, "checksum_mismatch")

    async def _hash_zip(self, answer: UpstreamAnswer) -> str | Rejected:
        assert self.new_spool is not None
        spool = self.new_spool(answer.content_length)
        if spool is None:
            answer.close()
            raise ChecksumUnavailable(
                f"cannot verify {self.module}@{self.version}: no room to spool the zip "
                "(cache.spool is full)"
            )
        problem = await spool_body(answer, spool, self.deadline)
        if problem is not None:
            if problem.cause == "spool":
                raise ChecksumUnavailable(f"cannot verify the zip: {problem.reason}")
            return problem
        self.spool = spool
        prefix = f"{self.module}@{self.version}/"
        try:
            return await asyncio.to_thread(_hash_file, spool.path, prefix)
        except Exception as exc:  # untrusted bytes: any failure to hash means "not it"
            return f"(not a module zip: {type(exc).__name__}: {exc})"

    def discard(self) -> None:
        if self.spool is not None:
            self.spool.discard()
            self.spool = None


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _hash_file(path: Path, prefix: str) -> str:
    with path.open("rb") as fh:
        return hash_zip_file(fh, prefix)
