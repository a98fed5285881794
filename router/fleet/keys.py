"""Every Redis key and channel the gateway uses, built here and nowhere else.

Prefix `goproxy-router:`. Keys of one cache entry carry a hash tag (`{...}`) so an
entry and its lock live in one Redis Cluster slot.

| key | type | what | expires |
|---|---|---|---|
| `cost` | hash | upstream -> USD per GB override (`goproxy-router cost set`) | never |
| `rtt:<upstream>` | hash | replica -> `seconds@unix time` | 5 min idle |
| `eject:<upstream>` | string | unix time the ejection ends | then |
| `heat:<upstream>:<bucket>` | sorted set | module -> answers served in the bucket | heat window |
| `replicas` | sorted set | replica -> last seen (rate limits share per replica) | 10 s idle |
| `rl:{<limit key>}` | hash | replica -> tokens taken | 2 min |
| `pulls:{<client key>}:<slot>` | string | zips pulled in that slot (abuse) | window + 60 s |
| `rollouts` | hash | `<candidate>|rolled_back`, `<candidate>|reset` -> unix time | never |
| `meta:{<sha256 of cache key>}` | string | a cache entry: JSON head line + body | when stale |
| `lock:{<sha256 of cache key>}` | string | the replica fetching it | 5 s |
| `modkeys:<module>` | set | the meta keys of a module (purge) | with them |
| `job:{<view>}` | hash | a job view: question -> pinned answer (JSON head + body) | jobs.ttl idle |
| `jobs` | sorted set | view (`tenant/job`) -> last used (count bound, GC) | never (GC'd) |
| `jobsize` | hash | view -> bytes pinned (bytes bound) | never (GC'd) |
| `bucket-access` | sorted set | bucket cache key -> last access (`store gc`) | by gc |
| channel `purge` | pub/sub | modules to purge on every replica | - |
"""

from __future__ import annotations

import hashlib

PREFIX = "goproxy-router:"
PURGE_CHANNEL = PREFIX + "purge"
COST = PREFIX + "cost"
REPLICAS = PREFIX + "replicas"
ROLLOUTS = PREFIX + "rollouts"
JOBS = PREFIX + "jobs"
JOB_SIZES = PREFIX + "jobsize"
BUCKET_ACCESS = PREFIX + "bucket-access"


def rtt(upstream: str) -> str:
    return f"{PREFIX}rtt:{upstream}"


def eject(upstream: str) -> str:
    return f"{PREFIX}eject:{upstream}"


def heat(upstream: str, bucket: int) -> str:
    return f"{PREFIX}heat:{upstream}:{bucket}"


def rate(limit_key: str) -> str:
    return f"{PREFIX}rl:{{{limit_key}}}"


def pulls(client_key: str, slot: int) -> str:
    return f"{PREFIX}pulls:{{{client_key}}}:{slot}"


def _tag(cache_key: str) -> str:
    return hashlib.sha256(cache_key.encode()).hexdigest()[:32]


def meta(cache_key: str) -> str:
    return f"{PREFIX}meta:{{{_tag(cache_key)}}}"


def lock(cache_key: str) -> str:
    return f"{PREFIX}lock:{{{_tag(cache_key)}}}"


def modkeys(module: str) -> str:
    return f"{PREFIX}modkeys:{module}"


def job(view: str) -> str:
    return f"{PREFIX}job:{{{view}}}"
