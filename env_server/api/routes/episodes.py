"""Episodes: create, step, view, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from attune_client.wire import (
    CreateEpisodeRequest,
    CreateEpisodeResponse,
    EpisodeView,
    ErrorBody,
    StepRequest,
    StepResponse,
)
from env_server.api.deps import OwnerDep, ServiceDep

router = APIRouter(prefix="/v1/episodes", tags=["episodes"])

_ERRORS = {code: {"model": ErrorBody} for code in (401, 404, 409, 422, 503)}


@router.post(
    "",
    summary="Start an episode; the simulated person speaks first",
    status_code=status.HTTP_201_CREATED,
    response_model=CreateEpisodeResponse,
    responses=_ERRORS,
)
async def create_episode(
    service: ServiceDep, owner: OwnerDep, body: CreateEpisodeRequest | None = None
) -> CreateEpisodeResponse:
    return await service.create(body or CreateEpisodeRequest(), owner)


@router.post(
    "/{episode_id}/step",
    summary="Send the supporter's reply; get the person's answer and the reward",
    response_model=StepResponse,
    responses=_ERRORS,
)
async def step_episode(episode_id: str, body: StepRequest, service: ServiceDep, owner: OwnerDep) -> StepResponse:
    return await service.step(episode_id, body, owner)


@router.get(
    "/{episode_id}", summary="Public transcript and emotion trajectory", response_model=EpisodeView, responses=_ERRORS
)
async def get_episode(episode_id: str, service: ServiceDep, owner: OwnerDep) -> EpisodeView:
    return await service.view(episode_id, owner)


@router.delete("/{episode_id}", summary="Forget an episode", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def delete_episode(episode_id: str, service: ServiceDep, owner: OwnerDep) -> Response:
    await service.delete(episode_id, owner)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
