"""Loading rules: read files, merge a folder, check the schema, build the model, cross-check.

`load_rules` never raises for bad rules: it returns every problem it found,
each as FILE:LINE: message, so `validate` can report them all at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from router.config.names import declare
from router.config.schema import LIST_KEYS, MAP_KEYS, RULES, bucket_config
from router.config.semantic import cross_check
from router.config.source import LocatedDict, LocatedList, Problem, read_yaml
from router.config.spec import Checker, where_of
from router.core import model as m
from router.core import policy as pol
from router.core.admission import DEFAULT_RULE, AdmitRule
from router.core.model import Where


class RulesError(Exception):
    """Rules that cannot be used; `problems` says why, each with FILE:LINE."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(slots=True)
class LoadResult:
    rules: m.Rules | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.warning]


def rule_files(paths: Iterable[Path]) -> tuple[list[Path], list[Problem]]:
    """Expand folders into their *.yaml / *.yml files (not recursive), sorted by name."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
            )
            if not found:
                problems.append(Problem(str(path), 0, "folder holds no *.yaml or *.yml file"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            problems.append(Problem(str(path), 0, "no such file or folder"))
    return files, problems


def load_rules(paths: Sequence[Path]) -> LoadResult:
    """Load, merge and check rules from files and folders."""
    files, problems = rule_files(paths)
    checker = Checker(problems)
    read = _read_files(files, checker, complete=not problems)
    if not read.checked:
        if not checker.problems:
            checker.error(", ".join(str(p) for p in paths), 0, "no rules found")
        return LoadResult(None, _sorted(checker.problems))
    merged = _merge(read.checked, checker)
    try:
        rules = build_rules(merged, tuple(str(f) for f in files))
    except (KeyError, TypeError, ValueError):
        # Only reachable when the schema already reported why; those problems stand.
        return LoadResult(None, _sorted(checker.problems))
    cross_check(rules, declare(read.written, read.complete, checker), checker)
    if any(not p.warning for p in checker.problems):
        return LoadResult(None, _sorted(checker.problems))
    return LoadResult(rules, _sorted(checker.problems))


@dataclass(slots=True)
class _Read:
    written: list[LocatedDict] = field(default_factory=list)  # as written: the names defined
    checked: list[LocatedDict] = field(default_factory=list)  # through the schema
    complete: bool = True  # every file was read as a mapping, so every name is known


def _read_files(files: list[Path], ck: Checker, complete: bool) -> _Read:
    read = _Read(complete=complete)
    for path in files:
        raw, found = read_yaml(path)
        ck.problems.extend(found)
        if raw is None:
            read.complete = read.complete and not found
            if not found:
                ck.error(str(path), 1, "the file is empty")
            continue
        if isinstance(raw, LocatedDict):
            read.written.append(raw)
        else:
            read.complete = False
        top = raw.line if isinstance(raw, LocatedList) else 1
        # Read what is there even if `version` is wrong or missing: every problem at once.
        checked, _ = RULES.read(raw, Where(str(path), top), ck)
        if checked is not None:
            read.checked.append(checked)
    return read


def load_or_raise(paths: Sequence[Path]) -> m.Rules:
    result = load_rules(paths)
    if result.rules is None:
        raise RulesError(result.errors)
    return result.rules


def _sorted(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.file, p.line, p.warning))


def _merge(docs: list[LocatedDict], ck: Checker) -> dict[str, Any]:
    """One document from several: lists concatenated, pools merged, others defined once."""
    merged: dict[str, Any] = {}
    origin: dict[str, tuple[str, int]] = {}
    for doc in docs:
        for key, value in doc.items():
            if _is_default(doc, key):
                continue
            where = (doc.file, doc.line_of(key))
            if key in LIST_KEYS:
                merged.setdefault(key, []).extend(value)
            elif key in MAP_KEYS:
                target = merged.setdefault(key, {})
                for name, item in value.items():
                    if name in target:
                        first = target[name]
                        ck.error(
                            value.file,
                            value.line_of(name),
                            f"{key[:-1]} {name!r} is already defined at {first.file}:{first.line}",
                        )
                    else:
                        target[name] = item
            elif key == "version":
                merged.setdefault(key, value)
            elif key in origin:
                first_file, first_line = origin[key]
                ck.error(where[0], where[1], f"{key!r} is already set at {first_file}:{first_line}")
            else:
                merged[key] = value
                origin[key] = where
    for key, value in docs[0].items():
        merged.setdefault(key, value)
    return merged


def _is_default(doc: LocatedDict, key: str) -> bool:
    """True for a key the schema filled in: it was not written in this file."""
    return key not in doc.key_lines


def _bucket(raw: Any) -> m.Bucket | None:
    if not raw:
        return None
    rate = raw["rate"]
    burst = raw.get("burst") or max(1, math.ceil(rate.per_second))
    return m.Bucket(rate=rate, burst=int(burst))


def _where(raw: Any) -> Where:
    """Where an object was written, with the lines of its keys and items for later checks."""
    if isinstance(raw, LocatedDict):
        return where_of(raw)
    return Where(getattr(raw, "file", "<rules>"), getattr(raw, "line", 0))


def _upstream(raw: Any) -> m.Upstream:
    auth = raw.get("auth")
    tls = raw.get("tls")
    return m.Upstream(
        name=raw["name"],
        url=raw["url"],
        tier=raw["tier"],
        cost_per_gb=float(raw["cost_per_gb"]),
        sumdb=tuple(raw["sumdb"]),
        public=raw["public"],
        timeouts=m.Timeouts(**raw["timeouts"]),
        max_connections=raw["max_connections"],
        auth=m.UpstreamAuth(**auth) if auth is not None else None,
        tls=m.UpstreamTLS(**tls) if tls is not None else None,
        where=_where(raw),
    )


def _beside(raw: Any, path: str) -> str:
    """A relative path, taken relative to the folder of the rules file it is written in."""
    if Path(path).is_absolute() or not isinstance(raw, LocatedDict):
        return path
    return str(Path(raw.file).parent / path)


def _policy(raw: Any) -> pol.PolicyBlock | None:
    """A `policy:` block as written: absent keys inherit, `off` switches a gate off."""
    if raw is None:
        return None
    licenses = raw.get("licenses")
    vulns = raw.get("vulnerabilities")
    return pol.PolicyBlock(
        mode=raw.get("mode"),
        licenses=pol.OFF
        if licenses == "off"
        else pol.LicenceRule(
            allow=tuple(licenses.get("allow") or ()),
            deny=tuple(licenses.get("deny") or ()),
            unknown=licenses["unknown"],
        )
        if licenses is not None
        else None,
        min_age=raw.get("min_age"),
        vulnerabilities=pol.OFF
        if vulns == "off"
        else pol.VulnerabilityRule(db=_beside(raw, vulns["db"]), allow=tuple(vulns["allow"]))
        if vulns is not None
        else None,
    )


def _admit(raw: Any, origin: str) -> AdmitRule | None:
    """An `admit:` list (words and {regex: ...}) compiled, or None when not written."""
    if raw is None:
        return None
    words = [item for item in raw if isinstance(item, str)]
    regexes = [item["regex"] for item in raw if not isinstance(item, str)]
    return AdmitRule.of(words, regexes, origin)


def _tenant(raw: Any) -> m.Tenant:
    return m.Tenant(
        id=raw["id"],
        tokens=tuple(raw["tokens"]),
        pool=raw.get("pool"),
        private=tuple(raw["private"]),
        allow=tuple(raw["allow"]),
        deny=tuple(raw["deny"]),
        verify_checksums=raw["verify_checksums"],
        client_certs=tuple(raw["client_certs"]),
        limit=_bucket(raw.get("limit")),
        policy=_policy(raw.get("policy")),
        admit=_admit(raw.get("admit"), f"tenants[{raw['id']}].admit"),
        where=_where(raw),
    )


def _route(raw: Any) -> m.Route:
    match = raw["match"]
    headers = tuple(
        m.HeaderMatch(name=name, exact=value)
        if isinstance(value, str)
        else m.HeaderMatch(name=name, regex=value["regex"])
        for name, value in (match.get("header") or {}).items()
    )
    return m.Route(
        name=raw["name"],
        pool=raw["pool"],
        match=m.RouteMatch(
            tenant=tuple(match.get("tenant") or ()),
            go_version=match.get("go_version"),
            module=tuple(match.get("module") or ()),
            kind=tuple(match.get("kind") or ()),
            header=headers,
        ),
        prefer_fresh=raw["prefer_fresh"],
        verify_checksums=raw.get("verify_checksums"),
        policy=_policy(raw.get("policy")),
        offline=raw["offline"],
        where=_where(raw),
    )


def _limits(raw: Any) -> m.Limits | None:
    if raw is None:
        return None
    abuse = raw.get("abuse")
    return m.Limits(
        tenant=_bucket(raw.get("tenant")),
        anonymous=_bucket(raw.get("anonymous")),
        abuse=m.Abuse(
            pulls=abuse["pulls"],
            window=abuse["window"],
            by=tuple(abuse["by"]),
            action=abuse["action"],
            throttle=_bucket(abuse.get("throttle")),
            cooldown=abuse["cooldown"],
            exempt=tuple(abuse["exempt"]),
            where=_where(abuse),
        )
        if abuse is not None
        else None,
    )


def build_rules(doc: dict[str, Any], sources: tuple[str, ...]) -> m.Rules:
    """The typed rules from a checked, merged document."""
    selection = doc["selection"]
    cache = doc["cache"]
    tls = doc.get("tls")
    return m.Rules(
        upstreams=tuple(_upstream(u) for u in doc.get("upstreams", ())),
        pools=tuple(
            m.Pool(
                name=name,
                upstreams=tuple(p["upstreams"]),
                fallback=p["fallback"],
                mode=p.get("mode"),
                admit=_admit(p.get("admit"), f"pools.{name}.admit"),
                where=_where(p),
            )
            for name, p in doc.get("pools", {}).items()
        ),
        default=m.Default(
            pool=doc["default"].get("pool"),
            anonymous=doc["default"]["anonymous"],
            where=_where(doc["default"]),
        ),
        tenants=tuple(_tenant(t) for t in doc.get("tenants", ())),
        routes=tuple(_route(r) for r in doc.get("routes", ())),
        listen=doc.get("listen"),
        tls=m.ServerTLS(**tls) if tls is not None else None,
        trusted_proxies=tuple(doc.get("trusted_proxies", ())),
        redis=doc.get("redis"),
        selection=m.Selection(
            weights=m.Weights(**selection["weights"]),
            mode=selection["mode"],
            probe_interval=selection["probe_interval"],
            rtt_decay=selection["rtt_decay"],
            heat_window=selection["heat_window"],
            ejection=m.Ejection(**selection["ejection"]),
        ),
        cache=m.Cache(
            memory=cache["memory"],
            dir=cache["dir"],
            disk=cache["disk"],
            spool=cache["spool"],
            bad_zips=cache["bad_zips"],
            ttl=m.CacheTTL(**cache["ttl"]),
            stale_if_error=cache["stale_if_error"],
            decay=cache["decay"],
            k=cache["k"],
            crp=cache["crp"],
            admit=DEFAULT_RULE
            if _is_default(cache, "admit")
            else _admit(cache["admit"], "cache.admit") or DEFAULT_RULE,
            bucket=bucket_config(cache["bucket"]) if cache.get("bucket") else None,
        ),
        limits=_limits(doc.get("limits")),
        checksum_dbs=tuple(m.ChecksumDB(**c, where=_where(c)) for c in doc.get("checksum_dbs", ())),
        nosumdb=tuple(doc.get("nosumdb", ())),
        rollouts=tuple(m.Rollout(**r, where=_where(r)) for r in doc.get("rollouts", ())),
        admin=m.Admin(
            networks=tuple(doc["admin"]["networks"]), tokens=tuple(doc["admin"]["tokens"])
        ),
        server=m.Server(**doc["server"]),
        logging=m.Logging(**doc["logging"]),
        tracing=m.Tracing(**doc["tracing"]),
        jobs=m.Jobs(**doc["jobs"]),
        network=doc["network"],
        sources=sources,
    )
