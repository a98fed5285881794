"""The GOPROXY protocol: request paths in, validated requests out, upstream paths back.

`parse_request_target` turns the raw request target a client sent into a
`ModuleRequest` or `SumdbRequest`, or raises a `ProtocolError` carrying the
status to answer. Nothing the client sent is ever copied into an upstream
URL: `upstream_path` rebuilds the path from the parsed, validated values,
escaped the way the go command escapes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from router.core import modpath, versions
from router.core.errors import BadRequestError, ModuleError, ProtocolError


class Kind(StrEnum):
    """What a request asks for."""

    LIST = "list"
    INFO = "info"
    MOD = "mod"
    ZIP = "zip"
    LATEST = "latest"
    SUMDB = "sumdb"


# Largest answer accepted from an upstream, per kind. A .zip may be 500 MiB
# (Go's MaxZipFile); a go.mod 16 MiB (MaxGoMod); the rest is small JSON or text.
MAX_BYTES: dict[Kind, int] = {
    Kind.LIST: 16 << 20,
    Kind.INFO: 1 << 20,
    Kind.MOD: 16 << 20,
    Kind.ZIP: 500 << 20,
    Kind.LATEST: 1 << 20,
    Kind.SUMDB: 16 << 20,
}

_FILE_KINDS = {"info": Kind.INFO, "mod": Kind.MOD, "zip": Kind.ZIP}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
# A checksum DB is named like its key: a host, maybe a port, maybe a path
# (Go's own test DB is "localhost.localdev/sumdb").
SUMDB_NAME = r"[a-z0-9][a-z0-9.-]*(:[0-9]{1,5})?(/[a-z0-9][a-z0-9._~-]*)*"
_SUMDB_NAME = re.compile(SUMDB_NAME)
_SUMDB_ENDPOINTS = ("supported", "latest", "lookup/", "tile/")
_TILE = re.compile(r"tile/[0-9]+/(?:[0-9]+|data)/(?:x[0-9]{3}/)*[0-9]{3}(?:\.p/[0-9]+)?")
_LOOKUP_VERSION = re.compile(r"v[0-9]+\.[0-9]+\.[0-9]+(-[^@]*)?(\+incompatible)?")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-_.~$&+:=@/]*")
# Bytes Go's url.PathEscape leaves alone in a path segment (besides '/').
_GO_PATH_SAFE = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~$&+:=@"
)


@dataclass(frozen=True, slots=True)
class ModuleRequest:
    """A GOPROXY module request; `module` and `version` are real case, unescaped."""

    kind: Kind
    module: str
    version: str | None = None

    @property
    def immutable(self) -> bool:
        """True when a successful answer can never change (cacheable until evicted)."""
        if self.kind in (Kind.LIST, Kind.LATEST) or self.version is None:
            return False
        return versions.canonical(self.version) == _strip_incompatible(self.version) and (
            versions.is_valid(self.version)
        )

    def upstream_path(self) -> str:
        """The path (without base) to ask an upstream for, escaped like the go command."""
        escaped = case_escape(self.module)  # already validated: escaping cannot fail
        if self.kind is Kind.LIST:
            tail = f"{escaped}/@v/list"
        elif self.kind is Kind.LATEST:
            tail = f"{escaped}/@latest"
        else:
            assert self.version is not None
            tail = f"{escaped}/@v/{case_escape(self.version)}.{self.kind.value}"
        return go_path_escape(tail)


@dataclass(frozen=True, slots=True)
class SumdbRequest:
    """A checksum-database request passed through a proxy: /sumdb/NAME/REST."""

    db: str
    rest: str
    module: str | None = None
    version: str | None = None

    kind = Kind.SUMDB

    @property
    def is_supported_probe(self) -> bool:
        return self.rest == "supported"

    @property
    def immutable(self) -> bool:
        """Tiles never change (a partial tile of width W is the same W hashes for ever);
        lookups carry a tree head that moves on, and latest does."""
        return self.rest.startswith("tile/")

    def upstream_path(self) -> str:
        if self.module is not None and self.version is not None:
            target = f"{modpath.escape_path(self.module)}@{modpath.escape_version(self.version)}"
            return go_path_escape(f"sumdb/{self.db}/lookup/{target}")
        return go_path_escape(f"sumdb/{self.db}/{self.rest}")


Request = ModuleRequest | SumdbRequest


_UPPER = re.compile(r"[A-Z]")


def case_escape(text: str) -> str:
    """Go's case escaping (`X` -> `!x`) of a path or version already known to be valid."""
    return _UPPER.sub(lambda m: "!" + m.group(0).lower(), text)


def go_path_escape(path: str) -> str:
    """Percent-encode a path as Go's url.PathEscape does per segment, keeping '/'."""
    if _PLAIN_PATH.fullmatch(path):
        return path  # the common case: nothing to escape
    out: list[str] = []
    for byte in path.encode("utf-8"):
        if byte in _GO_PATH_SAFE or byte == 0x2F:
            out.append(chr(byte))
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def _strip_incompatible(version: str) -> str:
    return version.removesuffix("+incompatible")


