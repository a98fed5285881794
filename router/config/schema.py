"""The rules schema: every key the rules may hold, with its type and default.

This is the single source of truth for what `validate` accepts and what
`goproxy-router schema` prints. Behaviour for a key lives elsewhere; a key
may exist here before the feature that uses it does.
"""

from __future__ import annotations

import difflib
import math
from types import MappingProxyType
from typing import Any

from router.config.source import LocatedDict
from router.config.spec import (
    CIDR,
    DURATION,
    LISTEN,
    NAME,
    RATE,
    REDIS_URL,
    REF,
    REGEX,
    SIZE,
    TOKEN_HASH,
    URL,
    AnyOf,
    Bool,
    Checker,
    Converted,
    Field,
    ListOf,
    MapOf,
    Number,
    Obj,
    OffOr,
    Str,
    Version,
)
from router.core.admission import WORDS as ADMIT_WORDS
from router.core.bucketing import BucketConfig
from router.core.protocol import SUMDB_NAME
from router.core.versions import GoVersionConstraint


def _check_glob(value: str) -> str:
    """A GOPRIVATE-style pattern: path.Match syntax per element, prefix match."""
    depth = 0
    escaped = False
    for ch in value:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "[":
            if depth:
                raise ValueError(f"glob {value!r} does not compile: nested '['")
            depth = 1
        elif ch == "]":
            if not depth:
                raise ValueError(f"glob {value!r} does not compile: unmatched ']'")
            depth = 0
    if depth or escaped:
        raise ValueError(f"glob {value!r} does not compile: unterminated '[' or '\\'")
    if not value.strip() or "," in value or " " in value:
        raise ValueError(f"glob {value!r} is empty or holds a comma or space; list one per item")
    return value


def _check_spdx_id(value: str) -> str:
    """An SPDX licence id, in its current form (`GPL-3.0` -> `GPL-3.0-only`)."""
    from router.licenses import canonical_id, close_ids

    canonical = canonical_id(value) if value.strip() == value and " " not in value else None
    if canonical is None:
        close = close_ids(value)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{value!r} is not an SPDX licence id{hint}")
    return canonical


def _check_go_version(value: str) -> str:
    GoVersionConstraint.parse(value)
    return value


GLOB = Converted(_check_glob, r"^[^, ]+$", "corp.example.com/*")
GO_VERSION = Converted(_check_go_version, r"^\s*[<>=!]*\s*(go)?[0-9]", "<1.21")
GLOBS = ListOf(GLOB, one_or_many=True)
SPDX_ID = Converted(_check_spdx_id, r"^[A-Za-z0-9.+-]+$", "Apache-2.0")
ADVISORY_ID = Str(
    pattern=r"GO-\d{4}-\d{4,}|CVE-\d{4}-\d{4,}|GHSA(-[23456789cfghjmpqrvwx]{4}){3}",
    hint=" as an advisory id (GO-2024-1234, CVE-2024-12345 or GHSA-xxxx-xxxx-xxxx)",
)
KINDS = ("list", "info", "mod", "zip", "latest", "sumdb")


# --- L2 admission (router/core/admission.py): cache.admit, pools.NAME.admit,
# tenants[].admit


def _check_admit_word(value: str) -> str:
    if value not in ADMIT_WORDS:
        close = difflib.get_close_matches(value.lower(), ADMIT_WORDS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"{value!r} is not an admit word{hint}: use {', '.join(ADMIT_WORDS)} or {{regex: ...}}"
        )
    return value


ADMIT = ListOf(
    AnyOf(
        (
            (str, Converted(_check_admit_word, f"^({'|'.join(ADMIT_WORDS)})$", "release")),
            (dict, Obj({"regex": Field(REGEX, required=True)})),
        ),
        expected="release, prerelease, pseudo or {regex: ...}",
    ),
    one_or_many=True,
    description="versions whose .info/.mod/.zip are kept in the artifact store and the "
    "shared Redis tier (others are served and kept in memory only): release, prerelease, "
    "pseudo, or {regex: ...} searched in the version; [] = none",
)
SUMDB_DB = Str(pattern=SUMDB_NAME, hint=" as a checksum database name (like sum.golang.org)")


