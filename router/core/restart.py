"""Which settings a reload cannot change: they shape what the process built at start
(its socket, its storage, its exporter). Pure.

Everything else in the rules takes effect on reload: routes, tenants, upstreams,
pools, selection, limits, rollouts, checksum databases, policy, `cache.ttl`,
`cache.stale_if_error`, `cache.bad_zips`, `cache.admit`, `server.stall_timeout`,
`server.streams_per_client`, `logging.access`, `logging.sample` and `jobs`.
"""

from __future__ import annotations

from router.core.model import Rules

# (section, field) pairs; a field of None is the whole section
RESTART_ONLY: tuple[tuple[str, str | None], ...] = (
    ("listen", None),
    ("tls", None),
    ("redis", None),
    ("cache", "memory"),
    ("cache", "dir"),
    ("cache", "disk"),
    ("cache", "spool"),
    ("cache", "k"),
    ("cache", "decay"),
    ("cache", "crp"),
    ("cache", "bucket"),
    ("server", "header_timeout"),
    ("server", "max_header_bytes"),
    ("server", "max_connections"),
    ("server", "shutdown_timeout"),
    ("logging", "level"),  # `--log-level` may override it
    ("tracing", None),
)


def restart_only_changes(running: Rules, loaded: Rules) -> list[str]:
    """The dotted names of the settings that differ between the rules a process was
    started with and newly loaded ones, and that only a restart applies."""
    changed = []
    for section, name in RESTART_ONLY:
        old, new = getattr(running, section), getattr(loaded, section)
        if name is not None:
            old, new = getattr(old, name), getattr(new, name)
        if old != new:
            changed.append(section if name is None else f"{section}.{name}")
    return changed