def decode_target(raw: str) -> str:
    """The path of a raw request target, percent-decoded once, or BadRequestError.

    Refuses what could escape the protocol or mean something else to a server
    that decodes again: absolute-form targets, encoded slashes or backslashes,
    malformed escapes (`%zz`, a lone `%`), escapes left after one decoding
    (`%252e` is `%2e` once decoded: encoded twice), NUL and control characters,
    invalid UTF-8, and `.`/`..` segments in any encoding. The go command never
    sends any of these: it escapes with url.PathEscape, so a `%` of its own
    travels as `%25` and only forms an escape again if the revision it asks
    for holds `%` and two hex digits.
    """
    if not raw.startswith("/"):
        raise BadRequestError("request target must be a path (this is not an open proxy)")
    path = raw.split("?", 1)[0].split("#", 1)[0]
    if re.search(r"%(2[fF]|5[cC])", path):
        raise BadRequestError("encoded '/' or '\\' in the request path")
    if "%" in path and _PERCENT.sub("", path).count("%"):
        raise BadRequestError("malformed percent-encoding in the request path")
    try:
        raw_bytes = _PERCENT.sub(lambda mt: chr(int(mt.group(1), 16)), path).encode("latin-1")
        decoded = raw_bytes.decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise BadRequestError("request path is not valid UTF-8") from None
    if "%" in decoded and _PERCENT.search(decoded):
        raise BadRequestError(
            "percent-escape left after decoding the request path once (encoded twice)"
        )
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in decoded):
        raise BadRequestError("control character in the request path")
    if "\\" in decoded:
        raise BadRequestError("backslash in the request path")
    segments = decoded.split("/")[1:]
    if any(seg in (".", "..") for seg in segments):
        raise BadRequestError("'.' or '..' segment in the request path")
    if "//" in decoded:
        raise BadRequestError("empty segment in the request path")
    return decoded


def parse_request_target(raw: str) -> Request:
    """Parse a raw GOPROXY request target (as sent on the request line)."""
    path = decode_target(raw)
    if path.startswith("/sumdb/"):
        return _parse_sumdb(path[len("/sumdb/") :])
    return parse_module_path(path[1:])


def parse_module_path(path: str) -> ModuleRequest:
    """Parse `MODULE/@v/...` or `MODULE/@latest` (escaped, without the leading '/')."""
    if path.endswith("/@latest"):
        return ModuleRequest(Kind.LATEST, _module(path[: -len("/@latest")]))
    at = path.rfind("/@v/")
    if at < 0:
        raise ModuleError("not a GOPROXY path: expected MODULE/@v/... or MODULE/@latest")
    module = _module(path[:at])
    file = path[at + len("/@v/") :]
    if file == "list":
        return ModuleRequest(Kind.LIST, module)
    stem, dot, ext = file.rpartition(".")
    kind = _FILE_KINDS.get(ext)
    if not dot or kind is None or "/" in file:
        raise ModuleError(f"unknown GOPROXY file {file!r}: expected list, .info, .mod or .zip")
    version = _version(stem)
    _check_version_for(kind, module, version)
    return ModuleRequest(kind, module, version)


def _module(escaped: str) -> str:
    try:
        module = modpath.unescape_path(escaped)
        modpath.check_path(module)
    except ModuleError as exc:
        raise ModuleError(f"invalid module path: {exc}") from None
    return module


def _version(escaped: str) -> str:
    if not escaped:
        raise ModuleError("empty version")
    try:
        return modpath.unescape_version(escaped)
    except ModuleError as exc:
        raise ModuleError(f"invalid version: {exc}") from None


def _check_version_for(kind: Kind, module: str, version: str) -> None:
    """.mod/.zip need a canonical version of the right major; .info may be a query."""
    canonical = versions.is_valid(version) and versions.canonical(version) == _strip_incompatible(
        version
    )
    if kind is Kind.INFO and not canonical:
        return  # a query (branch, commit prefix, v1.2): the upstream resolves it
    if not canonical:
        raise ModuleError(
            f"invalid version {version!r}: .{kind.value} needs a canonical semantic version"
        )
    modpath.check(module, version)


def _split_sumdb(rest: str) -> tuple[str, str]:
    """NAME and the endpoint of `NAME/endpoint`; NAME may itself hold slashes, so the
    split is before the first segment that starts an endpoint."""
    start = 0
    while (slash := rest.find("/", start)) > 0:
        name, tail = rest[:slash], rest[slash + 1 :]
        if tail in ("supported", "latest") or tail.startswith(_SUMDB_ENDPOINTS[2:]):
            return name, tail
        start = slash + 1
    name, _, tail = rest.partition("/")
    return name, tail


def _parse_sumdb(rest: str) -> SumdbRequest:
    name, tail = _split_sumdb(rest)
    if not _SUMDB_NAME.fullmatch(name) or not tail:
        raise ModuleError("not a checksum-database path: expected /sumdb/NAME/...")
    if tail in ("supported", "latest"):
        return SumdbRequest(name, tail)
    if _TILE.fullmatch(tail):
        return SumdbRequest(name, tail)
    if tail.startswith("lookup/"):
        return _parse_lookup(name, tail[len("lookup/") :])
    raise ModuleError(f"unknown checksum-database path {tail!r}")


def _parse_lookup(name: str, target: str) -> SumdbRequest:
    escaped_module, at, escaped_version = target.rpartition("@")
    if not at:
        raise ProtocolError("invalid module@version syntax", status=400)
    module = _module(escaped_module)
    version = _version(escaped_version)
    if not _LOOKUP_VERSION.fullmatch(version) or "@" in version:
        raise ProtocolError("invalid module@version syntax", status=400)
    return SumdbRequest(name, f"lookup/{escaped_module}@{escaped_version}", module, version)
