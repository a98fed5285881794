"""L2 admission on the request path: whether one answer goes to the artifact store or
the shared Redis tier, counted by `goproxy_router_cache_admission_total`.

The decision is `router.core.admission`'s, made once per request in its plan and
carried in the cache `Job`; this only reads it.
"""

from __future__ import annotations

from typing import Literal

from router.core.admission import Admission
from router.observability import Metrics

Tier = Literal["disk", "redis"]


def keeps(metrics: Metrics, admission: Admission, tier: Tier) -> bool:
    """Whether an answer covered by `admission` may be kept in `tier` (counted when
    admission applies to it: one version's .info, .mod or .zip)."""
    if admission.applies:
        result = "admitted" if admission.admitted else "not_admitted"
        metrics.cache_admission.labels(tier, result, admission.reason).inc()
    return admission.admitted
