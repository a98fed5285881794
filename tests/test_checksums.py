"""``router.checksums`` against a real test checksum database on loopback.

Every lookup goes over HTTP to ``support.sumdb_server.TestSumDB`` through real
``UpstreamClient``/``DirectSumdbClient`` instances; faults (a bad signature, a forked log,
a liar with another key) are the server's own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from support.clock import Clock
from support.gateway import one_pool_rules
from support.gomod import FixtureModule, hash_mod, hash_module, simple_module
from support.sumdb_server import TestSumDB

from router.checksums import (
    EJECT_SECONDS,
    GO_SUMDB,
    ChecksumDatabase,
    ChecksumRegistry,
    ChecksumUnavailable,
    DirectSumdbClient,
    Verification,
)
from router.config import load_or_raise
from router.core import sumdb
from router.core.model import ChecksumDB, Rules, Upstream
from router.core.protocol import Kind, SumdbRequest
from router.observability import Metrics
from router.serving.walk import Rejected
from router.tasks import TaskGroup
from router.upstream import UpstreamAnswer, UpstreamClient

NAME = "sum.test.example"


def module(n: int, version: str = "v1.0.0") -> FixtureModule:
    return simple_module(f"example.com/m{n}", version)


def publish(db: TestSumDB, m: FixtureModule) -> None:
    db.add(m.path, m.version, hash_module(m), hash_mod(m.mod))


def mirror_url(db: TestSumDB) -> str:
    """The root a proxy at which ``sumdb/NAME/...`` reaches ``db`` (mounted there)."""
    return db.url.removesuffix(db.base_path)


def inconsistent(metrics: Metrics, reason: str, name: str = NAME) -> float:
    value = metrics.registry.get_sample_value(
        "goproxy_router_sumdb_inconsistent_total", {"sumdb": name, "reason": reason}
    )
    return value or 0.0


def tree_size(metrics: Metrics, name: str = NAME) -> float | None:
    return metrics.registry.get_sample_value("goproxy_router_sumdb_tree_size", {"sumdb": name})


class Env:
    """Test checksum DBs mounted at ``/sumdb/NAME`` and proxy clients in front of them."""

    def __init__(self, stack: AsyncExitStack) -> None:
        self.stack = stack
        self.metrics = Metrics()
        self.clock = Clock(1000.0)

    async def sumdb(self, name: str = NAME, signer_key: str | None = None) -> TestSumDB:
        db = TestSumDB(name, signer_key, base_path=f"/sumdb/{name}")
        return await self.stack.enter_async_context(db)

    async def mirror(self, db: TestSumDB, name: str = "mirror") -> UpstreamClient:
        client = UpstreamClient(Upstream(name=name, url=mirror_url(db), sumdb=(db.name,)))
        await client.start()
        self.stack.push_async_callback(client.close)
        return client

    def database(self, db: TestSumDB, key: str | None = None) -> ChecksumDatabase:
        cfg = ChecksumDB(db.name, key or db.verifier_key)
        return ChecksumDatabase(cfg, self.metrics, clock=self.clock)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with AsyncExitStack() as stack:
        yield Env(stack)


# ---------------------------------------------------------------------------- lookups


async def test_hashes_are_the_records_zip_and_mod_h1(env: Env) -> None:
    db = await env.sumdb()
    m = module(1)
    publish(db, m)
    publish(db, module(2))
    checked = env.database(db)
    mirror = await env.mirror(db)

    got = await checked.hashes(m.path, m.version, [mirror])

    assert got == sumdb.GoSumHashes(zip=hash_module(m), mod=hash_mod(m.mod))
    assert checked.latest is not None and checked.latest[0] == db.tree
    assert tree_size(env.metrics) == 2
    assert checked.alarm is None and checked.ejected == {}


async def test_direct_client_reads_the_db_from_its_url(env: Env) -> None:
    db = await env.sumdb()
    m = module(1)
    publish(db, m)
    checked = env.database(db)
    direct = DirectSumdbClient(ChecksumDB(NAME, db.verifier_key, url=db.url), None)
    await direct.start()
    env.stack.push_async_callback(direct.close)
    checked.direct = direct

    sources = checked.sources([])
    assert sources == [direct]
    got = await checked.hashes(m.path, m.version, sources)

    assert got.zip == hash_module(m)
    assert [r.decoded_path for r in db.requests_for("/lookup/")] == [
        f"/sumdb/{NAME}/lookup/{m.path}@{m.version}"
    ]


async def test_a_known_version_is_answered_without_asking_the_db(env: Env) -> None:
    db = await env.sumdb()
    m = module(1)
    publish(db, m)
    checked = env.database(db)
    mirror = await env.mirror(db)
    first = await checked.hashes(m.path, m.version, [mirror])
    asked = len(db.requests)

    again = await checked.hashes(m.path, m.version, [mirror])

    assert again == first
    assert len(db.requests) == asked


async def test_concurrent_asks_for_one_version_share_one_lookup(env: Env) -> None:
    db = await env.sumdb()
    m = module(1)
    publish(db, m)
    checked = env.database(db)
    mirror = await env.mirror(db)

    results = await asyncio.gather(*(checked.hashes(m.path, m.version, [mirror]) for _ in range(8)))

    assert len(set(results)) == 1
    assert len(db.requests_for("/lookup/")) == 1


async def test_proven_tiles_are_not_fetched_again_in_the_same_tree(env: Env) -> None:
    db = await env.sumdb()
    mods = [module(i) for i in range(5)]
    for m in mods:
        publish(db, m)
    checked = env.database(db)
    mirror = await env.mirror(db)
    await checked.hashes(mods[0].path, mods[0].version, [mirror])
    tiles = len(db.requests_for("/tile/"))
    assert tiles > 0

    for m in mods[1:]:
        assert (await checked.hashes(m.path, m.version, [mirror])).zip == hash_module(m)

    assert len(db.requests_for("/lookup/")) == 5
    assert len(db.requests_for("/tile/")) == tiles


async def test_a_grown_tree_is_proven_consistent_and_adopted(env: Env) -> None:
    db = await env.sumdb()
    first, later = module(1), module(2)
    publish(db, first)
    checked = env.database(db)
    mirror = await env.mirror(db)
    await checked.hashes(first.path, first.version, [mirror])
    assert checked.latest is not None and checked.latest[0].n == 1
    assert tree_size(env.metrics) == 1

    for i in range(3, 12):
        publish(db, module(i))
    publish(db, later)
    got = await checked.hashes(later.path, later.version, [mirror])

    assert got.mod == hash_mod(later.mod)
    assert checked.latest is not None and checked.latest[0] == db.tree
    assert checked.latest[0].n == 11
    assert tree_size(env.metrics) == 11
    assert checked.alarm is None
    assert inconsistent(env.metrics, "fork") == 0


async def test_an_unknown_module_is_unavailable_with_no_record(env: Env) -> None:
    db = await env.sumdb()
    publish(db, module(1))
    checked = env.database(db)
    mirror = await env.mirror(db)

    with pytest.raises(ChecksumUnavailable, match="no record") as caught:
        await checked.hashes("example.com/unknown", "v1.0.0", [mirror])

    assert "example.com/unknown@v1.0.0" in str(caught.value)
    assert checked.ejected == {}  # not knowing a module is no lie


async def test_no_source_at_all_is_unavailable(env: Env) -> None:
    db = await env.sumdb()
    with pytest.raises(ChecksumUnavailable, match="no upstream"):
        await env.database(db).hashes("example.com/m1", "v1.0.0", [])


# ---------------------------------------------------------------------------- lies


async def test_a_bad_signature_fails_closed_and_ejects_the_source(env: Env) -> None:
    db = await env.sumdb()
    m = module(1)
    publish(db, m)
    db.tamper_signature = True
    checked = env.database(db)
    mirror = await env.mirror(db)

    with pytest.raises(ChecksumUnavailable, match="mirror"):
        await checked.hashes(m.path, m.version, [mirror])

    assert checked.ejected == {"mirror": env.clock.now + EJECT_SECONDS}
    assert checked.alarm is not None and "mirror" in checked.alarm
    assert "does not verify" in checked.alarm
    assert checked.latest is None
    assert inconsistent(env.metrics, "signature") == 1
    assert db.requests_for("/tile/") == []  # nothing proven from an unsigned tree


async def test_a_forked_log_fails_closed_and_raises_the_alarm(env: Env) -> None:
    db = await env.sumdb()
    first, later = module(1), module(2)
    publish(db, first)
    checked = env.database(db)
    mirror = await env.mirror(db)
    await checked.hashes(first.path, first.version, [mirror])
    seen = checked.latest

    db.fork()
    publish(db, later)
    with pytest.raises(ChecksumUnavailable):
        await checked.hashes(later.path, later.version, [mirror])

    assert inconsistent(env.metrics, "fork") == 1
    assert checked.alarm is not None and "mirror" in checked.alarm
    assert "mirror" in checked.ejected
    assert checked.latest == seen  # the forked head was not adopted
    assert tree_size(env.metrics) == 1
    # what was proven before the fork is still served
    assert (await checked.hashes(first.path, first.version, [mirror])).zip == hash_module(first)


async def test_a_liar_is_ejected_and_the_honest_source_answers(env: Env) -> None:
    honest_db = await env.sumdb()
    liar_db = await env.sumdb(
        signer_key=sumdb.generate_key(NAME, os.urandom)[0]
    )  # same name, other key
    m = module(1)
    for db in (honest_db, liar_db):
        publish(db, m)
    checked = env.database(honest_db)
    liar = await env.mirror(liar_db, "liar")
    honest = await env.mirror(honest_db, "honest")
    plain = UpstreamClient(Upstream(name="plain", url="http://127.0.0.1:9"))  # proxies no DB
    assert checked.sources([liar, plain, honest]) == [liar, honest]

    got = await checked.hashes(m.path, m.version, checked.sources([liar, plain, honest]))

    assert got == sumdb.GoSumHashes(hash_module(m), hash_mod(m.mod))
    assert set(checked.ejected) == {"liar"}
    assert inconsistent(env.metrics, "signature") == 1
    assert checked.sources([liar, plain, honest]) == [honest]
    assert len(honest_db.requests_for("/lookup/")) == 1
    assert liar_db.requests_for("/tile/") == []  # nothing proven from the liar's tree


async def test_an_ejected_source_is_asked_again_after_its_time_or_when_alone(env: Env) -> None:
    db = await env.sumdb()
    checked = env.database(db)
    one, two = await env.mirror(db, "one"), await env.mirror(db, "two")
    checked.eject("one", "signature", "test")

    assert checked.sources([one, two]) == [two]
    assert checked.sources([one]) == [one]  # nobody else is left
    env.clock.now += EJECT_SECONDS
    assert checked.sources([one, two]) == [one, two]


# ---------------------------------------------------------------------------- the proxy


async def proxied_lookup(
    source: UpstreamClient, m: FixtureModule
) -> tuple[SumdbRequest, UpstreamAnswer]:
    rest = sumdb.lookup_path(m.path, m.version).lstrip("/")
    answer = await source.fetch(f"sumdb/{NAME}/{rest}", limit=1 << 20)
    assert answer.status == 200
    return SumdbRequest(NAME, rest, m.path, m.version), answer


async def test_check_proxied_accepts_an_honest_lookup(env: Env) -> None:
    db = await env.sumdb()
    m = module(1)
    publish(db, m)
    checked = env.database(db)
    mirror = await env.mirror(db)
    request, answer = await proxied_lookup(mirror, m)

    assert await checked.check_proxied(request, mirror, answer) is None
    assert checked.latest is not None and checked.latest[0] == db.tree


async def test_check_proxied_rejects_a_tampered_note(env: Env) -> None:
    db = await env.sumdb()
    m = module(1)
    publish(db, m)
    db.tamper_signature = True
    checked = env.database(db)
    mirror = await env.mirror(db)
    request, answer = await proxied_lookup(mirror, m)

    rejected = await checked.check_proxied(request, mirror, answer)

    assert isinstance(rejected, Rejected)
    assert rejected.cause == "sumdb_inconsistent"
    assert NAME in rejected.reason
    assert "mirror" in checked.ejected
    assert inconsistent(env.metrics, "signature") == 1


# ---------------------------------------------------------------------------- the registry


def rules(tmp_path: Path, name: str, **extra: Any) -> Rules:
    path = one_pool_rules(tmp_path / name, {"up": "http://127.0.0.1:9"}, **extra)
    return load_or_raise([path])


async def test_registry_defaults_to_sum_golang_org_and_proxies_nothing(tmp_path: Path) -> None:
    registry = ChecksumRegistry(Metrics())
    try:
        await registry.apply(rules(tmp_path, "r.yaml"))
        assert registry.primary is not None
        assert registry.primary.name == GO_SUMDB.name == "sum.golang.org"
        assert registry.primary.config == GO_SUMDB
        assert registry.configured == {}
        assert registry.get("sum.golang.org") is None
        assert set(registry.view()) == {"sum.golang.org"}
    finally:
        await registry.close()  # the sum.golang.org client was only constructed


async def test_registry_keeps_what_a_db_learned_across_reloads(env: Env, tmp_path: Path) -> None:
    db = await env.sumdb()
    m = module(1)
    publish(db, m)
    entry = {"name": NAME, "key": db.verifier_key, "url": db.url}
    registry = ChecksumRegistry(env.metrics)
    env.stack.push_async_callback(registry.close)

    await registry.apply(rules(tmp_path, "a.yaml", checksum_dbs=[entry]))
    checked = registry.get(NAME)
    assert checked is not None and registry.primary is checked
    assert set(registry.configured) == {NAME}
    await checked.hashes(m.path, m.version, checked.sources([]))
    asked = len(db.requests)

    # a new rule set (another upstream, same DB name and key) keeps the learned state
    await registry.apply(
        rules(tmp_path, "b.yaml", checksum_dbs=[entry], nosumdb=["example.com/private/*"])
    )
    assert registry.get(NAME) is checked
    assert checked.latest is not None and checked.latest[0].n == 1
    await checked.hashes(m.path, m.version, checked.sources([]))
    assert len(db.requests) == asked

    # another key is another database: nothing learned carries over
    other_key = sumdb.generate_key(NAME, os.urandom)[0]
    other_vkey = sumdb.Signer.parse(other_key).verifier.vkey
    await registry.apply(rules(tmp_path, "c.yaml", checksum_dbs=[{**entry, "key": other_vkey}]))
    fresh = registry.get(NAME)
    assert fresh is not None and fresh is not checked and fresh.latest is None


# ---------------------------------------------------------------------------- verification


async def verification(env: Env, db: TestSumDB, m: FixtureModule) -> Verification:
    checked = env.database(db)
    mirror = await env.mirror(db)
    tasks = TaskGroup()
    env.stack.push_async_callback(tasks.close)
    return Verification(checked, [mirror], m.path, m.version, Kind.MOD, env.metrics, tasks)


def mod_answer(body: bytes) -> UpstreamAnswer:
    return UpstreamAnswer("served-by", 200, "text/plain", len(body), 0.0, body=body)


def verifications(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "goproxy_router_checksum_verifications_total", {"kind": "mod", "result": result}
    )
    return value or 0.0


async def test_verification_accepts_a_matching_go_mod(env: Env) -> None:
    db = await env.sumdb()
    m = module(1)
    publish(db, m)
    check = await verification(env, db, m)
    check.start()
    client = check.sources[0]

    assert await check.check(client, mod_answer(m.mod)) is None
    assert verifications(env.metrics, "ok") == 1


async def test_verification_rejects_a_go_mod_the_db_does_not_vouch_for(env: Env) -> None:
    db = await env.sumdb()
    m = module(1)
    publish(db, m)
    check = await verification(env, db, m)
    client = check.sources[0]
    forged = m.mod + b"\nrequire example.com/evil v1.0.0\n"

    rejected = await check.check(client, mod_answer(forged))

    assert isinstance(rejected, Rejected)
    assert rejected.cause == "checksum_mismatch"
    assert hash_mod(forged) in rejected.reason
    assert hash_mod(m.mod) in rejected.reason
    assert "mirror" in rejected.reason
    assert verifications(env.metrics, "mismatch") == 1


async def test_verification_fails_closed_when_the_db_has_no_record(env: Env) -> None:
    db = await env.sumdb()
    publish(db, module(1))
    m = module(2)
    check = await verification(env, db, m)

    with pytest.raises(ChecksumUnavailable, match="no record"):
        await check.check(check.sources[0], mod_answer(m.mod))
    assert verifications(env.metrics, "unavailable") == 1
