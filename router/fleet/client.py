"""Connecting to Redis: one standalone server, a Sentinel-managed master, or a Cluster."""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel


def connect(url: str, *, socket_timeout: float | None = 0.5) -> Any:
    """A redis-py asyncio client for a standalone, Sentinel or Cluster URL.

    `redis://`, `rediss://`, `unix://`: one server. `redis+cluster://host:port`:
    a cluster. `redis+sentinel://host:port[,host:port]/SERVICE[/DB]`: the
    master named SERVICE, found through the sentinels."""
    opts: dict[str, Any] = {"socket_timeout": socket_timeout, "socket_connect_timeout": 0.5}
    scheme = urlsplit(url).scheme
    if scheme in ("redis+cluster", "rediss+cluster"):
        return RedisCluster.from_url(url.replace("+cluster", "", 1), **opts)
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        parts = urlsplit(url)
        hosts = []
        for item in parts.netloc.rsplit("@", 1)[-1].split(","):
            host, _, port = item.rpartition(":")
            hosts.append((host or item, int(port) if port.isdigit() else 26379))
        path = [p for p in parts.path.split("/") if p]
        service = path[0] if path else "mymaster"
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = Sentinel(hosts, **opts)  # type: ignore[no-untyped-call]
        return sentinel.master_for(service, db=db, **opts)
    return aioredis.from_url(url, **opts)


def replica_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
