"""Request dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from env_server.runtime import Runtime
from env_server.service import EpisodeService

__all__ = ["OwnerDep", "RuntimeDep", "ServiceDep"]


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_service(runtime: Annotated[Runtime, Depends(get_runtime)]) -> EpisodeService:
    return runtime.service


def get_owner(request: Request) -> str | None:
    """Who owns the episodes this request touches: the API key's fingerprint, None when keys are off."""
    return getattr(request.state, "owner", None)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ServiceDep = Annotated[EpisodeService, Depends(get_service)]
OwnerDep = Annotated[str | None, Depends(get_owner)]
