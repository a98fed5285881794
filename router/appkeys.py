"""The typed keys under which the application holds each service (built once by
`router.services.build`), `LIVE` among them: the only state that changes while it runs.

A handler or endpoint reads the services it needs, by key, and nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from router.checksums import ChecksumRegistry
    from router.fleet.selection import RedisSync
    from router.jobviews import JobViews
    from router.limiting import RequestLimits
    from router.logs import AccessLog
    from router.observability import Metrics
    from router.reload import Reloader
    from router.rollouts import Rollouts
    from router.runtime import Live
    from router.serving.cache import AnswerCache
    from router.state.local import SelectionState
    from router.tasks import TaskGroup
    from router.tracing import Tracer


LIVE: web.AppKey[Live] = web.AppKey("live")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
TASKS: web.AppKey[TaskGroup] = web.AppKey("tasks")
SELECTION: web.AppKey[SelectionState] = web.AppKey("selection")
LIMITS: web.AppKey[RequestLimits] = web.AppKey("limits")
ROLLOUTS: web.AppKey[Rollouts] = web.AppKey("rollouts")
CHECKSUMS: web.AppKey[ChecksumRegistry] = web.AppKey("checksums")
ANSWERS: web.AppKey[AnswerCache] = web.AppKey("answers")
JOBS: web.AppKey[JobViews] = web.AppKey("jobs")
TRACER: web.AppKey[Tracer] = web.AppKey("tracer")
ACCESS_LOG: web.AppKey[AccessLog] = web.AppKey("access_log")
REDIS_SYNC: web.AppKey[RedisSync | None] = web.AppKey("redis_sync")
RELOADER: web.AppKey[Reloader | None] = web.AppKey("reloader")
