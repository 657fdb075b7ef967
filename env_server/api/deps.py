"""Request dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from env_server.api.auth import ANONYMOUS, Caller
from env_server.runtime import Runtime
from env_server.service import EpisodeService

__all__ = ["CallerDep", "OwnerDep", "RuntimeDep", "ServiceDep"]


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_service(runtime: Annotated[Runtime, Depends(get_runtime)]) -> EpisodeService:
    return runtime.service


def get_caller(request: Request) -> Caller:
    """The authenticated caller (set by the API-key middleware)."""
    return getattr(request.state, "caller", ANONYMOUS)


def get_owner(caller: Annotated[Caller, Depends(get_caller)]) -> str | None:
    """Who owns the episodes this request touches: the API key's fingerprint, None when keys are off."""
    return caller.owner


CallerDep = Annotated[Caller, Depends(get_caller)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ServiceDep = Annotated[EpisodeService, Depends(get_service)]
OwnerDep = Annotated[str | None, Depends(get_owner)]
