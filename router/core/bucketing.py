"""The object-storage tier's settings and decisions (pure: no I/O).

`BucketConfig` is `cache.bucket` of the rules, checked; `redirect_allowed` decides whether a
bucket hit may be answered with a presigned URL instead of the bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
MAX_REDIRECT_EXPIRY = 3600.0  # a presigned URL handed to a client lives at most this long


@dataclass(frozen=True, slots=True)
class BucketConfig:
    """`cache.bucket` of the rules. Durations in seconds, sizes in bytes."""

    url: str  # s3://bucket/key/prefix/
    endpoint: str | None = None  # any S3-compatible endpoint; None: AWS for the region
    region: str | None = None  # None: AWS_REGION / AWS_DEFAULT_REGION / the profile, else us-east-1
    serve: Literal["stream", "redirect"] = "stream"
    ca_bundle: str | None = None  # a private CA (PEM file); None: AWS_CA_BUNDLE, else certifi
    profile: str | None = None  # a profile of the shared AWS files; None: AWS_PROFILE / default
    addressing: Literal["auto", "path", "virtual"] = "auto"  # auto: path with an endpoint
    timeout: float = 5.0  # each call; for a transfer, each idle gap (plus `min_rate` below)
    min_rate: int = 1 << 20  # bytes/s an upload part must keep up on top of `timeout`
    part_size: int = 16 << 20  # files larger than this go up as a multipart upload
    presign_expires: float = 300.0
    probe_interval: float = 1.0  # first probe of a down endpoint; doubles up to the max
    probe_max_interval: float = 30.0
    max_connections: int = 32
    max_uploads: int = 4  # data uploads at once (each holds up to one part in memory)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"bucket url must look like s3://bucket/prefix/, not {self.url!r}")
        if parts.query or parts.fragment:
            raise ValueError("bucket url takes no query or fragment")
        if not _BUCKET_NAME.match(parts.netloc):
            raise ValueError(f"not a valid bucket name: {parts.netloc!r}")
        prefix = parts.path.strip("/")
        if "//" in parts.path or any(seg in (".", "..") for seg in prefix.split("/")):
            raise ValueError(f"bucket key prefix must be a plain path, not {parts.path!r}")
        if self.endpoint is not None:
            ep = urlsplit(self.endpoint)
            if ep.scheme not in ("http", "https") or not ep.netloc:
                raise ValueError(f"bucket endpoint must be an http(s) URL, not {self.endpoint!r}")
            if ep.username or ep.password:
                raise ValueError("bucket endpoint must not carry credentials")
        if self.serve not in ("stream", "redirect"):
            raise ValueError(f"bucket serve must be stream or redirect, not {self.serve!r}")
        if self.addressing not in ("auto", "path", "virtual"):
            raise ValueError(f"bucket addressing must be auto, path or virtual: {self.addressing}")
        if min(self.timeout, self.min_rate, self.max_connections, self.max_uploads) <= 0:
            raise ValueError(
                "bucket timeout, min_rate, max_connections and max_uploads must be positive"
            )
        if self.part_size < 5 << 20:
            raise ValueError("bucket part_size must be at least 5 MiB (S3's smallest part)")
        if not 1 <= self.presign_expires <= 7 * 86400:
            raise ValueError("bucket presign_expires must be between 1 s and 7 days")
        if self.probe_interval <= 0 or self.probe_max_interval < self.probe_interval:
            raise ValueError("bucket probe intervals must be positive, max >= first")

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def prefix(self) -> str:
        """The key prefix, '' or ending in '/'."""
        path = urlsplit(self.url).path.strip("/")
        return f"{path}/" if path else ""


def redirect_allowed(serve: str, *, zip_request: bool, private: bool) -> bool:
    """Whether a bucket hit is answered with a redirect to a presigned URL: only with
    `serve: redirect`, only for a `.zip`, and never for a private answer. A presigned URL is
    a bearer credential for its lifetime: whoever holds it (a proxy log, a shared CI cache, a
    pasted error) can fetch the object with no tenant check, so a private module's bytes
    always go through the gateway, where the tenant's rules are applied on every request."""
    return serve == "redirect" and zip_request and not private
