"""The bucket tier against a real S3-compatible server (rclone serve s3 on loopback).

Round trips, the object layout, concurrent writers of one artifact, a writer killed -9 mid-upload,
a server killed and restarted (fail fast while down, recover by itself), presigned URLs, TLS with a
private CA, and credentials that never show in logs or errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from support.s3_conditional import ConditionalProxy, Mode
from support.s3_server import S3Server, use_aws_env

from router.cache.bucket import Bucket, BucketError
from router.core.bucketing import BucketConfig

REPO = Path(__file__).parents[1]
UPLOADER = REPO / "tests" / "support" / "bucket_upload.py"
MiB = 1 << 20


def _file(tmp: Path, name: str, data: bytes) -> tuple[Path, str]:
    path = tmp / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def _config(server: S3Server, **kw: Any) -> BucketConfig:
    kw.setdefault("timeout", 3.0)
    kw.setdefault("probe_interval", 0.1)
    kw.setdefault("probe_max_interval", 0.3)
    return BucketConfig(url=server.url, endpoint=server.endpoint, **kw)


@asynccontextmanager
async def _bucket(server: S3Server, **kw: Any) -> AsyncIterator[Bucket]:
    async with Bucket(_config(server, **kw)) as bucket:
        yield bucket


async def _until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------- configuration


def test_config_parses_bucket_and_prefix() -> None:
    assert BucketConfig(url="s3://goproxy-artifacts/prod/").prefix == "prod/"
    assert BucketConfig(url="s3://goproxy-artifacts/a/b").prefix == "a/b/"
    assert BucketConfig(url="s3://goproxy-artifacts").prefix == ""
    assert BucketConfig(url="s3://goproxy-artifacts/prod/").bucket == "goproxy-artifacts"


@pytest.mark.parametrize(
    "kw",
    [
        {"url": "https://bucket/prefix/"},
        {"url": "s3:///prefix/"},
        {"url": "s3://Bad_Name/"},
        {"url": "s3://bucket/a//b/"},
        {"url": "s3://bucket/a/../b/"},
        {"url": "s3://bucket/p/", "endpoint": "s3.internal:9000"},
        {"url": "s3://bucket/p/", "endpoint": "https://key:secret@s3.internal"},
        {"url": "s3://bucket/p/", "serve": "proxy"},
        {"url": "s3://bucket/p/", "part_size": 1 << 20},
        {"url": "s3://bucket/p/", "timeout": 0},
        {"url": "s3://bucket/p/", "presign_expires": 8 * 86400},
    ],
)
def test_config_rejects_what_cannot_work(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BucketConfig(**kw)


# ------------------------------------------------------------------------------- round trips


async def test_put_and_get_round_trip_with_the_documented_layout(
    s3_server: S3Server, tmp_path: Path
) -> None:
    data = b"PK\x03\x04 a zip, honest" * 100
    path, digest = _file(tmp_path, "m.zip", data)
    async with _bucket(s3_server) as bucket:
        assert await bucket.head("example.com/m/@v/v1.0.0.zip") is None
        assert await bucket.get("example.com/m/@v/v1.0.0.zip") is None
        entry = await bucket.put_file(
            "example.com/m/@v/v1.0.0.zip",
            path,
            size=len(data),
            sha256=digest,
            content_type="application/zip",
            metadata={"upstream": "proxy.golang.org", "module": "example.com/m"},
        )
        assert (entry.digest, entry.size) == (digest, len(data))
        head = await bucket.head("example.com/m/@v/v1.0.0.zip")
        assert head is not None
        assert head.metadata == {"upstream": "proxy.golang.org", "module": "example.com/m"}
        assert head.content_type == "application/zip"
        obj = await bucket.get("example.com/m/@v/v1.0.0.zip")
        assert obj is not None
        assert await obj.read() == data
        index = sorted([x.name async for x in bucket.list_objects("index")])
        stored = [x async for x in bucket.list_objects("data")]
    key_hash = hashlib.sha256(b"example.com/m/@v/v1.0.0.zip").hexdigest()
    assert index == [f"index/{key_hash}.json"]
    assert [(x.name, x.size, x.digest) for x in stored] == [
        (f"data/{digest[:2]}/{digest}", len(data), digest)
    ]
    assert set(s3_server.listed()) == {
        f"prod/index/{key_hash}.json",
        f"prod/data/{digest[:2]}/{digest}",
    }
    assert bucket.stats.hits == 1 and bucket.stats.misses == 1 and bucket.stats.published == 1


async def test_a_large_file_goes_up_in_parts_and_comes_back_whole(
    s3_server: S3Server, tmp_path: Path
) -> None:
    data = os.urandom(11 * MiB + 123)
    path, digest = _file(tmp_path, "big.zip", data)
    async with _bucket(s3_server, part_size=5 * MiB) as bucket:
        await bucket.put_file("big@v1.zip", path, size=len(data), sha256=digest)
        obj = await bucket.get("big@v1.zip")
        assert obj is not None
        sha = hashlib.sha256()
        async with obj:
            async for chunk in obj.chunks(1 * MiB):
                sha.update(chunk)
    assert sha.hexdigest() == digest
    assert s3_server.listed("prod/data/") == {f"prod/data/{digest[:2]}/{digest}": len(data)}
    assert not [f for f in s3_server.files() if ".rclone_temp" in f]


async def test_a_file_that_is_not_what_the_caller_says_is_not_published(
    s3_server: S3Server, tmp_path: Path
) -> None:
    path, digest = _file(tmp_path, "x.zip", b"the real bytes")
    other = hashlib.sha256(b"other bytes").hexdigest()
    async with _bucket(s3_server, part_size=5 * MiB) as bucket:
        with pytest.raises(BucketError) as err:
            await bucket.put_file("k", path, size=14, sha256=other)
        assert err.value.cause == "corrupt"
        with pytest.raises(BucketError) as err:
            await bucket.put_file("k", path, size=15, sha256=digest)
        assert err.value.cause == "corrupt"
        big, _ = _file(tmp_path, "big", os.urandom(6 * MiB))
        with pytest.raises(BucketError) as err:  # multipart: found out after the last part
            await bucket.put_file("k", big, size=6 * MiB, sha256=digest)
        assert err.value.cause == "corrupt"
        assert await bucket.head("k") is None
    assert s3_server.listed() == {}


async def test_publishing_what_is_there_uploads_nothing(
    s3_server: S3Server, tmp_path: Path
) -> None:
    path, digest = _file(tmp_path, "a.zip", b"same bytes for two keys")
    async with _bucket(s3_server) as bucket:
        await bucket.put_file("a", path, size=23, sha256=digest)
        await bucket.put_file("a", path, size=23, sha256=digest)  # already published
        await bucket.put_file("b", path, size=23, sha256=digest)  # data shared, index new
        assert bucket.stats.data_uploads == 1
        assert bucket.stats.already_there == 1
        assert bucket.stats.published == 2
        data_objects = [x async for x in bucket.list_objects("data")]
    assert len(data_objects) == 1


async def test_two_replicas_writing_the_same_artifacts_at_once_leave_one_good_copy(
    s3_server: S3Server, tmp_path: Path
) -> None:
    files = []
    for i in range(6):
        size = 6 * MiB + i if i % 2 else 1000 + i  # half of them multipart
        path, digest = _file(tmp_path, f"{i}", os.urandom(size))
        files.append((f"example.com/m{i}/@v/v1.0.0.zip", path, digest))
    async with (
        _bucket(s3_server, part_size=5 * MiB) as one,
        _bucket(s3_server, part_size=5 * MiB) as two,
    ):
        jobs = [
            replica.put_file(key, path, size=path.stat().st_size, sha256=digest)
            for key, path, digest in files
            for replica in (one, two)
        ]
        entries = await asyncio.gather(*jobs)
        assert all(e.digest == d for e, (_, _, d) in zip(entries[::2], files, strict=True))
        for key, _, digest in files:
            obj = await one.get(key)
            assert obj is not None and obj.entry.digest == digest
            assert hashlib.sha256(await obj.read()).hexdigest() == digest
    listed = s3_server.listed()
    assert len(listed) == 2 * len(files)  # one data object and one index entry each
    assert not [f for f in s3_server.files() if ".rclone_temp" in f]


async def test_a_third_replica_started_later_reads_what_the_first_published(
    s3_server: S3Server, tmp_path: Path
) -> None:
    path, digest = _file(tmp_path, "a.zip", b"published once")
    async with _bucket(s3_server) as first:
        await first.put_file("k", path, size=14, sha256=digest)
    s3_server.restart()  # and the server forgot whatever it kept in memory
    async with _bucket(s3_server) as later:
        obj = await later.get("k")
        assert obj is not None
        assert await obj.read() == b"published once"


# ------------------------------------------------------------------------------- damage


async def test_bytes_changed_behind_the_index_are_refused_and_the_last_chunk_withheld(
    s3_server: S3Server, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    path, digest = _file(tmp_path, "a.zip", data)
    async with _bucket(s3_server) as bucket:
        await bucket.put_file("k", path, size=len(data), sha256=digest)
        stored = s3_server.data_dir / s3_server.bucket / "prod" / "data" / digest[:2] / digest
        stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, other bytes
        obj = await bucket.get("k")
        assert obj is not None
        got = b""
        with pytest.raises(BucketError) as err:
            async for chunk in obj.chunks(64 << 10):
                got += chunk
        assert err.value.cause == "corrupt"
        assert len(got) < len(data)  # a streaming client never sees a complete wrong body
        s3 = s3_server.client()
        name = bucket.data_name(digest)
        s3.put_object(Bucket=s3_server.bucket, Key=name, Body=data[:1000])  # shorter
        with pytest.raises(BucketError) as err:
            await bucket.get("k")
        assert err.value.cause == "corrupt"
        s3.delete_object(Bucket=s3_server.bucket, Key=name)  # gone: a dangling entry is a miss
        assert await bucket.get("k") is None
        assert bucket.stats.dangling == 1
        assert bucket.up  # damage is not an outage


async def test_a_malformed_index_entry_is_a_miss_and_is_replaced_by_the_next_writer(
    s3_server: S3Server, tmp_path: Path
) -> None:
    path, digest = _file(tmp_path, "a.zip", b"bytes")
    async with _bucket(s3_server) as bucket:
        s3_server.client().put_object(
            Bucket=s3_server.bucket, Key=bucket.index_name("k"), Body=b"{not json"
        )
        assert await bucket.head("k") is None
        await bucket.put_file("k", path, size=5, sha256=digest)
        obj = await bucket.get("k")
        assert obj is not None and await obj.read() == b"bytes"


# ------------------------------------------------------------------------------- kill -9


def _temporaries(server: S3Server) -> dict[str, int]:
    return {k: v for k, v in server.files().items() if ".rclone_temp" in k}


@pytest.mark.slow
@pytest.mark.parametrize("part_size", [64 * MiB, 5 * MiB], ids=["single-put", "multipart"])
async def test_a_writer_killed_mid_upload_leaves_no_visible_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part_size: int
) -> None:
    # The server takes uploads at 8 MiB/s, so a 16 MiB upload is surely under way when killed.
    server = S3Server(tmp_path / "s3", extra_args=["--bwlimit", "8M"]).start()
    use_aws_env(monkeypatch, server)
    try:
        path, digest = _file(tmp_path, "big.zip", os.urandom(16 * MiB))
        args = [server.endpoint, server.url, str(part_size), "k", str(path), digest]
        proc = subprocess.Popen(
            [sys.executable, str(UPLOADER), *args],
            env=server.client_environ(),
            stdout=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 20
            while not any(v > MiB for v in _temporaries(server).values()):
                assert proc.poll() is None, "the uploader ended before it was killed"
                assert time.monotonic() < deadline, "the upload never started"
                time.sleep(0.01)
        finally:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        with proc.stdout:
            assert b"published" not in proc.stdout.read()
        await asyncio.sleep(0.3)  # let the server notice the broken connection
        async with _bucket(server) as bucket:
            assert await bucket.head("k") is None
            assert await bucket.get("k") is None
            assert [x async for x in bucket.list_objects("data")] == []
            assert [x async for x in bucket.list_objects("index")] == []
            assert server.listed() == {}
            # and the next writer publishes it whole
            await bucket.put_file("k", path, size=16 * MiB, sha256=digest)
            assert (await bucket.head("k")) is not None
    finally:
        server.stop()


@pytest.mark.slow
async def test_the_server_killed_mid_upload_publishes_nothing_and_the_writer_is_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = S3Server(tmp_path / "s3", extra_args=["--bwlimit", "8M"]).start()
    use_aws_env(monkeypatch, server)
    try:
        path, digest = _file(tmp_path, "big.zip", os.urandom(16 * MiB))
        async with _bucket(server, part_size=64 * MiB) as bucket:
            upload = asyncio.ensure_future(bucket.put_file("k", path, size=16 * MiB, sha256=digest))
            await _until(lambda: any(v > MiB for v in _temporaries(server).values()))
            server.kill()
            with pytest.raises(BucketError) as err:
                await upload
            assert err.value.cause == "unreachable"
            server.start()
            await _until(lambda: bucket.up)
            assert await bucket.head("k") is None
            assert server.listed() == {}  # the leftover temporary is hidden
    finally:
        server.stop()


# ------------------------------------------------------------------------------- outages


async def test_a_dead_server_fails_fast_with_its_cause_and_recovery_is_automatic(
    s3_server: S3Server, tmp_path: Path
) -> None:
    path, digest = _file(tmp_path, "a.zip", b"bytes")
    async with _bucket(s3_server) as bucket:
        await bucket.put_file("k", path, size=5, sha256=digest)
        s3_server.kill()
        with pytest.raises(BucketError) as err:
            await bucket.get("k")
        assert err.value.cause == "unreachable"
        assert not bucket.up
        started = time.monotonic()
        for _ in range(50):
            with pytest.raises(BucketError) as err:
                await bucket.get("k")
            assert err.value.cause == "down"
        with pytest.raises(BucketError) as err:
            await bucket.put_file("k2", path, size=5, sha256=digest)
        assert err.value.cause == "down"
        with pytest.raises(BucketError):
            await bucket.presign("k")
        assert time.monotonic() - started < 0.5  # no network while down
        assert bucket.stats.fast_failures >= 52 and bucket.stats.marked_down == 1
        s3_server.start()
        await _until(lambda: bucket.up)
        obj = await bucket.get("k")
        assert obj is not None and await obj.read() == b"bytes"
        assert bucket.stats.recovered == 1


async def test_an_endpoint_that_never_answers_times_out_within_the_deadline(
    s3_server: S3Server,
) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # connections complete in the kernel and are never answered
    try:
        config = BucketConfig(
            url=s3_server.url,
            endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}",
            timeout=0.5,
            probe_interval=10,
            probe_max_interval=10,
        )
        async with Bucket(config) as bucket:
            started = time.monotonic()
            with pytest.raises(BucketError) as err:
                await bucket.head("k")
            assert err.value.cause == "timeout"
            assert time.monotonic() - started < 2
            assert not bucket.up
    finally:
        silent.close()


async def test_wrong_or_missing_credentials_are_denied_without_marking_the_bucket_down(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with _bucket(s3_server) as bucket:
        assert await bucket.head("k") is None  # the right ones work
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + s3_server.secret_key)
    async with _bucket(s3_server) as bucket:
        with pytest.raises(BucketError) as err:
            await bucket.head("k")
        assert err.value.cause == "denied"
        assert bucket.up
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(s3_server.workdir / "none"))
    async with _bucket(s3_server) as bucket:
        with pytest.raises(BucketError) as err:
            await bucket.head("k")
        assert err.value.cause == "denied"
        assert bucket.up
    assert s3_server.secret_key not in caplog.text
    assert s3_server.secret_key not in str(err.value)


async def test_an_unknown_profile_is_told_at_start(s3_server: S3Server) -> None:
    bucket = Bucket(_config(s3_server, profile="no-such-profile"))
    with pytest.raises(BucketError) as err:
        await bucket.start()
    assert err.value.cause == "denied" and "no-such-profile" in err.value.detail


async def test_a_missing_bucket_is_not_found(s3_server: S3Server, tmp_path: Path) -> None:
    path, digest = _file(tmp_path, "a.zip", b"bytes")
    config = BucketConfig(url="s3://no-such-bucket/p/", endpoint=s3_server.endpoint, timeout=3)
    async with Bucket(config) as bucket:
        with pytest.raises(BucketError) as err:
            await bucket.put_file("k", path, size=5, sha256=digest)
        assert err.value.cause == "not_found"
        assert bucket.up


# ------------------------------------------------------------------------------- presigned URLs


async def test_a_presigned_url_serves_the_bytes_with_plain_aiohttp_and_expires(
    s3_server: S3Server, tmp_path: Path
) -> None:
    data = os.urandom(100_000)
    path, digest = _file(tmp_path, "a.zip", data)
    async with _bucket(s3_server) as bucket:
        await bucket.put_file(
            "k", path, size=len(data), sha256=digest, content_type="application/zip"
        )
        assert await bucket.presign("missing") is None
        # X-Amz-Date counts whole seconds, so a URL for 3 s dies 2 to 3 s after it is
        # signed (one for 1 s could die at once, at the next turn of the second)
        url = await bucket.presign("k", expires=3)
        signed = time.time()
        assert url is not None and s3_server.secret_key not in url
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as resp:
            assert resp.status == 200
            assert await resp.read() == data
        async with http.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")) as resp:
            assert resp.status == 403
        await asyncio.sleep(signed + 3.2 - time.time())  # surely past its expiry
        async with http.get(url) as resp:
            assert resp.status in (400, 403)
            assert await resp.read() != data


# ------------------------------------------------------------------------------- TLS


async def test_an_endpoint_with_a_private_ca_is_trusted_only_with_its_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key, bundle = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_pem.write_to_path(key)
    cert.cert_chain_pems[0].write_to_path(chain)
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(chain, append=True)
    ca.cert_pem.write_to_path(bundle)
    server = S3Server(tmp_path / "s3", tls=(chain, key, bundle)).start()
    use_aws_env(monkeypatch, server)
    try:
        path, digest = _file(tmp_path, "a.zip", b"over tls")
        async with _bucket(server, ca_bundle=str(bundle)) as bucket:
            await bucket.put_file("k", path, size=8, sha256=digest)
            obj = await bucket.get("k")
            assert obj is not None and await obj.read() == b"over tls"
        async with _bucket(server) as bucket:
            with pytest.raises(BucketError) as err:
                await bucket.head("k")
            assert err.value.cause == "unreachable"
            assert "certificate" in err.value.detail.lower()
    finally:
        server.stop()


# ------------------------------------------------------------------------------- conditional writes


@asynccontextmanager
async def _conditional(server: S3Server, mode: Mode) -> AsyncIterator[ConditionalProxy]:
    proxy = await ConditionalProxy(server, mode).start()
    try:
        yield proxy
    finally:
        await proxy.close()


async def test_on_a_server_with_conditional_writes_the_first_writer_of_a_key_wins(
    s3_server: S3Server, tmp_path: Path
) -> None:
    first, first_digest = _file(tmp_path, "first", b"first bytes")
    second, second_digest = _file(tmp_path, "second", b"other bytes")
    async with _conditional(s3_server, "honour") as proxy:
        config = BucketConfig(url=s3_server.url, endpoint=proxy.endpoint, timeout=3)
        async with Bucket(config) as one, Bucket(config) as two:
            await one.put_file("k", first, size=11, sha256=first_digest)
            won = await two.put_file("k", second, size=11, sha256=second_digest)
            assert won.digest == first_digest  # the entry the bucket has, not ours
            assert two.stats.already_there == 1 and two.stats.published == 0
            assert proxy.refused == 1
            obj = await two.get("k")
            assert obj is not None and await obj.read() == b"first bytes"
            # a malformed entry is not an entry: it is overwritten without the condition
            s3_server.client().put_object(
                Bucket=s3_server.bucket, Key=one.index_name("m"), Body=b"garbage"
            )
            await two.put_file("m", second, size=11, sha256=second_digest)
            assert (await one.head("m")) is not None


async def test_a_server_that_refuses_conditional_writes_gets_plain_ones(
    s3_server: S3Server, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="goproxy_router.bucket")
    path, digest = _file(tmp_path, "a", b"bytes")
    async with _conditional(s3_server, "reject") as proxy:
        config = BucketConfig(url=s3_server.url, endpoint=proxy.endpoint, timeout=3)
        async with Bucket(config) as bucket:
            await bucket.put_file("a", path, size=5, sha256=digest)
            await bucket.put_file("b", path, size=5, sha256=digest)
            assert proxy.refused == 1  # asked once, then never again
            assert bucket.up
            obj = await bucket.get("b")
            assert obj is not None and await obj.read() == b"bytes"
    assert "does not take conditional writes" in caplog.text