# Checks of keys against each other. Each runs only when every key of its
# mapping read cleanly (see Obj), and reports at the key that is wrong.


def _sum_to_one(weights: LocatedDict, ck: Checker) -> None:
    total = weights["rtt"] + weights["cost"] + weights["heat"]
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        ck.error(
            weights.file,
            weights.line,
            f"selection.weights must sum to 1 (rtt + cost + heat = {total:g})",
        )


def _cert_with_key(tls: LocatedDict, ck: Checker) -> None:
    if bool(tls.get("cert")) != bool(tls.get("key")):
        given = "cert" if tls.get("cert") else "key"
        ck.error(
            tls.file, tls.value_line(given), f"tls needs both cert and key (only {given} is set)"
        )


def _server_tls(tls: LocatedDict, ck: Checker) -> None:
    _cert_with_key(tls, ck)
    if tls["client_auth"] != "none" and not tls.get("client_ca"):
        ck.error(tls.file, tls.value_line("client_auth"), "tls.client_auth needs tls.client_ca")


def _one_kind_of_auth(auth: LocatedDict, ck: Checker) -> None:
    """Bearer (from env or file) or basic (user, password from env or file), never both."""
    bearer = [k for k in ("bearer_env", "bearer_file") if auth.get(k)]
    basic = [k for k in ("user", "password_env", "password_file") if auth.get(k)]
    for given in (bearer, [k for k in basic if k != "user"]):
        if len(given) > 1:
            where = max(auth.value_line(k) for k in given)
            ck.error(auth.file, where, f"auth gives the secret twice: {given[0]} and {given[1]}")
    if bearer and basic:
        where = max(auth.value_line(bearer[0]), auth.value_line(basic[0]))
        ck.error(auth.file, where, "auth is bearer or basic, not both")
    elif not bearer and not ("user" in basic and len(basic) > 1):
        ck.error(
            auth.file,
            auth.line,
            "auth needs bearer_env/bearer_file, or user with password_env/password_file",
        )


def _allow_or_deny(licenses: LocatedDict, ck: Checker) -> None:
    given = [k for k in ("allow", "deny") if licenses.get(k)]
    if len(given) == 2:
        ck.error(
            licenses.file,
            max(licenses.line_of(k) for k in given),
            "licenses takes allow or deny, not both",
        )
    elif not given:
        ck.error(licenses.file, licenses.line, "licenses needs allow: [...] or deny: [...]")


TLS_SERVER = Obj(
    {
        "cert": Field(Str(), description="PEM certificate chain"),
        "key": Field(Str(), description="PEM private key"),
        "client_ca": Field(Str(), description="CA bundle that signs client certificates"),
        "client_auth": Field(Str(choices=("none", "optional", "require")), default="none"),
    },
    whole=_server_tls,
)

SELECTION = Obj(
    {
        "weights": Field(
            Obj(
                {
                    "rtt": Field(Number(minimum=0, maximum=1), default=0.40),
                    "cost": Field(Number(minimum=0, maximum=1), default=0.35),
                    "heat": Field(Number(minimum=0, maximum=1), default=0.25),
                },
                whole=_sum_to_one,
            ),
            default=None,
        ),
        "mode": Field(Str(choices=("best", "weighted", "ordered")), default="weighted"),
        "probe_interval": Field(
            DURATION, default=10.0, description="probe upstreams with no sample for this long"
        ),
        "rtt_decay": Field(DURATION, default=10.0, description="how fast RTT estimates forget"),
        "heat_window": Field(DURATION, default=3600.0, description="how long heat is remembered"),
        "ejection": Field(
            Obj(
                {
                    "consecutive_failures": Field(Number(minimum=1, integer=True), default=5),
                    "base": Field(DURATION, default=30.0),
                    "max": Field(DURATION, default=300.0),
                }
            ),
            default=None,
        ),
    }
)

