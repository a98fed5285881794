"""Policy gates: which module versions a tenant may be served. Pure.

Three gates, each optional, written per tenant and per route (a route's keys
override the tenant's, key by key):

* licences: every licence found at the module root must be allowed (an
  allow-list, or a deny-list); none found, or one not recognised, is
  `unknown`, allowed or denied as the policy says;
* min_age: a version published less than `min_age` seconds ago is refused;
  one without a usable publication time is refused too (fail closed);
* vulnerabilities: a version inside an affected range of an advisory of an
  offline OSV database is refused, unless the advisory (or an alias) is
  accepted; a database that cannot be read refuses everything (fail closed).

In `warn` mode nothing is refused: the same verdict comes back as a warning,
for the gateway to serve with a header and count.

Everything here is a function of its arguments: the clock (`now`), the
detected licences and the advisories are inputs. The messages are one line,
the way the go command prints a proxy's answer after `server response:`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal, TypeVar

from router.core.versions import compare, is_pseudo_version, is_valid, prerelease, sort_versions

__all__ = [
    "AGE",
    "AGE_UNKNOWN",
    "LICENCE",
    "LICENCE_UNKNOWN",
    "OFF",
    "RULES",
    "VULNDB_UNAVAILABLE",
    "VULNERABILITY",
    "Advisory",
    "AgeRule",
    "DatabaseUnavailable",
    "Event",
    "LatestChoice",
    "LicenceFile",
    "LicenceFindings",
    "LicenceRule",
    "ListFilter",
    "Mode",
    "Off",
    "Outcome",
    "Policy",
    "PolicyBlock",
    "Verdict",
    "VulnerabilityRule",
    "affected_range",
    "affects",
    "combine",
    "filter_list",
    "format_age",
    "judge_age",
    "judge_licence",
    "judge_version",
    "judge_vulnerabilities",
    "latest_candidates",
    "newest_allowed",
    "resolve",
    "versions_needing_time",
]

Mode = Literal["enforce", "warn"]

# The rule names a verdict carries: a small fixed set, fit for metric labels and logs.
LICENCE = "licence"
LICENCE_UNKNOWN = "licence_unknown"
AGE = "age"
AGE_UNKNOWN = "age_unknown"
VULNERABILITY = "vulnerability"
VULNDB_UNAVAILABLE = "vulndb_unavailable"
RULES = (LICENCE, LICENCE_UNKNOWN, AGE, AGE_UNKNOWN, VULNERABILITY, VULNDB_UNAVAILABLE)

_SHOWN_ADVISORIES = 3  # at most this many advisories named in one message


# ---------------------------------------------------------------------------
# The policy as written, and as it applies to a request
# ---------------------------------------------------------------------------


class Off(enum.Enum):
    """A gate switched off where it is written (`licenses: off` on a route)."""

    OFF = "off"


OFF = Off.OFF


@dataclass(frozen=True, slots=True)
class LicenceRule:
    """SPDX ids allowed (or denied), and what an unknown licence gets."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    unknown: Literal["allow", "deny"] = "deny"
    origin: str = ""  # whose policy this gate is: "tenant finance", "route vendored"


@dataclass(frozen=True, slots=True)
class AgeRule:
    """Versions younger than `seconds` are refused."""

    seconds: float
    origin: str = ""


@dataclass(frozen=True, slots=True)
class VulnerabilityRule:
    """An offline OSV database (`db`, a folder) and the advisory ids accepted anyway."""

    db: str
    allow: tuple[str, ...] = ()
    origin: str = ""


@dataclass(frozen=True, slots=True)
class PolicyBlock:
    """One `policy:` block as written. None: not written here (inherit); OFF: switched off."""

    mode: Mode | None = None
    licenses: LicenceRule | Off | None = None
    min_age: float | None = None  # 0 switches the cooldown off
    vulnerabilities: VulnerabilityRule | Off | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """The gates that apply to one request; each remembers whose policy it is."""

    owner: str
    mode: Mode = "enforce"
    licenses: LicenceRule | None = None
    min_age: AgeRule | None = None
    vulnerabilities: VulnerabilityRule | None = None

    @property
    def gates(self) -> tuple[str, ...]:
        """The names of the gates that are on, for display."""
        names = (
            ("licenses", self.licenses),
            ("min_age", self.min_age),
            ("vulnerabilities", self.vulnerabilities),
        )
        return tuple(name for name, gate in names if gate is not None)


