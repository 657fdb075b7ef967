"""Request dependencies shared by the routers.

Each is an ``async def`` that reads the request itself: FastAPI runs a plain ``def`` dependency in a worker
thread, and solves every nested dependency anew per request; at a few hundred steps per second both cost
more CPU than the rest of a heuristic step.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from env_server.api.auth import ANONYMOUS, Caller
from env_server.runtime import Runtime
from env_server.service import EpisodeService

__all__ = ["CallerDep", "OwnerDep", "RuntimeDep", "ServiceDep"]


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_service(request: Request) -> EpisodeService:
    return (await get_runtime(request)).service


async def get_caller(request: Request) -> Caller:
    """The authenticated caller (set by the API-key middleware)."""
    return getattr(request.state, "caller", ANONYMOUS)


async def get_owner(request: Request) -> str | None:
    """Who owns the episodes this request touches: the API key's fingerprint, None when keys are off."""
    return (await get_caller(request)).owner


CallerDep = Annotated[Caller, Depends(get_caller)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ServiceDep = Annotated[EpisodeService, Depends(get_service)]
OwnerDep = Annotated[str | None, Depends(get_owner)]