TIMEOUTS = Obj(
    {
        "connect": Field(DURATION, default=2.0, description="TCP + TLS connect"),
        "first_byte": Field(DURATION, default=10.0, description="until response headers"),
        "metadata": Field(DURATION, default=30.0, description="whole list/info/mod/latest/sumdb"),
        "total": Field(DURATION, default=600.0, description="whole .zip transfer"),
        "idle": Field(DURATION, default=30.0, description="longest pause inside a body"),
    }
)

UPSTREAM = Obj(
    {
        "name": Field(NAME, required=True),
        "url": Field(URL, required=True),
        "tier": Field(Str(choices=("L0", "L1", "L2", "L3")), default="L1"),
        "cost_per_gb": Field(Number(minimum=0), default=0.0),
        "sumdb": Field(ListOf(SUMDB_DB), default=()),
        "public": Field(Bool(), default=True),
        "timeouts": Field(TIMEOUTS, default=None),
        "max_connections": Field(Number(minimum=1, integer=True), default=100),
        "auth": Field(
            Obj(
                {
                    "bearer_env": Field(Str()),
                    "bearer_file": Field(Str()),
                    "user": Field(Str()),
                    "password_env": Field(Str()),
                    "password_file": Field(Str()),
                },
                whole=_one_kind_of_auth,
            )
        ),
        "tls": Field(
            Obj(
                {
                    "ca": Field(Str(), description="CA bundle for this upstream"),
                    "cert": Field(Str(), description="client certificate"),
                    "key": Field(Str(), description="client key"),
                },
                whole=_cert_with_key,
            )
        ),
    }
)

# ---- cache.bucket: the object-storage tier (issue 18.1; docs/bucket.md) ----


def _check_bucket_url(value: str) -> str:
    BucketConfig(url=value)  # raises ValueError naming what is wrong
    return value


def s3_extra_missing() -> bool:
    """Whether the `s3` extra (aiobotocore) is not installed."""
    try:
        import aiobotocore.session  # noqa: F401
    except ImportError:
        return True
    return False


def bucket_config(raw: LocatedDict | dict[str, Any]) -> BucketConfig:
    """The typed `cache.bucket` of a checked mapping (raises ValueError on bad ranges)."""
    return BucketConfig(**{k: raw[k] for k in BUCKET_KEYS if k in raw})


def _bucket_whole(bucket: LocatedDict, ck: Checker) -> None:
    if s3_extra_missing():
        ck.error(
            bucket.file,
            bucket.line,
            "cache.bucket needs the s3 extra (aiobotocore), which is not installed: "
            "pip install 'goproxy-router[s3]'",
        )
    try:
        bucket_config(bucket)
    except ValueError as exc:
        ck.error(bucket.file, bucket.line, str(exc))


def _cache_whole(cache: LocatedDict, ck: Checker) -> None:
    if cache.get("bucket") is not None and not cache["dir"]:
        ck.error(
            cache.file,
            cache.line_of("bucket"),
            "cache.bucket needs cache.dir: the local disk is the read-through layer in front "
            "of the bucket (and where an artifact is checked before it is published)",
        )