_Gate = TypeVar("_Gate", LicenceRule, VulnerabilityRule)


def _pick(route: _Gate | Off | None, tenant: _Gate | Off | None) -> tuple[_Gate | None, bool]:
    """The gate that applies (None: none) and whether it came from the route."""
    if route is not None:
        return (None if isinstance(route, Off) else route), True
    return (None if isinstance(tenant, Off) else tenant), False


def resolve(
    tenant: str | None,
    tenant_block: PolicyBlock | None,
    route: str | None,
    route_block: PolicyBlock | None,
) -> Policy | None:
    """The policy for a request of `tenant` matched by `route`: the route's keys over the
    tenant's. None when no gate is on."""
    t = tenant_block or PolicyBlock()
    r = route_block or PolicyBlock()
    tenant_name = f"tenant {tenant}" if tenant else "anonymous requests"
    route_name = f"route {route}" if route else tenant_name

    def whose(from_route: bool) -> str:
        return route_name if from_route else tenant_name

    licenses, lic_route = _pick(r.licenses, t.licenses)
    vulns, vuln_route = _pick(r.vulnerabilities, t.vulnerabilities)
    age_seconds = r.min_age if r.min_age is not None else t.min_age
    age_route = r.min_age is not None
    policy = Policy(
        owner=route_name if route_block is not None else tenant_name,
        mode=r.mode or t.mode or "enforce",
        licenses=replace(licenses, origin=whose(lic_route)) if licenses else None,
        min_age=AgeRule(age_seconds, whose(age_route)) if age_seconds else None,
        vulnerabilities=replace(vulns, origin=whose(vuln_route)) if vulns else None,
    )
    return policy if policy.gates else None


# ---------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------


class Outcome(enum.Enum):
    ALLOW = "allow"
    WARN = "warn"  # refused by the rules, served anyway (mode: warn)
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a gate (or all of them) says of one module version.

    `rule` is one of RULES (empty when allowed); `reason` is the evidence, such as
    `licence GPL-3.0-only is not allowed`; `origin` names whose policy it is.
    """

    outcome: Outcome
    module: str
    version: str
    rule: str = ""
    reason: str = ""
    origin: str = ""

    @property
    def refused(self) -> bool:
        return self.outcome is Outcome.REFUSE

    @property
    def message(self) -> str:
        """One line: the 403 body when refused, the warning text when warned, else ""."""
        target = f"{self.module}@{self.version}"
        if self.outcome is Outcome.REFUSE:
            return f"{target}: refused by the policy of {self.origin}: {self.reason}"
        if self.outcome is Outcome.WARN:
            return (
                f"{target}: would be refused by the policy of {self.origin} (warn): {self.reason}"
            )
        return ""


def _allowed(module: str, version: str) -> Verdict:
    return Verdict(Outcome.ALLOW, module, version)


def _against(
    policy: Policy, module: str, version: str, rule: str, reason: str, origin: str
) -> Verdict:
    outcome = Outcome.WARN if policy.mode == "warn" else Outcome.REFUSE
    return Verdict(outcome, module, version, rule, reason, origin)


def combine(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The first refusal, else the first warning, else the first verdict (None if none)."""
    seen = list(verdicts)
    for outcome in (Outcome.REFUSE, Outcome.WARN):
        for verdict in seen:
            if verdict.outcome is outcome:
                return verdict
    return seen[0] if seen else None


# ---------------------------------------------------------------------------
# The cooldown
# ---------------------------------------------------------------------------


def format_age(seconds: float) -> str:
    """`7 days`, `36 hours`, `90 minutes`, `1 day`: the largest whole unit, else rounded down."""
    seconds = max(0.0, seconds)
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size and (seconds % size == 0 or seconds >= 2 * size):
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    count = int(seconds)
    return f"{count} second{'' if count == 1 else 's'}"


