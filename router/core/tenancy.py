"""Who is asking, and what they may see. Pure: headers and rules in, a verdict out.

Identity comes, in this order, from a verified client certificate, an
`Authorization: Basic` credential (user = tenant id, password = token, what
the go command sends from .netrc), an `Authorization: Bearer` token, then the
`X-Tenant-ID` header. Tokens are kept only as sha256 digests and compared in
constant time against every digest, so timing says nothing about which
tenant or token came close.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from router.core.model import Rules, Tenant
from router.core.modpath import match_prefix_patterns

REALM = "goproxy-router"


@dataclass(frozen=True, slots=True)
class Identity:
    """The tenant a request acts for (`None`: anonymous) and how it was established."""

    tenant: Tenant | None
    method: str  # "cert", "basic", "bearer", "header", "trusted-header", "anonymous"

    @property
    def tenant_id(self) -> str | None:
        return self.tenant.id if self.tenant else None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request that may not proceed: 401 (who are you?) or 403 (not you / not this)."""

    status: int
    reason: str
    challenge: bool = False  # send WWW-Authenticate


def token_digest(token: str) -> str:
    """The `sha256:` form a token is stored in."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class TenantIndex:
    """Tenants by id, certificate name and token digest, plus the trusted proxy networks."""

    by_id: Mapping[str, Tenant]
    tokens: tuple[tuple[str, str], ...]  # (digest, tenant id), every tenant's every token
    by_cert: Mapping[str, Tenant]
    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    anonymous: bool
    private_patterns: tuple[tuple[str, str], ...] = field(default=())  # (tenant id, pattern)

    @classmethod
    def build(cls, rules: Rules) -> TenantIndex:
        return cls(
            by_id={t.id: t for t in rules.tenants},
            tokens=tuple((d, t.id) for t in rules.tenants for d in t.tokens),
            by_cert={name: t for t in rules.tenants for name in t.client_certs},
            trusted=tuple(ipaddress.ip_network(c, strict=False) for c in rules.trusted_proxies),
            anonymous=rules.default.anonymous,
            private_patterns=tuple((t.id, p) for t in rules.tenants for p in t.private),
        )

    def tenant_for_token(self, token: str) -> str | None:
        """The tenant owning `token`; every stored digest is compared, in constant time."""
        digest = token_digest(token).encode()
        found: str | None = None
        for stored, tenant_id in self.tokens:
            if hmac.compare_digest(stored.encode(), digest):
                found = tenant_id
        return found

    def is_trusted(self, peer: str | None) -> bool:
        if not peer or not self.trusted:
            return False
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)


def _credentials(header: str) -> tuple[str, str | None, str] | Refusal:
    """(scheme, user, secret) from an Authorization header, or a 401."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return "bearer", None, value
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return Refusal(401, "malformed Basic credentials", challenge=True)
        user, sep, password = decoded.partition(":")
        if not sep:
            return Refusal(401, "malformed Basic credentials", challenge=True)
        return "basic", user, password
    return Refusal(401, "unsupported Authorization scheme (use Basic or Bearer)", challenge=True)


def identify(
    index: TenantIndex,
    *,
    authorization: str | None,
    tenant_header: str | None,
    peer: str | None,
    cert_names: Iterable[str] = (),
) -> Identity | Refusal:
    """The requester's identity, or why it is refused. Never says which part was wrong
    beyond what the client already knows (no tenant enumeration)."""
    claimed = tenant_header.strip() if tenant_header else None
    for name in cert_names:
        tenant = index.by_cert.get(name)
        if tenant is not None:
            return _agree(Identity(tenant, "cert"), claimed)
    if authorization:
        creds = _credentials(authorization)
        if isinstance(creds, Refusal):
            return creds
        scheme, user, secret = creds
        owner = index.tenant_for_token(secret)
        if owner is None or (scheme == "basic" and user != owner):
            return Refusal(401, "invalid credentials", challenge=True)
        return _agree(Identity(index.by_id[owner], scheme), claimed)
    if claimed:
        tenant = index.by_id.get(claimed)
        if tenant is not None and index.is_trusted(peer):
            return Identity(tenant, "trusted-header")
        if tenant is not None and not tenant.tokens:
            return Identity(tenant, "header")
        return Refusal(401, f"tenant {claimed!r} needs credentials", challenge=True)
    if index.anonymous:
        return Identity(None, "anonymous")
    return Refusal(401, "credentials required", challenge=True)


def _agree(identity: Identity, claimed: str | None) -> Identity | Refusal:
    if claimed and claimed != identity.tenant_id:
        return Refusal(403, "X-Tenant-ID contradicts the credentials")
    return identity


@dataclass(frozen=True, slots=True)
class Visibility:
    """What a tenant may see of one module path."""

    allowed: bool
    reason: str = ""
    private: bool = False  # only non-public upstreams may be asked
    hidden: bool = False  # someone else's private module: answer as not found


def visibility(index: TenantIndex, identity: Identity, module: str | None) -> Visibility:
    """Apply deny, allow and private patterns to a module path (None: not module-specific)."""
    if module is None:
        return Visibility(True)
    tenant = identity.tenant
    if tenant is not None:
        for pattern in tenant.deny:
            if match_prefix_patterns(pattern, module):
                return Visibility(False, f"denied by tenant {tenant.id} deny rule {pattern!r}")
        if tenant.allow and not any(match_prefix_patterns(p, module) for p in tenant.allow):
            return Visibility(False, f"not in the allow list of tenant {tenant.id}")
    owners = {
        tid for tid, pattern in index.private_patterns if match_prefix_patterns(pattern, module)
    }
    if not owners:
        return Visibility(True)
    if tenant is not None and tenant.id in owners:
        return Visibility(True, private=True)
    return Visibility(True, private=True, hidden=True)