BUCKET_KEYS = (
    "url",
    "endpoint",
    "region",
    "serve",
    "ca_bundle",
    "profile",
    "addressing",
    "timeout",
    "min_rate",
    "part_size",
    "presign_expires",
    "probe_interval",
    "probe_max_interval",
    "max_connections",
    "max_uploads",
)
POSITIVE_INT = Number(minimum=1, integer=True)
BUCKET = Obj(
    {
        "url": Field(
            Converted(_check_bucket_url, r"^s3://", "s3://goproxy-artifacts/prod/"),
            required=True,
            description="bucket and key prefix",
        ),
        "endpoint": Field(URL, description="any S3-compatible endpoint; absent: AWS"),
        "region": Field(Str(), description="absent: AWS_REGION / the profile / us-east-1"),
        "serve": Field(
            Str(choices=("stream", "redirect")),
            default="stream",
            description="stream: through the gateway; redirect: a presigned URL for a public .zip",
        ),
        "ca_bundle": Field(Str(), description="PEM file of a private CA; absent: AWS_CA_BUNDLE"),
        "profile": Field(Str(), description="a profile of the shared AWS files"),
        "addressing": Field(Str(choices=("auto", "path", "virtual")), default="auto"),
        "timeout": Field(DURATION, default=5.0, description="each call, each idle gap"),
        "min_rate": Field(SIZE, default=1 << 20, description="bytes/s an upload must keep up"),
        "part_size": Field(SIZE, default=16 << 20, description="multipart above this"),
        "presign_expires": Field(DURATION, default=300.0, description="at most 1h for redirects"),
        "probe_interval": Field(DURATION, default=1.0),
        "probe_max_interval": Field(DURATION, default=30.0),
        "max_connections": Field(POSITIVE_INT, default=32),
        "max_uploads": Field(POSITIVE_INT, default=4),
    },
    whole=_bucket_whole,
)

# ---- end cache.bucket ----

CACHE = Obj(
    {
        "memory": Field(SIZE, default=256 << 20, description="metadata cache budget; 0 = off"),
        "dir": Field(Str(), default="", description="artifact store folder; empty = none"),
        "disk": Field(SIZE, default=10 << 30),
        "spool": Field(
            SIZE,
            default=512 << 20,
            description="bytes of bodies being received that may be on disk at once "
            "(in dir/tmp when dir is set, counted in disk; else under $TMPDIR); 0 = none",
        ),
        "bad_zips": Field(
            Str(choices=("serve", "refuse")),
            default="serve",
            description="a zip breaking Go's rules is never kept; serve: pass it on as the "
            "upstream sent it; refuse: check before the first byte and answer 502",
        ),
        "ttl": Field(
            Obj(
                {
                    "list": Field(DURATION, default=60.0),
                    "latest": Field(DURATION, default=60.0),
                    "not_found": Field(DURATION, default=30.0),
                }
            ),
            default=None,
        ),
        "stale_if_error": Field(DURATION, default=86400.0),
        "decay": Field(
            Number(minimum=0, maximum=1, exclusive_minimum=True),
            default=0.999,
            description="per-second decay of a key's frequency (measured: benchmarks/CACHE.md)",
        ),
        "crp": Field(DURATION, default=0.3, description="correlated reference period"),
        "k": Field(Number(minimum=1, maximum=8, integer=True), default=2),
        "admit": Field(ADMIT, default=("release",)),
        "bucket": Field(BUCKET, description="object-storage tier behind dir (docs/bucket.md)"),
    },
    whole=_cache_whole,
)

POOL = Obj(
    {
        "upstreams": Field(ListOf(REF, min_items=1), required=True),
        "fallback": Field(Str(choices=("not-found", "any-error")), default="not-found"),
        "mode": Field(
            Str(choices=("best", "weighted", "ordered")),
            description="overrides selection.mode for this pool",
        ),
        "admit": Field(ADMIT, description="overrides cache.admit for this pool"),
    }
)

BUCKET = Obj(
    {
        "rate": Field(RATE, required=True),
        "burst": Field(Number(minimum=1, integer=True)),
    }
)

LICENSES = Obj(
    {
        "allow": Field(
            ListOf(SPDX_ID, min_items=1), description="SPDX ids allowed; every other is refused"
        ),
        "deny": Field(ListOf(SPDX_ID, min_items=1), description="SPDX ids refused"),
        "unknown": Field(
            Str(choices=("allow", "deny")),
            default="deny",
            description="no licence file at the module root, or one not recognised",
        ),
    },
    whole=_allow_or_deny,
)

VULNERABILITIES = Obj(
    {
        "db": Field(
            Str(), required=True, description="folder of an offline OSV database (vuln.go.dev)"
        ),
        "allow": Field(ListOf(ADVISORY_ID), default=(), description="advisories accepted anyway"),
    }
)

