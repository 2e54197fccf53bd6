"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from eventlog import LogUnavailable
from service.deps import LogDep, MetricsDep, RegistryDep, SpoolDep
from service.schemas.health import Health

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(log: LogDep, registry: RegistryDep, spool: SpoolDep) -> Response:
    """ready: Redis answers and every policy is loaded. degraded (still 200): Redis is away or
    catching up and decisions go to the local spool. unavailable (503): Redis is away and the
    spool is full. loading (503): a policy is not loaded yet."""
    spooling = {"spool_bytes": spool.file.pending_bytes, "spool_max_bytes": spool.file.max_bytes}
    try:
        await log.ping()
        names = await log.policy_names()
        missing = sorted(set(names) - set(registry.loaded()))
    except LogUnavailable as error:
        status = "unavailable" if spool.full else "degraded"
        body = Health(status=status, detail={"redis": error.message, **spooling})
        return JSONResponse(body.model_dump(), 503 if spool.full else 200)
    if missing:
        return JSONResponse(Health(status="loading", detail={"missing_policies": missing}).model_dump(), 503)
    if spool.active:
        detail = {"redis": "catching up: writing the spool to Redis", **spooling}
        return JSONResponse(Health(status="degraded", detail=detail).model_dump())
    return JSONResponse(Health(status="ready", detail={"policies": len(names)}).model_dump())


@router.get("/metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    """Prometheus text format."""
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
