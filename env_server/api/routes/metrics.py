"""Prometheus exposition."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from env_server.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    try:
        active = await runtime.store.count()
    except Exception:  # an unreachable store must not hide the other metrics
        active = -1
    return Response(runtime.metrics.render(active), media_type=CONTENT_TYPE_LATEST)