def _utc_text(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t.utcoffset() is not None else t.isoformat()


def judge_age(
    policy: Policy, module: str, version: str, info_time: datetime | None, now: datetime
) -> Verdict:
    """The cooldown: `info_time` (from `.info`, timezone-aware) at least `min_age` before
    `now`. No time, or one without a timezone, fails closed."""
    rule = policy.min_age
    if rule is None:
        return _allowed(module, version)
    wanted = format_age(rule.seconds)
    if info_time is None or info_time.utcoffset() is None:
        reason = (
            f"{version} has no usable publication time in its .info; "
            f"versions younger than {wanted} are refused"
        )
        return _against(policy, module, version, AGE_UNKNOWN, reason, rule.origin)
    age = (now - info_time).total_seconds()
    if age >= rule.seconds:
        return _allowed(module, version)
    shown = "published in the future" if age < 0 else f"{format_age(age)} old"
    reason = (
        f"{version} is {shown} (published {_utc_text(info_time)}); "
        f"versions younger than {wanted} are refused"
    )
    return _against(policy, module, version, AGE, reason, rule.origin)


# ---------------------------------------------------------------------------
# Vulnerabilities (OSV ranges on Go semver)
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One OSV range event. `version` as OSV writes it for Go: semver without the
    leading v (`1.2.4`, `2.0.0+incompatible`), or `0` for "from the start"."""

    kind: Literal["introduced", "fixed", "last_affected"]
    version: str


@dataclass(frozen=True, slots=True)
class Advisory:
    """One OSV entry as it concerns one module: its SEMVER ranges (each a tuple of
    events) and any explicitly listed affected versions."""

    id: str
    module: str
    ranges: tuple[tuple[Event, ...], ...] = ()
    versions: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    summary: str = ""


@dataclass(frozen=True, slots=True)
class DatabaseUnavailable:
    """The configured database could not be read: every version is refused."""

    db: str
    reason: str


def _semver(osv_version: str) -> str:
    """The Go form (`v1.2.4`) of an OSV version; "" for `0` or anything invalid."""
    if osv_version in ("", "0"):
        return ""
    text = osv_version if osv_version.startswith("v") else "v" + osv_version
    return text if is_valid(text) else ""


def _sorted_events(events: Sequence[Event]) -> list[tuple[str, Event]]:
    """Events in version order ("0" first; at one version, `introduced` first), each
    with its Go version. An `introduced` that is not valid semver counts as "0"; a
    `fixed` or `last_affected` that is not is dropped: both err towards affected."""
    keyed: list[tuple[str, Event]] = []
    for event in events:
        go = _semver(event.version)
        if event.kind == "introduced" or go:
            keyed.append((go, event))
    order = {"introduced": 0, "last_affected": 1, "fixed": 2}
    rank = {v: i for i, v in enumerate(sort_versions({go for go, _ in keyed if go}))}
    keyed.sort(key=lambda item: (rank.get(item[0], -1), order[item[1].kind]))
    return keyed


def affected_range(events: Sequence[Event], version: str) -> tuple[bool, str, str]:
    """Whether `version` (Go form, `v1.2.3`) lies in the range, and if so the version that
    fixes it ("" if none) and the last affected version ("" if not given)."""
    affected = False
    fixed = last = ""
    for go, event in _sorted_events(events):
        at_or_after = not go or compare(version, go) >= 0
        if event.kind == "introduced":
            if at_or_after:
                affected, fixed, last = True, "", ""
        elif event.kind == "fixed":
            if at_or_after:
                affected = False
            elif affected and not fixed:
                fixed = go
        elif event.kind == "last_affected":
            if compare(version, go) > 0:
                affected = False
            elif affected and not last:
                last = go
    return affected, (fixed if affected else ""), (last if affected else "")


def affects(advisory: Advisory, version: str) -> tuple[bool, str]:
    """Whether `advisory` affects `version`, and the evidence (`fixed in v1.2.4`)."""
    if any(_semver(v) and compare(_semver(v), version) == 0 for v in advisory.versions):
        return True, "no fixed version"
    for events in advisory.ranges:
        hit, fixed, last = affected_range(events, version)
        if hit:
            if fixed:
                return True, f"fixed in {fixed}"
            if last:
                return True, f"last affected {last}, no fixed version"
            return True, "no fixed version"
    return False, ""


def judge_vulnerabilities(
    policy: Policy,
    module: str,
    version: str,
    advisories: Sequence[Advisory] | DatabaseUnavailable,
) -> Verdict:
    """Refused when an advisory for `module` affects `version` and neither its id nor an
    alias is accepted; refused when the database is unavailable."""
    rule = policy.vulnerabilities
    if rule is None:
        return _allowed(module, version)
    if isinstance(advisories, DatabaseUnavailable):
        reason = (
            f"the vulnerability database {advisories.db} cannot be read ({advisories.reason}); "
            "versions are refused until it can"
        )
        return _against(policy, module, version, VULNDB_UNAVAILABLE, reason, rule.origin)
    accepted = set(rule.allow)
    found: list[str] = []
    for advisory in advisories:
        if advisory.module != module or accepted & {advisory.id, *advisory.aliases}:
            continue
        hit, evidence = affects(advisory, version)
        if hit:
            found.append(f"{advisory.id} affects {version}, {evidence}")
    if not found:
        return _allowed(module, version)
    reason = "; ".join(found[:_SHOWN_ADVISORIES])
    if len(found) > _SHOWN_ADVISORIES:
        reason += f"; and {len(found) - _SHOWN_ADVISORIES} more"
    return _against(policy, module, version, VULNERABILITY, reason, rule.origin)


def judge_version(
    policy: Policy,
    module: str,
    version: str,
    info_time: datetime | None,
    now: datetime,
    advisories: Sequence[Advisory] | DatabaseUnavailable,
) -> Verdict:
    """The cheap gates (vulnerabilities, then age) for `.info`, `.mod` and `.zip`."""
    verdict = combine(
        (
            judge_vulnerabilities(policy, module, version, advisories),
            judge_age(policy, module, version, info_time, now),
        )
    )
    assert verdict is not None
    return verdict


# ---------------------------------------------------------------------------
# Licences
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LicenceFile:
    """A licence file at the module root and the SPDX ids recognised in it (none: not
    recognised)."""

    path: str
    ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LicenceFindings:
    """What licence detection found in a module zip. `problem` is set when the zip could
    not be examined (too big, broken, timed out): the licence is then unknown."""

    files: tuple[LicenceFile, ...] = ()
    problem: str = ""

    @property
    def ids(self) -> tuple[str, ...]:
        """Every id found, sorted, once each."""
        return tuple(sorted({i for f in self.files for i in f.ids}))

    @property
    def unknown(self) -> str:
        """Why the licence counts as unknown ("" when every file was recognised)."""
        if self.problem:
            return f"licence not determined: {self.problem}"
        if not self.files:
            return "no licence file at the module root"
        unrecognised = [f.path for f in self.files if not f.ids]
        if unrecognised:
            return f"licence in {', '.join(unrecognised)} not recognised"
        return ""


def _refused_ids(rule: LicenceRule, ids: Iterable[str]) -> list[str]:
    if rule.allow:
        return [i for i in ids if i not in rule.allow]
    return [i for i in ids if i in rule.deny]


def judge_licence(policy: Policy, module: str, version: str, found: LicenceFindings) -> Verdict:
    """Every licence found at the root must be allowed (a module carrying MIT and
    GPL-3.0-only files needs both); unknown licences go by `unknown:`."""
    rule = policy.licenses
    if rule is None:
        return _allowed(module, version)
    bad = _refused_ids(rule, found.ids)
    if bad:
        noun = "licence" if len(bad) == 1 else "licences"
        verb = "is" if len(bad) == 1 else "are"
        reason = f"{noun} {', '.join(bad)} {verb} not allowed"
        return _against(policy, module, version, LICENCE, reason, rule.origin)
    unknown = found.unknown
    if unknown and rule.unknown == "deny":
        return _against(policy, module, version, LICENCE_UNKNOWN, unknown, rule.origin)
    return _allowed(module, version)


# ---------------------------------------------------------------------------
# @v/list and @latest
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListFilter:
    """`@v/list` after the policy: the versions kept (in the upstream's order) and the
    verdict for each version left out. Warned versions are kept, and listed in `warned`."""

    kept: tuple[str, ...]
    removed: tuple[Verdict, ...] = ()
    warned: tuple[Verdict, ...] = ()

    @property
    def body(self) -> bytes:
        return "".join(v + "\n" for v in self.kept).encode()


def _descending(versions: Iterable[str]) -> list[str]:
    return list(reversed(sort_versions(v for v in versions if is_valid(v))))


def versions_needing_time(
    policy: Policy, versions: Sequence[str], times: Mapping[str, datetime | None], now: datetime
) -> list[str]:
    """The versions whose `.info` time `filter_list` still needs, newest first.

    Fetch their times (in this order, as many as you like) and ask again until this is
    empty. Walking down from the newest version, the first one known to be old enough
    ends the walk: the versions below it are presumed older (tags are usually made in
    version order). A presumed-old version is still judged on its own time when its
    `.info`, `.mod` or `.zip` is asked for, so the presumption can list a version that
    then answers 403, never serve one that is too young.
    """
    if policy.min_age is None:
        return []
    wanted: list[str] = []
    for version in _descending(versions):
        if version not in times:
            wanted.append(version)
            continue
        if judge_age(policy, "", version, times[version], now).outcome is Outcome.ALLOW:
            break
    return wanted


def _presumed_old(
    policy: Policy, versions: Sequence[str], times: Mapping[str, datetime | None], now: datetime
) -> set[str]:
    """Versions below the newest one whose known time passes the cooldown."""
    out: set[str] = set()
    passed = False
    for version in _descending(versions):
        if passed:
            out.add(version)
        elif (
            version in times
            and judge_age(policy, "", version, times[version], now).outcome is Outcome.ALLOW
        ):
            passed = True
    return out


def filter_list(
    policy: Policy,
    module: str,
    versions: Sequence[str],
    times: Mapping[str, datetime | None],
    now: datetime,
    advisories: Sequence[Advisory] | DatabaseUnavailable,
) -> ListFilter:
    """The `@v/list` answer with the refused versions left out, so `go get -u` picks the
    newest allowed one. Lines that are not valid versions pass through untouched (the go
    command ignores them). A version without a known time is judged as one without a
    usable time, unless it is presumed old (see `versions_needing_time`)."""
    presumed = _presumed_old(policy, versions, times, now)
    kept: list[str] = []
    removed: list[Verdict] = []
    warned: list[Verdict] = []
    for version in versions:
        if not is_valid(version):
            kept.append(version)
            continue
        verdict = judge_vulnerabilities(policy, module, version, advisories)
        if verdict.outcome is Outcome.ALLOW and version not in presumed:
            verdict = judge_age(policy, module, version, times.get(version), now)
        if verdict.refused:
            removed.append(verdict)
            continue
        if verdict.outcome is Outcome.WARN:
            warned.append(verdict)
        kept.append(version)
    return ListFilter(tuple(kept), tuple(removed), tuple(warned))


def latest_candidates(versions: Iterable[str]) -> list[str]:
    """The order in which the go command prefers versions for `latest`: releases from the
    highest down, then prereleases from the highest down, then pseudo-versions."""
    ordered = _descending(set(versions))
    releases = [v for v in ordered if not prerelease(v)]
    pseudo = [v for v in ordered if is_pseudo_version(v)]
    pre = [v for v in ordered if prerelease(v) and not is_pseudo_version(v)]
    return releases + pre + pseudo


@dataclass(frozen=True, slots=True)
class LatestChoice:
    """What `@latest` answers: `version` (None: nothing allowed) and why the versions
    preferred over it were passed by. `first_refusal` is the body for a 403."""

    version: str | None
    passed_over: tuple[Verdict, ...] = field(default=())

    @property
    def first_refusal(self) -> Verdict | None:
        return self.passed_over[0] if self.passed_over else None


def newest_allowed(
    policy: Policy,
    module: str,
    versions: Iterable[str],
    times: Mapping[str, datetime | None],
    now: datetime,
    advisories: Sequence[Advisory] | DatabaseUnavailable,
) -> LatestChoice:
    """The version `@latest` should answer: the first of `latest_candidates(versions)`
    (include the upstream's own @latest version) that the cheap gates allow, judging
    each on its time in `times` (absent: no usable time)."""
    passed: list[Verdict] = []
    for version in latest_candidates(versions):
        verdict = judge_version(policy, module, version, times.get(version), now, advisories)
        if not verdict.refused:
            return LatestChoice(version, tuple(passed))
        passed.append(verdict)
    return LatestChoice(None, tuple(passed))