POLICY = Obj(
    {
        "mode": Field(
            Str(choices=("enforce", "warn")),
            description="enforce (default): refuse with 403; warn: serve, add a header, count",
        ),
        "licenses": Field(
            OffOr(LICENSES, expected="a mapping (allow or deny)"),
            description="licence allow- or deny-list (off: none, over a tenant's)",
        ),
        "min_age": Field(
            DURATION, description="cooldown: versions younger than this are refused (0: none)"
        ),
        "vulnerabilities": Field(
            OffOr(VULNERABILITIES, expected="a mapping with db"),
            description="refuse versions an advisory affects (off: none, over a tenant's)",
        ),
    },
    description="policy gates; on a route, each key set overrides the tenant's",
)

TENANT = Obj(
    {
        "id": Field(NAME, required=True),
        "tokens": Field(ListOf(TOKEN_HASH), default=()),
        "pool": Field(REF),
        "private": Field(GLOBS, default=()),
        "allow": Field(GLOBS, default=()),
        "deny": Field(GLOBS, default=()),
        "verify_checksums": Field(Bool(), default=False),
        "client_certs": Field(ListOf(Str()), default=()),
        "limit": Field(BUCKET),
        "policy": Field(POLICY),
        "admit": Field(ADMIT, description="overrides the pool's admit and cache.admit"),
    }
)

HEADER_MATCH = AnyOf(
    (
        (str, Str()),
        (dict, Obj({"regex": Field(REGEX, required=True)})),
    ),
    expected="text (exact match) or {regex: ...}",
)

ROUTE = Obj(
    {
        "name": Field(NAME, required=True),
        "match": Field(
            Obj(
                {
                    "tenant": Field(ListOf(REF, one_or_many=True)),
                    "go_version": Field(GO_VERSION),
                    "module": Field(GLOBS),
                    "kind": Field(ListOf(Str(choices=KINDS), one_or_many=True)),
                    "header": Field(
                        MapOf(
                            HEADER_MATCH,
                            key=Str(pattern=r"[A-Za-z0-9-]+", hint=" as a header name"),
                        )
                    ),
                }
            ),
            default=None,
        ),
        "pool": Field(REF, required=True),
        "prefer_fresh": Field(Bool(), default=False),
        "verify_checksums": Field(Bool()),
        "policy": Field(POLICY),
        "offline": Field(
            Bool(),
            default=False,
            description="hermetic: serve only what is cached, 404 naming the mode otherwise",
        ),
    }
)

ABUSE = Obj(
    {
        "pulls": Field(Number(minimum=1, integer=True), default=50),
        "window": Field(DURATION, default=300.0),
        "by": Field(
            ListOf(Str(choices=("ip", "user_agent", "tenant")), min_items=1),
            default=("ip", "user_agent"),
        ),
        "action": Field(Str(choices=("flag", "throttle")), default="flag"),
        "throttle": Field(BUCKET),
        "cooldown": Field(DURATION, default=900.0),
        "exempt": Field(ListOf(Str()), default=()),
    }
)

