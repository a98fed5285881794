"""Which versions the shared tiers keep (L2 admission). Pure.

The seed's L1 -> L2 sync copies only release tags "so dev branches do not pollute L2".
Here every version is served; what a rule decides is whether the answers of one version
(`.info`, `.mod`, `.zip`) are kept in the artifact store (`cache.dir`) and the shared
Redis tier. The memory tier keeps what it always kept, admitted or not.

A rule is a list of words and regexes: `release` (`vMAJOR.MINOR.PATCH`, with or
without `+incompatible`), `prerelease` (`v1.3.0-rc.1`), `pseudo` (`v0.0.0-2024...-abc`,
`x/mod`'s `IsPseudoVersion`), and `{regex: ...}` searched in the version. A version is
admitted when its class is one of the words or a regex matches. The default is
`[release]`; an empty list admits nothing. `tenants[].admit` wins over
`pools.NAME.admit`, which wins over `cache.admit`: the first one written is used whole.

Answers that are not one version's (`@v/list`, `@latest`, the `.info` of a query such
as `master`, checksum-DB answers) are not subject to admission.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from router.core.protocol import ModuleRequest, SumdbRequest
from router.core.versions import is_pseudo_version, prerelease

VersionClass = Literal["release", "prerelease", "pseudo"]
WORDS: tuple[VersionClass, ...] = ("release", "prerelease", "pseudo")
# The `reason` label of the admission metric takes only these values.
REASONS = (*WORDS, "regex")


def version_class(version: str) -> VersionClass:
    """`pseudo` for a pseudo-version (it is a prerelease too), `prerelease` for any other
    version with a prerelease part, else `release` (build metadata such as
    `+incompatible` does not count)."""
    if is_pseudo_version(version):
        return "pseudo"
    if prerelease(version):
        return "prerelease"
    return "release"


@dataclass(frozen=True, slots=True)
class AdmitRule:
    """One `admit` list, compiled: the version classes and regexes it admits, and where
    it was written (`cache.admit`, `pools.NAME.admit`, `tenants[ID].admit`)."""

    words: tuple[VersionClass, ...]
    patterns: tuple[re.Pattern[str], ...] = ()
    origin: str = "cache.admit (default)"

    @classmethod
    def of(cls, words: Iterable[str], regexes: Iterable[str], origin: str) -> AdmitRule:
        """A rule from checked text (unknown words are refused: the loader checked them)."""
        kept = tuple(w for w in WORDS if w in set(words))
        unknown = set(words) - set(kept)
        if unknown:
            raise ValueError(f"unknown admit word(s): {', '.join(sorted(unknown))}")
        return cls(kept, tuple(re.compile(r) for r in regexes), origin)

    def admits(self, version: str) -> tuple[bool, VersionClass | Literal["regex"]]:
        """Whether `version` is kept, and why: its class when the class decides (admitted
        or not), `regex` when only a regex admits it."""
        cls = version_class(version)
        if cls in self.words:
            return True, cls
        if any(p.search(version) for p in self.patterns):
            return True, "regex"
        return False, cls

    def describe(self) -> list[str]:
        """The rule as written: words, then `regex:` patterns."""
        return [*self.words, *(f"regex:{p.pattern}" for p in self.patterns)]


@dataclass(frozen=True, slots=True)
class Admission:
    """The decision for one request: whether its answers may be kept in the shared tiers."""

    applies: bool  # False: not one version's answer (list, @latest, a query, sumdb)
    admitted: bool
    reason: str  # one of REASONS ("" when it does not apply): a bounded metric label
    rule: AdmitRule

    def as_dict(self) -> dict[str, object]:
        """What `explain` prints under `admission`."""
        if not self.applies:
            return {"applies": False, "why": self.why()}
        return {
            "applies": True,
            "admitted": self.admitted,
            "reason": self.reason,
            "rule": self.rule.describe(),
            "from": self.rule.origin,
            "why": self.why(),
        }

    def why(self) -> str:
        """One line for `explain`."""
        if not self.applies:
            return "not one version's answer: admission does not apply"
        rule = f"{self.rule.origin} [{', '.join(self.rule.describe())}]"
        if self.reason == "regex":
            return f"admitted by a regex of {rule}"
        named = _NAMED[self.reason]
        if not self.admitted:
            return f"{named}, not admitted by {rule}: served, kept in memory only"
        return f"{named}, admitted by {rule}"


_NAMED = {"release": "a release", "prerelease": "a prerelease", "pseudo": "a pseudo-version"}
DEFAULT_RULE = AdmitRule(("release",))
NOT_A_VERSION = Admission(False, True, "", DEFAULT_RULE)  # kept as before (list, @latest...)


def admit_rule(
    global_rule: AdmitRule, pool_rule: AdmitRule | None, tenant_rule: AdmitRule | None
) -> AdmitRule:
    """The rule in effect: the tenant's, else the pool's, else `cache.admit` (the first
    one written is used whole; lists are not merged)."""
    if tenant_rule is not None:
        return tenant_rule
    return pool_rule if pool_rule is not None else global_rule


def admit_request(rule: AdmitRule, request: ModuleRequest | SumdbRequest) -> Admission:
    """Whether the answers of `request` may be kept in the artifact store and Redis."""
    if not isinstance(request, ModuleRequest) or request.version is None:
        return NOT_A_VERSION
    if not request.immutable:  # a query (`master.info`) is not one version
        return NOT_A_VERSION
    admitted, reason = rule.admits(request.version)
    return Admission(True, admitted, reason, rule)
