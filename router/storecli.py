"""The store commands of the command line: `store gc`, `warm`, `export`, `import`.

Kept apart from `router.cli` (which only adds these parsers and dispatches to `run`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from router.cliutil import post_admin, rules_or_report
from router.config.units import parse_duration, parse_size

COMMANDS = ("store", "warm", "export", "import")
Command = Callable[[Any, str, str], argparse.ArgumentParser]
INPUT_HELP = "a go.sum, go.mod or `go list -m all` output; - reads stdin"


def add_parsers(sub: Any, command: Command, rules_default: Path, rules_help: str) -> None:
    store = command(sub, "store", "the artifact store: retention")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    gc = command(
        store_sub,
        "gc",
        "remove the least recently used artifacts beyond a byte budget (a dry run unless --apply)",
    )
    gc.add_argument("--apply", action="store_true", help="remove them (default: only report)")
    gc.add_argument("--rules", type=Path, default=rules_default, help=rules_help)
    gc.add_argument(
        "--gateway",
        help="gc the local store of this running gateway (admin; Bearer ROUTER_ADMIN_TOKEN) "
        "(default: the rules' cache.dir, directly)",
    )
    gc.add_argument(
        "--budget",
        help="bytes to keep, e.g. 50GiB (default: the rules' cache.disk; required with --bucket)",
    )
    gc.add_argument(
        "--min-idle",
        default="1h",
        help="never remove what was used more recently than this (clients may be reading it)",
    )
    gc.add_argument(
        "--bucket", help="gc this bucket instead, s3://bucket/prefix/ (default: the disk store)"
    )
    gc.add_argument("--endpoint", help="the bucket's S3 endpoint URL (default: AWS)")
    gc.add_argument("--region", help="the bucket's region (default: AWS_REGION, else us-east-1)")
    gc.add_argument(
        "--redis",
        help="where bucket last-access times are kept (default: env ROUTER_REDIS_URL, else the "
        "rules' redis, else none: a bucket key counts as used when published)",
    )
    gc.add_argument("--json", action="store_true", help="print JSON instead of text")

    warm = command(sub, "warm", "fetch a build's modules through a gateway into its store")
    warm.add_argument("input", metavar="go.sum|go.mod|-", help=INPUT_HELP)
    _client_args(warm, "fetch through this gateway, e.g. https://goproxy.example.com")
    warm.add_argument("--json", action="store_true", help="print the report as JSON")

    export = command(sub, "export", "write a build's modules to a bundle for an air-gapped store")
    export.add_argument("input", metavar="go.sum|go.mod|-", help=INPUT_HELP)
    export.add_argument("out", type=Path, metavar="OUT.tar", help="the bundle to write")
    _client_args(export, "fetch through this gateway, e.g. https://goproxy.example.com")

    imp = command(sub, "import", "check a bundle and load it into the rules' cache.dir")
    imp.add_argument("bundle", type=Path, metavar="BUNDLE.tar")
    imp.add_argument("--rules", type=Path, default=rules_default, help=rules_help)
    imp.add_argument("--tenant", help="whose keys the files go under (default: anonymous)")
    imp.add_argument(
        "--token",
        default=os.environ.get("ROUTER_TENANT_TOKEN"),
        help="the tenant's token (default: env ROUTER_TENANT_TOKEN, else none)",
    )


def _client_args(p: argparse.ArgumentParser, gateway_help: str) -> None:
    p.add_argument("--gateway", required=True, help=gateway_help + " (default: none; required)")
    p.add_argument("--tenant", help="as this tenant (default: anonymous)")
    p.add_argument(
        "--token",
        default=os.environ.get("ROUTER_TENANT_TOKEN"),
        help="the tenant's token (default: env ROUTER_TENANT_TOKEN, else none)",
    )
    p.add_argument("--jobs", type=int, default=8, help="module versions fetched at once")


def run(args: argparse.Namespace) -> int:
    if args.command == "store":
        return cmd_gc(args)
    if args.command == "warm":
        return cmd_warm(args)
    if args.command == "export":
        return cmd_export(args)
    return cmd_import(args)


def _fail(what: str, message: str, code: int = 2) -> int:
    print(f"{what}: {message}", file=sys.stderr)
    return code


# ---------------------------------------------------------------------------- store gc


def cmd_gc(args: argparse.Namespace) -> int:

    try:
        min_idle = parse_duration(args.min_idle)
        budget = parse_size(args.budget) if args.budget is not None else None
    except ValueError as exc:
        return _fail("store gc", str(exc))
    if args.gateway:
        query = {"min_idle": args.min_idle, "apply": "1" if args.apply else "0"}
        if args.budget is not None:
            query["budget"] = args.budget
        return post_admin(args.gateway, "/debug/store/gc", query, "store gc")
    if args.bucket:
        if budget is None:
            return _fail("store gc", "--bucket needs --budget (the bytes the bucket may hold)")
        return _gc_bucket(args, budget, min_idle)
    rules = rules_or_report(args.rules)
    if rules is None:
        return 1
    if not rules.cache.dir:
        return _fail("store gc", f"{args.rules} sets no cache.dir: there is no local store")
    from router.cache.disk import ArtifactStore
    from router.retention import gc_disk

    store = ArtifactStore(Path(rules.cache.dir), rules.cache.disk)
    store.open(evict=False)
    report = gc_disk(
        store,
        budget if budget is not None else rules.cache.disk,
        min_idle=min_idle,
        apply=args.apply,
    )
    _print_gc(report, args.json)
    return 0


def _print_gc(report: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for line in report.lines():
            print(line)


def _gc_bucket(args: argparse.Namespace, budget: int, min_idle: float) -> int:
    try:
        from router.cache.bucket import Bucket, BucketError
        from router.core.bucketing import BucketConfig
    except ImportError as exc:  # the s3 extra is not installed
        return _fail("store gc", str(exc))
    from router.retention import BucketAccess, gc_bucket

    try:
        config = BucketConfig(url=args.bucket, endpoint=args.endpoint, region=args.region)
    except ValueError as exc:
        return _fail("store gc", str(exc))
    url = args.redis or os.environ.get("ROUTER_REDIS_URL")
    if not url and args.rules.exists():
        from router.config import load_rules

        loaded = load_rules([args.rules]).rules
        url = loaded.redis if loaded is not None else None

    async def go() -> Any:
        from router.fleet.client import connect

        client = connect(url) if url else None
        access = BucketAccess(client) if client is not None else None
        try:
            async with Bucket(config) as bucket:
                times = await access.all() if access is not None else None
                report = await gc_bucket(
                    bucket,
                    budget,
                    now=time.time(),
                    min_idle=min_idle,
                    apply=args.apply,
                    access=times,
                )
            if access is not None and args.apply:
                await access.forget([*report.retention.evict, *report.dangling])
            return report
        finally:
            if client is not None:
                await client.aclose()

    from redis.exceptions import RedisError

    try:
        report = asyncio.run(go())
    except BucketError as exc:
        return _fail("store gc", str(exc), 1)
    except (RedisError, OSError) as exc:
        return _fail("store gc", f"cannot reach Redis: {type(exc).__name__}: {exc}", 1)
    _print_gc(report, args.json)
    return 0


# ---------------------------------------------------------------------------- warm, export


def _requirements(what: str, name: str) -> tuple[list[Any], str] | int:
    from router.audit import read_input
    from router.core.requirements import requirements_of

    try:
        text = read_input(name, sys.stdin)
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(what, str(exc))
    reqs = requirements_of([(name, text)])
    if not reqs:
        return _fail(what, f"no module versions in {name}")
    return reqs, text


def cmd_warm(args: argparse.Namespace) -> int:
    from router.audit import Progress, gateway_headers
    from router.warming import client_timeout, warm

    if args.jobs < 1:
        return _fail("warm", "--jobs must be at least 1")
    got = _requirements("warm", args.input)
    if isinstance(got, int):
        return got
    reqs, _ = got
    progress = Progress(sys.stderr, "warm")

    async def go() -> Any:
        import aiohttp

        async with aiohttp.ClientSession(timeout=client_timeout()) as session:
            return await warm(
                session,
                args.gateway,
                reqs,
                headers=gateway_headers(args.tenant, args.token),
                jobs=args.jobs,
                progress=progress,
            )

    try:
        report = asyncio.run(go())
    finally:
        progress.clear()
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        for line in report.lines():
            print(line)
    return 0 if report.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    from router.audit import gateway_headers
    from router.bundles import export_bundle
    from router.core.requirements import go_sum_hashes

    if args.jobs < 1:
        return _fail("export", "--jobs must be at least 1")
    got = _requirements("export", args.input)
    if isinstance(got, int):
        return got
    reqs, text = got
    report = asyncio.run(
        export_bundle(
            args.gateway,
            reqs,
            go_sum_hashes(text),
            args.out,
            headers=gateway_headers(args.tenant, args.token),
            jobs=args.jobs,
        )
    )
    for line in report.lines(args.out):
        print(line, file=sys.stderr if report.problems else sys.stdout)
    return 1 if report.problems else 0


def cmd_import(args: argparse.Namespace) -> int:
    from router.bundles import import_bundle
    from router.cache.disk import ArtifactStore

    rules = rules_or_report(args.rules)
    if rules is None:
        return 1
    if not rules.cache.dir:
        return _fail("import", f"{args.rules} sets no cache.dir: there is no store to load")
    store = ArtifactStore(Path(rules.cache.dir), rules.cache.disk)
    store.open()
    report = import_bundle(args.bundle, store, rules, tenant=args.tenant, token=args.token)
    for line in report.lines():
        print(line, file=sys.stderr if report.problems else sys.stdout)
    return 1 if report.problems or report.skipped else 0