RULES = Obj(
    {
        "version": Field(
            Version(supported=1),
            required=True,
            missing="no 'version' key: a rules file starts with 'version: 1'",
        ),
        "listen": Field(LISTEN),
        "tls": Field(TLS_SERVER),
        "trusted_proxies": Field(ListOf(CIDR), default=()),
        "redis": Field(REDIS_URL),
        "selection": Field(SELECTION, default=None),
        "upstreams": Field(ListOf(UPSTREAM), default=()),
        "cache": Field(CACHE, default=None),
        "pools": Field(MapOf(POOL), default=MappingProxyType({})),
        "tenants": Field(ListOf(TENANT), default=()),
        "routes": Field(ListOf(ROUTE), default=()),
        "default": Field(
            Obj(
                {
                    "pool": Field(REF),
                    "anonymous": Field(Bool(), default=True),
                }
            ),
            default=None,
        ),
        "limits": Field(
            Obj(
                {
                    "tenant": Field(BUCKET),
                    "anonymous": Field(BUCKET),
                    "abuse": Field(ABUSE),
                }
            )
        ),
        "checksum_dbs": Field(
            ListOf(
                Obj(
                    {
                        "name": Field(SUMDB_DB, required=True),
                        "key": Field(Str(), required=True),
                        "url": Field(URL),
                    }
                )
            ),
            default=(),
        ),
        "nosumdb": Field(GLOBS, default=()),
        "rollouts": Field(
            ListOf(
                Obj(
                    {
                        "upstream": Field(REF, required=True),
                        "compare_with": Field(REF, required=True),
                        "sample": Field(Number(minimum=0, maximum=1), default=0.1),
                        "max_mismatch": Field(Number(minimum=0, maximum=1), default=0.05),
                        "window": Field(DURATION, default=30.0),
                    }
                )
            ),
            default=(),
        ),
        "admin": Field(
            Obj(
                {
                    "networks": Field(ListOf(CIDR), default=("127.0.0.0/8", "::1/128")),
                    "tokens": Field(ListOf(TOKEN_HASH), default=()),
                }
            ),
            default=None,
        ),
        "logging": Field(
            Obj(
                {
                    "level": Field(
                        Str(choices=("debug", "info", "warning", "error")), default="info"
                    ),
                    "access": Field(Bool(), default=True, description="one JSON line a request"),
                    "sample": Field(
                        Number(minimum=0, maximum=1),
                        default=1.0,
                        description="share of requests logged (5xx always are)",
                    ),
                }
            ),
            default=None,
        ),
        "tracing": Field(
            Obj(
                {
                    "enabled": Field(Bool(), default=False),
                    "endpoint": Field(Str(), description="OTLP/HTTP endpoint (else env)"),
                    "service_name": Field(Str(), default="goproxy-router"),
                    "sample": Field(Number(minimum=0, maximum=1), default=1.0),
                    "export_timeout": Field(DURATION, default=5.0),
                    "batch_size": Field(Number(minimum=1, integer=True), default=512),
                }
            ),
            default=None,
        ),
        # ---- L3 job views and offline mode (router.core.jobviews)
        "network": Field(
            Str(choices=("online", "offline")),
            default="online",
            description="offline: serve only what the cache and store hold (air-gapped); "
            "everything else is a 404 naming the mode, no upstream is contacted",
        ),
        "jobs": Field(
            Obj(
                {
                    "ttl": Field(
                        DURATION, default=3600.0, description="a job view idle this long is gone"
                    ),
                    "max_views": Field(Number(minimum=1, integer=True), default=10000),
                    "max_bytes": Field(
                        SIZE, default=256 << 20, description="pinned answers of every view"
                    ),
                }
            ),
            default=None,
        ),
        "server": Field(
            Obj(
                {
                    "header_timeout": Field(DURATION, default=10.0),
                    "max_header_bytes": Field(SIZE, default=16 << 10),
                    "max_connections": Field(Number(minimum=1, integer=True), default=10000),
                    "shutdown_timeout": Field(DURATION, default=30.0),
                    "stall_timeout": Field(
                        DURATION,
                        default=60.0,
                        description="a client that reads nothing of a download for this "
                        "long is dropped",
                    ),
                    "streams_per_client": Field(
                        Number(minimum=1, integer=True),
                        default=32,
                        description="downloads one client (address and tenant) may have "
                        "open at once; more get 429",
                    ),
                }
            ),
            default=None,
        ),
    }
)

# Keys whose values are lists: merged across files by concatenation, in file order.
LIST_KEYS = frozenset(
    {"upstreams", "tenants", "routes", "trusted_proxies", "checksum_dbs", "nosumdb", "rollouts"}
)
# Keys whose values are name -> object maps: merged across files, a name defined once.
MAP_KEYS = frozenset({"pools"})


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one rules file."""
    out = RULES.json_schema()
    out["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    out["title"] = "goproxy-router rules"
    return out
