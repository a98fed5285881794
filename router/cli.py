"""The command line: serve, validate, hash-token, schema, cost, purge, rollout, explain, job,
audit, store gc, warm, export, import.

Every flag's help shows its default. Output closed early (`... | head -1`) ends a
command quietly with the shell's code for a broken pipe, never with a traceback."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from router import storecli
from router.cliutil import post_admin, rules_or_report
from router.config import Rules, load_rules
from router.config.schema import json_schema

DEFAULT_RULES = Path("rules")
DEFAULT_LISTEN = "0.0.0.0:8080"
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a command killed by SIGPIPE
RULES_HELP = "rules file or folder, relative to the current directory"
REDIS_HELP = (
    "redis URL shared by the replicas (default: env ROUTER_REDIS_URL, else the rules' redis)"
)
GATEWAY_HELP = "without Redis: the gateway's URL (admin), e.g. http://127.0.0.1:8080"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: X)` to a flag's help, unless the help already tells its default
    in words (one worked out at run time: from the environment, the rules)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS, []):
            return text
        if not action.option_strings:
            return text
        return text + " (default: %(default)s)"


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], name: str, summary: str
) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=summary, formatter_class=_Help)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goproxy-router",
        description="A GOPROXY gateway in front of several module proxies.",
        formatter_class=_Help,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(_command(sub, "serve", "run the gateway"))

    validate = _command(sub, "validate", "check rule files; exit 1 on any error")
    validate.add_argument("paths", type=Path, nargs="+", help="rule files or folders")

    token = _command(sub, "hash-token", "print the sha256: line for a tenant token")
    token.add_argument("token", nargs="?", help="the token (read from stdin when absent)")

    _command(sub, "schema", "print the JSON Schema of the rules")
    _cost_parsers(_command(sub, "cost", "override upstream bandwidth costs for every replica"))

    purge = _command(
        sub, "purge", "drop cached list/@latest/not-found answers of a module on every replica"
    )
    purge.add_argument("target", metavar="MODULE[@VERSION]")
    purge.add_argument("--rules", type=Path, default=DEFAULT_RULES, help=RULES_HELP)
    purge.add_argument("--redis", help=REDIS_HELP)
    purge.add_argument("--gateway", help=GATEWAY_HELP + " (default: none)")

    rollout = _command(sub, "rollout", "mirror rollouts (A/B checks of new upstreams)")
    rollout_sub = rollout.add_subparsers(dest="rollout_command", required=True)
    reset = _command(rollout_sub, "reset", "put a rolled-back candidate NAME back")
    reset.add_argument("name", help="the rollout's candidate upstream")
    reset.add_argument("--rules", type=Path, default=DEFAULT_RULES, help=RULES_HELP)
    reset.add_argument(
        "--redis",
        help="redis URL shared by the replicas (default: env "
        "ROUTER_REDIS_URL, else the rules' redis, else ask the gateway)",
    )
    reset.add_argument(
        "--gateway", help=GATEWAY_HELP + " (default: this host's, from the rules' listen)"
    )
    _explain_parser(_command(sub, "explain", "print the decision for a request, as JSON"))
    _job_parsers(_command(sub, "job", "L3 job views of CI jobs, asked of a running gateway"))
    _audit_parser(
        _command(
            sub,
            "audit",
            "check a go.sum, go.mod or `go list -m all` output against a tenant's policy; "
            "exit 1 when anything is refused",
        )
    )
    storecli.add_parsers(sub, _command, DEFAULT_RULES, RULES_HELP)
    return parser


def _audit_parser(audit: argparse.ArgumentParser) -> None:
    audit.add_argument(
        "inputs",
        nargs="+",
        metavar="go.sum|go.mod|-",
        help="files to read; - reads stdin (e.g. `go list -m all | goproxy-router audit -`)",
    )
    audit.add_argument("--rules", type=Path, default=DEFAULT_RULES, help=RULES_HELP)
    audit.add_argument("--tenant", help="whose policy applies (default: anonymous requests)")
    audit.add_argument(
        "--token",
        default=os.environ.get("ROUTER_AUDIT_TOKEN"),
        help="the tenant's token for --gateway (default: env ROUTER_AUDIT_TOKEN, else none)",
    )
    audit.add_argument(
        "--gateway",
        help="fetch .info and .zip through this gateway, e.g. https://goproxy.example.com "
        "(default: the upstreams the rules route each module to)",
    )
    audit.add_argument("--json", action="store_true", help="print JSON instead of a table")
    audit.add_argument("--jobs", type=int, default=8, help="module versions checked at once")


def _serve_parser(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--rules", type=Path, default=DEFAULT_RULES, help=RULES_HELP)
    serve.add_argument(
        "--listen", help=f"HOST:PORT (default: the rules' listen, else {DEFAULT_LISTEN})"
    )
    serve.add_argument(
        "--redis",
        help="redis URL shared by replicas (default: env ROUTER_REDIS_URL, else the rules' "
        "redis, else none: each process keeps its own state)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("ROUTER_WORKERS", "1") or 1),
        help="processes sharing the port (default: env ROUTER_WORKERS, else 1)",
    )
    serve.add_argument(
        "--tls-cert", help="PEM certificate: serve HTTPS (default: the rules' tls.cert, else HTTP)"
    )
    serve.add_argument(
        "--tls-key", help="PEM private key for --tls-cert (default: the rules' tls.key)"
    )
    serve.add_argument(
        "--log-level",
        default=os.environ.get("ROUTER_LOG_LEVEL"),
        help="debug, info, warning or error "
        "(default: env ROUTER_LOG_LEVEL, else the rules' logging.level, else info)",
    )


def _cost_parsers(cost: argparse.ArgumentParser) -> None:
    cost_sub = cost.add_subparsers(dest="cost_command", required=True)
    cost_set = _command(cost_sub, "set", "set NAME's cost in USD per GB")
    cost_set.add_argument("name")
    cost_set.add_argument("usd_per_gb", type=float)
    cost_list = _command(cost_sub, "list", "list costs (rules and overrides)")
    cost_clear = _command(cost_sub, "clear", "drop NAME's override (back to the rules)")
    cost_clear.add_argument("name")
    for p in (cost_set, cost_list, cost_clear):
        p.add_argument("--rules", type=Path, default=DEFAULT_RULES, help=RULES_HELP)
        p.add_argument("--redis", help=REDIS_HELP)


def _job_parsers(job: argparse.ArgumentParser) -> None:
    job_sub = job.add_subparsers(dest="job_command", required=True)
    show = _command(job_sub, "show", "print a job's view: its pinned answers, as JSON")
    drop = _command(job_sub, "drop", "forget a job's view; its next requests pin afresh")
    for p in (show, drop):
        p.add_argument("id", help="the job id (X-CI-Job-ID, or ID of GOPROXY=.../job/ID)")
        p.add_argument("--tenant", help="the job's tenant (default: anonymous)")
        p.add_argument("--rules", type=Path, default=DEFAULT_RULES, help=RULES_HELP)
        p.add_argument(
            "--gateway",
            help=GATEWAY_HELP + "; with Redis any replica answers for all "
            "(default: this host's, from the rules' listen)",
        )


def cmd_job(args: argparse.Namespace) -> int:
    rules = load_rules([args.rules]).rules if args.rules.exists() else None
    gateway = args.gateway or _local_gateway(rules)
    query = {"job": args.id, **({"tenant": args.tenant} if args.tenant else {})}
    if args.job_command == "show":
        return post_admin(gateway, "/debug/jobs", query, "job", method="GET")
    return post_admin(gateway, "/debug/jobs/drop", query, "job")


def _explain_parser(exp: argparse.ArgumentParser) -> None:
    exp.add_argument(
        "target",
        metavar="MODULE[@VERSION]",
        help="a module, or a request target as a client sends it (/sumdb/NAME/lookup/M@V, "
        "/M/@v/V.info ...)",
    )
    exp.add_argument("--rules", type=Path, default=DEFAULT_RULES, help=RULES_HELP)
    exp.add_argument(
        "--gateway",
        help="ask this running gateway (admin; Bearer ROUTER_ADMIN_TOKEN): its plan against "
        "its live RTT, health, heat and rollouts (default: a fresh state, from the rules)",
    )
    exp.add_argument(
        "--tenant", help="tenant id (X-Tenant-ID, or Basic user with --token) (default: anonymous)"
    )
    exp.add_argument(
        "--token", help="credential (Basic password with --tenant, else Bearer) (default: none)"
    )
    exp.add_argument(
        "--go-version",
        help="the X-Go-Version header, e.g. go1.20.3 (default: the X-Go-Version --header, "
        "else none)",
    )
    exp.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="K=V",
        help="a request header, repeatable (default: none)",
    )
    exp.add_argument(
        "--kind",
        choices=("info", "mod", "zip", "list", "latest"),
        help="the file asked for (default: zip with @VERSION, else list)",
    )
    exp.add_argument("--peer", help="client address, for trusted_proxies (default: none)")


def cmd_validate(paths: Sequence[Path]) -> int:
    result = load_rules(list(paths))
    for problem in result.problems:
        print(problem, file=sys.stdout if problem.warning else sys.stderr)
    if result.rules is None:
        return 1
    print(f"ok: {len(result.rules.sources)} file(s), {len(result.rules.upstreams)} upstream(s)")
    return 0


def cmd_hash_token(token: str | None) -> int:
    if token is None:
        token = sys.stdin.readline().rstrip("\r\n")
    if not token:
        print("hash-token: empty token", file=sys.stderr)
        return 1
    print("sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest())
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from router.explain import Question, explain

    rules = rules_or_report(args.rules)
    if rules is None:
        return 1
    headers: dict[str, str] = {}
    for item in args.header:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"explain: --header wants K=V, got {item!r}", file=sys.stderr)
            return 2
        headers[key] = value
    module, _, version = (
        (args.target, "", "") if args.target.startswith("/") else args.target.partition("@")
    )
    question = Question(
        module=module,
        version=version or None,
        kind=args.kind,
        tenant=args.tenant,
        token=args.token,
        go_version=args.go_version or headers.get("X-Go-Version"),
        headers=headers,
        peer=args.peer,
    )
    if args.gateway:
        from router.explain import question_doc

        body = json.dumps(question_doc(question)).encode()
        return post_admin(args.gateway, "/debug/explain", {}, "explain", body=body)
    print(json.dumps(explain(rules, question), indent=2))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    import asyncio

    from router.audit import Options, read_input, report, run_audit
    from router.core.requirements import requirements_of

    rules = rules_or_report(args.rules)
    if rules is None:
        return 1
    if args.tenant is not None and args.tenant not in {t.id for t in rules.tenants}:
        print(f"audit: no tenant {args.tenant!r} in {args.rules}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print("audit: --jobs must be at least 1", file=sys.stderr)
        return 2
    try:
        texts = [(name, read_input(name, sys.stdin)) for name in args.inputs]
    except (OSError, UnicodeDecodeError) as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2
    reqs = requirements_of(texts)
    if not reqs:
        print(f"audit: no module versions in {', '.join(args.inputs)}", file=sys.stderr)
        return 2
    opts = Options(
        tenant=args.tenant,
        token=args.token,
        gateway=args.gateway,
        as_json=args.json,
        jobs=args.jobs,
    )
    rows = asyncio.run(run_audit(rules, reqs, opts))
    return report(rows, opts, sys.stdout)


def cmd_cost(args: argparse.Namespace) -> int:
    import asyncio

    from redis.exceptions import RedisError

    from router.fleet import keys
    from router.fleet.client import connect
    from router.fleet.selection import get_costs, set_cost

    rules = rules_or_report(args.rules)
    if rules is None:
        return 1
    url = args.redis or os.environ.get("ROUTER_REDIS_URL") or rules.redis
    if not url:
        print(
            "cost: needs Redis (--redis, ROUTER_REDIS_URL or redis: in the rules); "
            "without it each gateway keeps its own state and costs come from the rules",
            file=sys.stderr,
        )
        return 2
    names = [u.name for u in rules.upstreams]
    name = getattr(args, "name", None)
    if name is not None and name not in names:
        print(f"cost: unknown upstream {name!r} (known: {', '.join(names)})", file=sys.stderr)
        return 1
    if args.cost_command == "set" and not args.usd_per_gb >= 0:
        print("cost: USD_PER_GB must be a number >= 0", file=sys.stderr)
        return 1

    async def run() -> list[str]:
        """The lines to print (printed after Redis is done with, so that a closed
        output is never taken for Redis being unreachable)."""
        client = connect(url)
        try:
            if args.cost_command == "set":
                await set_cost(client, name or "", args.usd_per_gb)
                return [f"{name}: {args.usd_per_gb:g} USD/GB (every replica within 2 s)"]
            if args.cost_command == "clear":
                await client.hdel(keys.COST, name)
                return [f"{name}: back to the rules' cost"]
            overrides = await get_costs(client)
            lines = []
            for up in rules.upstreams:
                override = overrides.get(up.name)
                shown = (
                    f"{override:g} (override; rules: {up.cost_per_gb:g})"
                    if override is not None
                    else f"{up.cost_per_gb:g} (rules)"
                )
                lines.append(f"{up.name}\t{shown}")
            return lines
        finally:
            await client.aclose()

    try:
        lines = asyncio.run(run())
    except (RedisError, OSError) as exc:
        print(f"cost: cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    import asyncio

    from redis.exceptions import RedisError

    from router.core.errors import ModuleError
    from router.core.modpath import check_path
    from router.fleet.client import connect
    from router.fleet.purge import purge

    module = args.target.partition("@")[0]
    try:
        check_path(module)
    except ModuleError as exc:
        print(f"purge: {exc}", file=sys.stderr)
        return 1
    url = args.redis or os.environ.get("ROUTER_REDIS_URL")
    if not url and not args.gateway:
        result = load_rules([args.rules]) if args.rules.exists() else None
        url = result.rules.redis if result is not None and result.rules is not None else None
    if url:

        async def run() -> int:
            client = connect(url)
            try:
                return await purge(client, module)
            finally:
                await client.aclose()

        try:
            told = asyncio.run(run())
        except (RedisError, OSError) as exc:
            print(f"purge: cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"purged {module}: shared entries dropped, {told} replica(s) told")
        return 0
    if not args.gateway:
        print(
            "purge: needs --redis (every replica) or --gateway URL (one gateway)", file=sys.stderr
        )
        return 2
    return post_admin(args.gateway, "/debug/purge", {"module": module}, "purge")


def _local_gateway(rules: Rules | None) -> str:
    """This host's gateway, from the rules' listen address (the default one otherwise)."""
    listen = (rules.listen if rules is not None else None) or DEFAULT_LISTEN
    port = listen.rpartition(":")[2]
    scheme = "https" if rules is not None and rules.tls is not None and rules.tls.cert else "http"
    return f"{scheme}://127.0.0.1:{port}"


def cmd_rollout_reset(args: argparse.Namespace) -> int:
    import asyncio

    from redis.exceptions import RedisError

    from router.fleet.client import connect
    from router.fleet.rollouts import publish_reset

    rules = load_rules([args.rules]).rules if args.rules.exists() else None
    if rules is not None and not args.gateway:
        known = [r.upstream for r in rules.rollouts]
        if args.name not in known:
            shown = ", ".join(known) or "none"
            print(f"rollout: no rollout for {args.name!r} (known: {shown})", file=sys.stderr)
            return 1
    url = args.redis or os.environ.get("ROUTER_REDIS_URL")
    if not url and not args.gateway and rules is not None:
        url = rules.redis
    if args.gateway or not url:
        gateway = args.gateway or _local_gateway(rules)
        if not args.gateway:
            print(f"rollout: no Redis; asking the gateway at {gateway} (--gateway to choose)")
        query = {"upstream": args.name}
        return post_admin(gateway, "/debug/rollouts/reset", query, "rollout")
    redis_url: str = url

    async def run() -> None:
        client = connect(redis_url)
        try:
            await publish_reset(client, args.name)
        finally:
            await client.aclose()

    try:
        asyncio.run(run())
    except (RedisError, OSError) as exc:
        print(f"rollout: cannot reach Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: reset; every replica compares it again within 1 s")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers share their metrics through files; this must be set before
        # prometheus_client is first imported.
        import tempfile

        metrics_dir = tempfile.mkdtemp(prefix="goproxy-router-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        try:
            return _serve(args)
        finally:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    from router.logs import setup_logging
    from router.serve import ServeOptions, run

    result = load_rules([args.rules])
    level = args.log_level or (result.rules.logging.level if result.rules else "info")
    setup_logging(level)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    if result.rules is None:
        print("serve: the rules are not valid; nothing started", file=sys.stderr)
        return 1
    rules = result.rules
    tls_cert = args.tls_cert or (rules.tls.cert if rules.tls else None)
    tls_key = args.tls_key or (rules.tls.key if rules.tls else None)
    if bool(tls_cert) != bool(tls_key):
        print("serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    options = ServeOptions(
        rules_paths=(args.rules,),
        listen=args.listen or rules.listen or DEFAULT_LISTEN,
        tls_cert=tls_cert,
        tls_key=tls_key,
        redis=args.redis or os.environ.get("ROUTER_REDIS_URL") or rules.redis,
        workers=args.workers,
    )
    return run(rules, options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. When whoever reads the output stops early (`| head -1`), stop
    quietly: no traceback, nothing more written, the exit code a shell gives a
    command ended by SIGPIPE."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not in Python's exit flush
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush finds nothing to fail on."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (tests capturing it)
        pass


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            return cmd_validate(args.paths)
        if args.command == "hash-token":
            return cmd_hash_token(args.token)
        if args.command == "schema":
            print(json.dumps(json_schema(), indent=2))
            return 0
        if args.command == "serve":
            return cmd_serve(args)
        if args.command == "explain":
            return cmd_explain(args)
        if args.command == "audit":
            return cmd_audit(args)
        if args.command == "cost":
            return cmd_cost(args)
        if args.command == "purge":
            return cmd_purge(args)
        if args.command == "rollout":
            return cmd_rollout_reset(args)
        if args.command == "job":
            return cmd_job(args)
        if args.command in storecli.COMMANDS:
            return storecli.run(args)
    except KeyboardInterrupt:
        return 130
    return 2
