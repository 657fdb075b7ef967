"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from env_server.api.deps import RuntimeDep
from env_server.errors import BackendUnavailable

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The simulator is loaded and the store reachable", response_model=None)
async def readyz(runtime: RuntimeDep) -> dict[str, object] | JSONResponse:
    try:
        service = runtime.service
        if not await runtime.store.ping():
            raise BackendUnavailable("episode store is unreachable")
    except BackendUnavailable as error:
        return JSONResponse(error.body().model_dump(mode="json"), status_code=error.status_code)
    return {"status": "ready", "backend": service.simulator.name, "personas": len(runtime.catalog)}
