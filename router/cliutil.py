"""What the command line's subcommands share: the rules read or their problems printed,
and a call to a running gateway's admin endpoint."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from router.config import Rules, load_rules


def rules_or_report(path: Path) -> Rules | None:
    """The rules at `path`, or None after printing every problem as FILE:LINE."""
    result = load_rules([path])
    if result.rules is None:
        for problem in result.errors:
            print(problem, file=sys.stderr)
    return result.rules


def post_admin(
    gateway: str,
    path: str,
    query: dict[str, str],
    what: str,
    *,
    body: bytes | None = None,
    method: str = "POST",
) -> int:
    """POST (or `method`) to a gateway's admin endpoint (Bearer ROUTER_ADMIN_TOKEN when
    set); print its answer."""
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"{gateway.rstrip('/')}{path}?{urllib.parse.urlencode(query)}"
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    token = os.environ.get("ROUTER_ADMIN_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer = resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        print(f"{what}: {exc.code} {exc.read().decode().strip()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{what}: cannot reach {gateway}: {exc}", file=sys.stderr)
        return 1
    print(answer)  # outside the try: a closed output is not the gateway's fault
    return 0
