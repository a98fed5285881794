"""Serving a decided request: caches, coalescing, the pool walk, the answer.

Read it in this order (each module imports only those above it):

* `walk` - the pool walk: upstreams in order with the fallback table; returns `Walked`;
* `record` - `Served`, what happened to one request (access log, metrics), which takes a walk;
* `responses` - the answers built here (one-line errors, whole bodies, cached entries);
* `job` - `Job`, one decided request, and its fetch (`Job.walk`);
* `flights` - coalescing: `SingleFlight` (metadata), `ZipFlight` (zips, byte by byte);
* `freshness` - stale-while-revalidate and stale-if-error;
* `comparing` - rollout comparisons, a wrapper around the walk;
* `keeping` - which tier keeps what (`Tiers`, `Keeper`), a zip's checks before it is kept;
* `zips` - the zip path (bucket, verified, compared, streamed while spooled) and `send`;
* `cache` - `AnswerCache`, the entry points: `fast_hit`, `serve`, `cached`, `direct`.

The tiers themselves (memory, Redis, disk, bucket) are `router.cache`.
"""
