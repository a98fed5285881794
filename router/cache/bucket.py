"""The object-storage tier: immutable artifacts in an S3-compatible bucket, shared by a fleet.

Layout under the bucket's key prefix (the path of `s3://bucket/prefix/`), like the disk store's:

    data/ab/abcdef...        the bytes, named by their sha256 (shared by keys with equal bytes)
    index/<sha256 of key>.json   what a cache key maps to: {"v", "key", "digest", "size",
                             "content_type", "metadata", "stored"}

Publishing (`put_file`) is data first, index last, and each object appears whole or not at all:
S3's PutObject and CompleteMultipartUpload are atomic (an interrupted upload leaves no object,
and a multipart upload that is never completed is invisible), so nothing is uploaded under a
temporary name and copied (that would double the bytes written, and CopyObject needs its own
multipart dance past 5 GiB). The bytes are hashed as they are read for upload and refused when
they are not the sha256 the caller named, every request carries Content-MD5 (the server checks
the bytes it got), and the data object's size is checked with a HEAD before the index is written.
So an index entry only ever names a complete, checked data object; a reader that finds no index
entry has a miss, never a partial object.

Two writers of the same artifact cannot corrupt it: the data key is the content's own hash, so
both upload the same bytes to the same key (an atomic overwrite with identical bytes), and the
index is written with `If-None-Match: *`, so on a server that supports conditional writes the
first writer wins and the second reads back the first's entry; on one that ignores the header
the last writer wins, and either way each index entry is complete and names complete data.
Readers check the size and the sha256 of what they stream (the ETag is not trusted: it is not an
MD5 for multipart or SSE-KMS objects, and S3-compatible servers differ).

No S3 user metadata is relied on (some servers keep it only in memory, or change its case);
everything a reader needs is in the index object's body.

Every call has a deadline; every failure is one `BucketError` with a plain `cause`. When the
endpoint is unreachable, times out or answers 5xx, the bucket is marked down: later calls fail at
once with cause "down" (no network), and a background probe marks it up again when the endpoint
answers. Credentials come from botocore's standard chain (AWS_* variables, the shared files, a
profile, web identity, instance metadata) and never appear in logs or error messages.

Needs the `s3` extra (aiobotocore); import this module only when a bucket is configured.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, TypeVar

try:
    import aiohttp
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        CredentialRetrievalError,
        NoCredentialsError,
        PartialCredentialsError,
        ReadTimeoutError,
    )
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "the bucket tier needs the s3 extra: pip install 'goproxy-router[s3]'"
    ) from exc

from router.cache.tier import checked_stream
from router.core.bucketing import BucketConfig
from router.tasks import TaskGroup

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger("goproxy_router.bucket")

T = TypeVar("T")

Cause = Literal["unreachable", "timeout", "denied", "not_found", "corrupt", "down", "failed"]
INDEX_VERSION = 1
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "RequestTimeTooSkewed",
        "403",
        "401",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})
_UNSUPPORTED_CODES = frozenset({"NotImplemented", "501"})
_MAX_INDEX = 64 << 10
RETRY_5XX_AFTER = 0.05  # seconds before the one retry of a 5xx
_URL = re.compile(r"\bhttps?://([^/\s\"']+)[^\s\"']*")


# ---------------------------------------------------------------------------- results and errors


class BucketError(Exception):
    """A bucket call that did not succeed. `cause` is one of: unreachable (no connection, TLS
    failure), timeout, denied (credentials missing, wrong or not allowed), not_found (the bucket
    does not exist), corrupt (bytes not as indexed), down (not tried: the endpoint is marked
    down), failed (anything else the server refused)."""

    def __init__(self, cause: Cause, op: str, detail: str = "") -> None:
        self.cause: Cause = cause
        self.op = op
        self.detail = detail
        super().__init__(f"bucket {op}: {cause}" + (f" ({detail})" if detail else ""))


class _Missing(Exception):
    """The object asked for does not exist (internal: callers see None)."""


class _Precondition(Exception):
    """A conditional write found the object already there (internal)."""


@dataclass(frozen=True, slots=True)
class BucketEntry:
    """What the index says of a cache key."""

    key: str
    digest: str  # sha256 of the bytes, hex
    size: int
    content_type: str | None
    metadata: Mapping[str, str]
    stored: float


@dataclass(frozen=True, slots=True)
class Listed:
    """One object of a listing; `name` is relative to the key prefix (data/ab/abc..., index/...)."""

    name: str
    size: int
    modified: float

    @property
    def digest(self) -> str:
        """The last path segment without .json: a data object's sha256, an index key's hash."""
        return self.name.rsplit("/", 1)[-1].removesuffix(".json")


@dataclass
class BucketStats:
    """Counters for metrics: what the bucket answered, what it cost, how often it failed."""

    hits: int = 0
    misses: int = 0
    published: int = 0  # put_file calls that wrote an index entry
    already_there: int = 0  # put_file calls that found the artifact published
    data_uploads: int = 0  # data objects uploaded (the rest were found in place)
    bytes_up: int = 0
    bytes_down: int = 0
    dangling: int = 0  # index entries whose data object was missing
    corrupt: int = 0
    fast_failures: int = 0  # calls refused because the bucket was down
    marked_down: int = 0
    recovered: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # by cause


# ---------------------------------------------------------------------------- a streamed object


class BucketObject:
    """An artifact being read from the bucket. Iterate `chunks()` once (or `read()`), then
    `close()` (or use `async with`). The last chunk is only handed over after the size and
    sha256 were checked: a mismatch raises BucketError("corrupt") instead."""

    def __init__(self, bucket: Bucket, entry: BucketEntry, body: Any) -> None:
        self.entry = entry
        self._bucket = bucket
        self._body = body
        self._closed = False

    async def chunks(self, chunk_size: int = 256 << 10) -> AsyncIterator[bytes]:
        entry, stats = self.entry, self._bucket.stats
        read = functools.partial(self._bucket._read_chunk, self._body, chunk_size)

        def whole() -> None:
            stats.bytes_down += entry.size

        try:
            async for chunk in checked_stream(read, entry.size, entry.digest, self._corrupt, whole):
                yield chunk
        finally:
            await self.close()

    def _corrupt(self, got: int) -> BucketError:
        self._bucket.stats.corrupt += 1
        self._bucket._count("corrupt")
        entry = self.entry
        if got != entry.size:
            return BucketError(
                "corrupt",
                "get",
                f"data {entry.digest[:12]}: {got} bytes read, {entry.size} indexed",
            )
        return BucketError("corrupt", "get", f"data {entry.digest[:12]}: sha256 differs")

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                await self._body.aclose()

    async def __aenter__(self) -> BucketObject:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ---------------------------------------------------------------------------- the bucket


class Bucket:
    """One bucket and key prefix. `start()` before use (it makes no request), `close()` after."""

    def __init__(self, config: BucketConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.stats = BucketStats()
        self._clock = clock
        self._client: S3Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks = TaskGroup()
        self._down_since: float | None = None
        self._down_reason = ""
        self._conditional = True  # send If-None-Match: * until the server says it cannot
        self._uploads = asyncio.Semaphore(config.max_uploads)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Make the client (no request is sent: a dead endpoint does not stop a start).
        Raises BucketError("denied", "start") for a profile the AWS files do not have."""
        try:
            await self._start()
        except BotoCoreError as exc:
            await self._stack.aclose()
            raise BucketError("denied", "start", _plain(exc)) from None

    async def _start(self) -> None:
        cfg = self.config
        self._stack = contextlib.AsyncExitStack()
        addressing = cfg.addressing
        if addressing == "auto" and cfg.endpoint is not None:
            addressing = "path"
        session = AioSession(profile=cfg.profile)
        region = cfg.region or session.get_config_variable("region") or "us-east-1"
        client_config = AioConfig(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": addressing, "payload_signing_enabled": False},
            connect_timeout=cfg.timeout,
            read_timeout=cfg.timeout,
            retries={"total_max_attempts": 1},  # our own deadlines and the breaker decide
            max_pool_connections=cfg.max_connections,
            # Checksums beyond Content-MD5 are not understood alike by S3-compatible servers
            # (one stores a whole-object checksum and sends it back with a ranged GET).
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        verify: str | bool | None = cfg.ca_bundle  # None: botocore's default (AWS_CA_BUNDLE)
        self._client = await self._stack.enter_async_context(
            session.create_client(
                "s3", endpoint_url=cfg.endpoint, config=client_config, verify=verify
            )
        )

    async def close(self) -> None:
        await self._tasks.close()
        await self._stack.aclose()
        self._client = None

    async def __aenter__(self) -> Bucket:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def up(self) -> bool:
        return self._down_since is None

    @property
    def down_reason(self) -> str:
        return self._down_reason

    # ------------------------------------------------------------ names

    def index_name(self, key: str) -> str:
        return f"{self.config.prefix}index/{hashlib.sha256(key.encode()).hexdigest()}.json"

    def data_name(self, digest: str) -> str:
        return f"{self.config.prefix}data/{digest[:2]}/{digest}"

    # ------------------------------------------------------------ reading

    async def head(self, key: str) -> BucketEntry | None:
        """The index entry of `key`, or None when the bucket has none (or a malformed one)."""
        entry, _ = await self._read_index(key)
        return entry

    async def _read_index(self, key: str) -> tuple[BucketEntry | None, bool]:
        """(the entry, whether an index object exists at all: it may be malformed)."""
        client = self._need_client()
        name = self.index_name(key)
        try:
            resp = await self._call("head", lambda: client.get_object(Bucket=self._b, Key=name))
        except _Missing:
            return None, False
        async with resp["Body"] as body:
            raw = await self._call("head", lambda: body.read(_MAX_INDEX), check=False)
        entry = _parse_index(raw, key)
        if entry is None:
            self._count("corrupt")
            self.stats.corrupt += 1
            log.warning("bucket: ignoring a malformed index entry %s", name)
        return entry, True

    async def get(self, key: str) -> BucketObject | None:
        """The artifact of `key` as a stream, or None on a miss."""
        entry = await self.head(key)
        if entry is None:
            self.stats.misses += 1
            return None
        obj = await self.open_data(entry)
        if obj is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return obj

    async def open_data(self, entry: BucketEntry) -> BucketObject | None:
        """Stream the data object an entry names (None if it is gone: a dangling entry)."""
        client = self._need_client()
        name = self.data_name(entry.digest)
        try:
            resp = await self._call("get", lambda: client.get_object(Bucket=self._b, Key=name))
        except _Missing:
            self.stats.dangling += 1
            log.warning("bucket: index entry for %s names missing data %s", entry.key, name)
            return None
        if resp.get("ContentLength") != entry.size:
            await resp["Body"].aclose()
            self.stats.corrupt += 1
            self._count("corrupt")
            raise BucketError(
                "corrupt", "get", f"data {entry.digest[:12]} is {resp.get('ContentLength')} bytes"
            )
        return BucketObject(self, entry, resp["Body"])

    async def presign(self, key: str, expires: float | None = None) -> str | None:
        """A presigned GET URL of `key`'s bytes (None on a miss). Never log it: it is a
        credential for `expires` seconds (and dies sooner with temporary credentials)."""
        entry = await self.head(key)
        if entry is None:
            return None
        return await self.presign_entry(entry, expires)

    async def presign_entry(self, entry: BucketEntry, expires: float | None = None) -> str:
        client = self._need_client()
        self._check_up("presign")
        seconds = int(expires if expires is not None else self.config.presign_expires)
        url: str = await client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self._b, "Key": self.data_name(entry.digest)},
            ExpiresIn=max(1, seconds),
        )
        return url

    async def list_objects(self, area: Literal["index", "data"]) -> AsyncIterator[Listed]:
        """Every object of one area, page by page (for garbage collection)."""
        client = self._need_client()
        prefix = f"{self.config.prefix}{area}/"
        token: str | None = None
        while True:
            more: dict[str, Any] = {"ContinuationToken": token} if token else {}
            page = await self._call(
                "list",
                functools.partial(client.list_objects_v2, Bucket=self._b, Prefix=prefix, **more),
            )
            for obj in page.get("Contents", []):
                yield Listed(
                    name=obj["Key"][len(self.config.prefix) :],
                    size=obj.get("Size", 0),
                    modified=obj["LastModified"].timestamp() if "LastModified" in obj else 0.0,
                )
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def entry_at(self, name: str) -> BucketEntry | None:
        """The index entry stored under a listed name (`index/<hash>.json`), for gc, which
        knows names from a listing, not keys. None when gone or malformed."""
        client = self._need_client()
        full = f"{self.config.prefix}{name}"
        try:
            resp = await self._call("list", lambda: client.get_object(Bucket=self._b, Key=full))
        except _Missing:
            return None
        async with resp["Body"] as body:
            raw = await self._call("list", lambda: body.read(_MAX_INDEX), check=False)
        try:
            key = json.loads(raw).get("key")
        except (ValueError, AttributeError):
            return None
        if not isinstance(key, str) or self.index_name(key) != full:
            return None
        return _parse_index(raw, key)

    # ------------------------------------------------------------ writing

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        size: int,
        sha256: str,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> BucketEntry:
        """Publish a complete, checked local file as `key`'s artifact; returns the entry the
        bucket now has (another writer's, when it published first on a conditional server).
        The file must be `size` bytes with that sha256 (it is re-hashed as it is uploaded);
        otherwise nothing is published and BucketError("corrupt") is raised."""
        client = self._need_client()
        sha256 = sha256.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        existing, index_exists = await self._read_index(key)
        if existing is not None and existing.digest == sha256 and existing.size == size:
            self.stats.already_there += 1
            return existing
        meta = dict(metadata or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
            raise ValueError("bucket metadata must map strings to strings")
        data = self.data_name(sha256)
        if await self._data_size(data) != size:
            async with self._uploads:
                if size <= self.config.part_size:
                    await self._put_single(data, path, size, sha256, content_type)
                else:
                    await self._put_multipart(data, path, size, sha256, content_type)
            self.stats.data_uploads += 1
            self.stats.bytes_up += size
            stored_size = await self._data_size(data)
            if stored_size != size:
                raise BucketError(
                    "failed", "put", f"data {sha256[:12]} is {stored_size} bytes after upload"
                )
        entry = BucketEntry(key, sha256, size, content_type, meta, round(self._clock(), 3))
        body = json.dumps(
            {
                "v": INDEX_VERSION,
                "key": entry.key,
                "digest": entry.digest,
                "size": entry.size,
                "content_type": entry.content_type,
                "metadata": dict(entry.metadata),
                "stored": entry.stored,
            },
            sort_keys=True,
        ).encode()
        index = self.index_name(key)
        try:
            await self._put_conditional(
                "put",
                lambda cond: client.put_object(
                    Bucket=self._b,
                    Key=index,
                    Body=body,
                    ContentMD5=_md5_b64(body),
                    ContentType="application/json",
                    **cond,
                ),
                self.config.timeout,
                # a malformed entry is replaced; a well-formed one only by delete() + put
                only_if_absent=not (index_exists and existing is None),
            )
        except _Precondition:
            theirs = await self.head(key)
            if theirs is None:
                raise BucketError(
                    "failed", "put", "index written by another writer is unreadable"
                ) from None
            self.stats.already_there += 1
            return theirs
        self.stats.published += 1
        return entry

    async def delete(self, key: str) -> None:
        """Drop `key`'s index entry (its data may be shared: see delete_data)."""
        client = self._need_client()
        name = self.index_name(key)
        with contextlib.suppress(_Missing):
            await self._call("delete", lambda: client.delete_object(Bucket=self._b, Key=name))

    async def delete_data(self, digest: str) -> None:
        """Drop a data object (garbage collection: only when no index entry names it, and it
        is older than the longest upload, since data is written before its index)."""
        client = self._need_client()
        name = self.data_name(digest)
        with contextlib.suppress(_Missing):
            await self._call("delete", lambda: client.delete_object(Bucket=self._b, Key=name))

    async def _data_size(self, name: str) -> int | None:
        client = self._need_client()
        try:
            resp = await self._call("head", lambda: client.head_object(Bucket=self._b, Key=name))
        except _Missing:
            return None
        return resp.get("ContentLength")

    async def _put_single(
        self, name: str, path: Path, size: int, sha256: str, content_type: str | None
    ) -> None:
        client = self._need_client()
        checked = await asyncio.to_thread(_read_checked, path, size, sha256)
        if checked is None:
            raise self._corrupt_source(path, size, sha256)
        body, md5 = checked
        # Unconditional: the key is the content's hash, so an overwrite puts the same bytes
        # back (and repairs an object someone damaged behind our back).
        await self._call(
            "put",
            lambda: client.put_object(
                Bucket=self._b,
                Key=name,
                Body=body,
                ContentMD5=md5,
                ContentType=content_type or "application/octet-stream",
            ),
            self._transfer_timeout(size),
        )

    async def _put_multipart(
        self, name: str, path: Path, size: int, sha256: str, content_type: str | None
    ) -> None:
        client = self._need_client()
        created = await self._call(
            "put",
            lambda: client.create_multipart_upload(
                Bucket=self._b, Key=name, ContentType=content_type or "application/octet-stream"
            ),
        )
        upload_id = created["UploadId"]
        completed = False
        fh: BinaryIO = await asyncio.to_thread(path.open, "rb")
        try:
            sha = hashlib.sha256()
            parts: list[CompletedPartTypeDef] = []
            sent = 0
            number = 0
            while sent < size:
                number += 1
                want = min(self.config.part_size, size - sent)
                chunk, md5 = await asyncio.to_thread(_read_part, fh, want, sha)
                if len(chunk) != want:
                    raise self._corrupt_source(path, size, sha256)
                resp = await self._call(
                    "put",
                    functools.partial(
                        client.upload_part,
                        Bucket=self._b,
                        Key=name,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=md5,
                    ),
                    self._transfer_timeout(want),
                )
                parts.append({"PartNumber": number, "ETag": resp["ETag"]})
                sent += want
            extra = await asyncio.to_thread(fh.read, 1)
            if extra or sha.hexdigest() != sha256:
                raise self._corrupt_source(path, size, sha256)
            await self._call(
                "put",
                lambda: client.complete_multipart_upload(
                    Bucket=self._b, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
                # the server may assemble the parts before it answers
                self._transfer_timeout(size // 4),
            )
            completed = True
        finally:
            await asyncio.to_thread(fh.close)
            if not completed:
                await self._abort(name, upload_id)

    async def _abort(self, name: str, upload_id: str) -> None:
        """Best effort: an upload never completed is invisible anyway, and S3 lifecycle rules
        (or the server's own expiry) remove its parts."""
        client = self._need_client()
        if not self.up:
            return
        with contextlib.suppress(BucketError, _Missing, asyncio.CancelledError):
            await asyncio.shield(
                self._call(
                    "put",
                    lambda: client.abort_multipart_upload(
                        Bucket=self._b, Key=name, UploadId=upload_id
                    ),
                )
            )

    def _corrupt_source(self, path: Path, size: int, sha256: str) -> BucketError:
        self.stats.corrupt += 1
        self._count("corrupt")
        return BucketError(
            "corrupt", "put", f"{path.name} is not {size} bytes with sha256 {sha256[:12]}"
        )

    async def _put_conditional(
        self,
        op: str,
        send: Callable[[dict[str, Any]], Awaitable[Any]],
        timeout: float,
        *,
        only_if_absent: bool = True,
    ) -> None:
        """Send a write with If-None-Match: * (publish only if absent) where the server
        supports it; raises _Precondition when the object was already there."""
        conditional = self._conditional and only_if_absent
        cond: dict[str, Any] = {"IfNoneMatch": "*"} if conditional else {}
        try:
            await self._call(op, lambda: send(cond), timeout, conditional=bool(cond))
        except _Unsupported:
            self._conditional = False
            log.info("bucket: the endpoint does not take conditional writes; writing plainly")
            await self._call(op, lambda: send({}), timeout)

    # ------------------------------------------------------------ calls, deadlines, the breaker

    @property
    def _b(self) -> str:
        return self.config.bucket

    def _need_client(self) -> S3Client:
        if self._client is None:
            raise RuntimeError("Bucket.start() was not called")
        return self._client

    def _transfer_timeout(self, nbytes: int) -> float:
        return self.config.timeout + nbytes / self.config.min_rate

    def _check_up(self, op: str) -> None:
        if self._down_since is not None:
            self.stats.fast_failures += 1
            self._count("down")
            raise BucketError("down", op, self._down_reason)

    def _count(self, cause: str) -> None:
        self.stats.errors[cause] = self.stats.errors.get(cause, 0) + 1

    async def _call(
        self,
        op: str,
        make: Callable[[], Awaitable[T]],
        timeout: float | None = None,
        *,
        conditional: bool = False,
        check: bool = True,
    ) -> T:
        """Run one request under a deadline; map its failure to BucketError (or _Missing,
        _Precondition, _Unsupported) and mark the bucket down when the endpoint is at fault.
        `check=False` is for reads of a body already being streamed: another call's failure
        does not cut them off."""
        if check:
            self._check_up(op)
        try:
            try:
                async with asyncio.timeout(timeout if timeout is not None else self.config.timeout):
                    return await make()
            except ClientError as exc:
                # S3 answers an occasional 500/503 (InternalError, SlowDown) that its clients
                # are told to retry: once, before the endpoint counts as failing. Reads of a
                # body being streamed (check=False) cannot be sent again.
                status = _code_of(exc)[1]
                if not check or status < 500 or status == 501:  # 501: not implemented
                    raise
                await asyncio.sleep(RETRY_5XX_AFTER)
                async with asyncio.timeout(timeout if timeout is not None else self.config.timeout):
                    return await make()
        except ClientError as exc:
            code, status = _code_of(exc)
            if code in _MISSING_CODES:
                raise _Missing from None
            if conditional and code in _PRECONDITION_CODES:
                raise _Precondition from None
            if conditional and code in _UNSUPPORTED_CODES:
                raise _Unsupported from None
            error = _client_error(op, code, status, exc)
            self._fail(error, server_fault=status >= 500)
            raise error from None
        except (TimeoutError, ConnectTimeoutError, ReadTimeoutError):
            error = BucketError("timeout", op, "no answer in time")
            self._fail(error, server_fault=True)
            raise error from None
        except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
            error = BucketError("denied", op, _plain(exc))
            self._fail(error, server_fault=False)
            raise error from None
        except (BotoCoreError, aiohttp.ClientError, OSError) as exc:
            error = BucketError("unreachable", op, _plain(exc))
            self._fail(error, server_fault=True)
            raise error from None

    async def _read_chunk(self, body: Any, size: int) -> bytes:
        chunk: bytes = await self._call("get", lambda: body.read(size), check=False)
        return chunk

    def _fail(self, error: BucketError, *, server_fault: bool) -> None:
        self._count(error.cause)
        log.debug("%s", error)
        if server_fault and self._down_since is None:
            self._down_since = time.monotonic()
            self._down_reason = f"{error.cause}: {error.detail}" if error.detail else error.cause
            self.stats.marked_down += 1
            log.warning(
                "bucket %s marked down (%s); serving without it until it answers again",
                self.config.bucket,
                self._down_reason,
            )
            self._tasks.spawn(self._probe_until_up(), name="bucket-probe")

    async def _probe_until_up(self) -> None:
        delay = self.config.probe_interval
        while self._down_since is not None:
            await asyncio.sleep(delay)
            if await self.probe():
                down_for = time.monotonic() - self._down_since
                self._down_since = None
                self._down_reason = ""
                self.stats.recovered += 1
                log.warning("bucket %s answers again after %.1fs", self.config.bucket, down_for)
                return
            delay = min(delay * 2, self.config.probe_max_interval)

    async def probe(self) -> bool:
        """Does the endpoint answer at all (any answer but a 5xx)? Bypasses the breaker."""
        client = self._need_client()
        try:
            async with asyncio.timeout(self.config.timeout):
                await client.head_object(Bucket=self._b, Key=f"{self.config.prefix}.probe")
        except ClientError as exc:
            return _code_of(exc)[1] < 500
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError):
            return False
        return True


class _Unsupported(Exception):
    """The server does not implement a conditional write (internal)."""


# ---------------------------------------------------------------------------- helpers


def _code_of(exc: ClientError) -> tuple[str, int]:
    err = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    code = str(err.get("Code", ""))
    status = int(meta.get("HTTPStatusCode", 0) or 0)
    return code or str(status), status


def _client_error(op: str, code: str, status: int, exc: ClientError) -> BucketError:
    if code in _DENIED_CODES or status in (401, 403):
        return BucketError("denied", op, code)
    if code == "NoSuchBucket":
        return BucketError("not_found", op, "no such bucket")
    message = str(exc.response.get("Error", {}).get("Message", "") or "")
    detail = f"{code} {status}" + (f": {_scrub(message)}" if message else "")
    return BucketError("failed", op, detail)


def _plain(exc: BaseException) -> str:
    """A short message naming hosts, not URLs (no paths, no query: a presigned URL's
    signature lives there)."""
    text = str(exc) or type(exc).__name__
    return _scrub(text)[:300]


def _scrub(text: str) -> str:
    return _URL.sub(r"\1", text)


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def _read_checked(path: Path, size: int, sha256: str) -> tuple[bytes, str] | None:
    """The whole file and its Content-MD5, if it is `size` bytes with that sha256 (blocking)."""
    with path.open("rb") as fh:
        data = fh.read(size + 1)
    if len(data) != size or hashlib.sha256(data).hexdigest() != sha256:
        return None
    return data, _md5_b64(data)


def _read_part(fh: BinaryIO, size: int, sha: Any) -> tuple[bytes, str]:
    """Read one part, feed the whole-file hash, and give the part's Content-MD5 (blocking)."""
    data = fh.read(size)
    sha.update(data)
    return data, _md5_b64(data)


def _parse_index(raw: bytes, key: str) -> BucketEntry | None:
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != INDEX_VERSION or doc.get("key") != key:
            return None
        digest = doc["digest"]
        size = doc["size"]
        ctype = doc.get("content_type")
        meta = doc.get("metadata") or {}
        if (
            not isinstance(digest, str)
            or not re.fullmatch(r"[0-9a-f]{64}", digest)
            or not isinstance(size, int)
            or size < 0
            or not (ctype is None or isinstance(ctype, str))
            or not isinstance(meta, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
        ):
            return None
        return BucketEntry(key, digest, size, ctype, meta, float(doc.get("stored", 0.0)))
    except (ValueError, KeyError, TypeError):
        return None
