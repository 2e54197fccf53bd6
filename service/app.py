"""The app factory. The lifespan opens Redis and the policy registry and closes them."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI

from eventlog.aio import RedisLog
from eventlog.sync import LogClient
from exporter.spec import PolicySpec, RewardConfig, resolve
from service import errors
from service.auth import Keyring
from service.cache import BriefCache, Clock
from service.decisions import Decider
from service.experiments import ExperimentRouter
from service.livewatch import LiveWatch
from service.metrics import Metrics
from service.middleware import BodyLimit, RequestMetrics
from service.modes import PolicyModes
from service.registry import PolicyRegistry
from service.rewards import Rewarder
from service.routes import act, experiments, health, offline, policies, rewards
from service.settings import Settings
from service.spool import Spool
from service.version import __version__

logger = logging.getLogger(__name__)

DEMO_POLICY: PolicySpec = resolve("demo", "linucb", 16, 10, {}, RewardConfig())
"""Created at start-up when BANDIT_DEMO_POLICY is true and no policy "demo" exists."""


def create_app(settings: Settings | None = None, clock: Clock = time.monotonic) -> FastAPI:
    """The app; ``clock`` times what replicas cache briefly (tests skip ahead on it)."""
    settings = settings or Settings()
    if settings.redis_url is None:
        raise ValueError("REDIS_URL is not set (banditd up starts an embedded Redis and sets it)")
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        log = RedisLog.from_url(settings.redis_url, settings.event_ttl_margin_seconds)  # type: ignore[arg-type]
        jobs_log = LogClient(settings.redis_url)  # type: ignore[arg-type]
        registry = PolicyRegistry(settings.store, log, on_swap=metrics.set_live)
        experiments = ExperimentRouter(log, BriefCache(clock=clock), BriefCache(clock=clock))
        spool = Spool(settings.spool_path, settings.spool_max_bytes)
        metrics.spool_bytes.set_function(lambda: spool.file.pending_bytes)
        modes = PolicyModes(log, BriefCache(clock=clock))
        decider = Decider(
            registry,
            log,
            metrics,
            settings.batch_max_size,
            settings.batch_max_wait_ms / 1000,
            experiments,
            spool,
            modes,
        )
        watch = LiveWatch(registry, log, settings.live_poll_seconds, metrics)
        # Read by service.deps only (and by tests).
        app.state.log, app.state.jobs_log, app.state.registry = log, jobs_log, registry
        app.state.decider, app.state.rewarder = decider, Rewarder(log, registry, metrics, spool)
        app.state.experiments, app.state.spool, app.state.modes = experiments, spool, modes
        try:
            await registry.start()
            if settings.demo_policy and DEMO_POLICY.name not in registry.loaded():
                await registry.create(DEMO_POLICY)
            spool.start()  # what an earlier process spooled goes to Redis first
            watch.start()
            logger.info("serving %d policies from %s", len(registry.loaded()), settings.store)
            yield
        finally:
            await watch.close()
            await decider.close()
            await spool.close()
            await log.close()
            jobs_log.close()

    app = FastAPI(
        title="banditd",
        version=__version__,
        description="Contextual-bandit decisions served from exported TensorFlow SavedModels.",
        lifespan=lifespan,
        # Metrics are our own (Prometheus); FastAPI's OpenTelemetry probe costs every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.keyring = Keyring(settings)
    app.state.metrics = metrics
    errors.install(app)
    for router in (act.router, rewards.router, policies.router, offline.router, experiments.router, health.router):
        app.include_router(router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
