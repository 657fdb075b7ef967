"""Episodes: create (one or a group), step, fork, view, delete."""

from __future__ import annotations

from enum import Enum

from fastapi import APIRouter, Request, Response, status

from attune_client.wire import (
    CreateEpisodeRequest,
    CreateEpisodeResponse,
    EpisodeInternals,
    EpisodeView,
    ErrorBody,
    ForkRequest,
    ForkResponse,
    StepRequest,
    StepResponse,
)
from env_server.api.deps import CallerDep, OwnerDep, ServiceDep, get_owner, get_service
from env_server.errors import Forbidden

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
async def step_episode(episode_id: str, body: StepRequest, request: Request) -> StepResponse:
    # The hot path reads service and owner straight from the request: FastAPI solves each declared dependency
    # anew per request, at a CPU cost comparable to a whole heuristic step.
    service, owner = await get_service(request), await get_owner(request)
    return await service.step(episode_id, body, owner)


@router.post(
    "/{episode_id}/fork",
    summary="Copy an episode's current state n times (no model call): branch a GRPO group",
    status_code=status.HTTP_201_CREATED,
    response_model=ForkResponse,
    responses=_ERRORS,
)
async def fork_episode(
    episode_id: str, service: ServiceDep, owner: OwnerDep, body: ForkRequest | None = None
) -> ForkResponse:
    return ForkResponse(episode_ids=await service.fork(episode_id, (body or ForkRequest()).n, owner))


class View(str, Enum):
    public = "public"
    internals = "internals"


@router.get(
    "/{episode_id}",
    summary="Public transcript and emotion trajectory; ?view=internals (admin key) adds the hidden state",
    response_model=EpisodeInternals | EpisodeView,
    responses={**_ERRORS, 403: {"model": ErrorBody}},
)
async def get_episode(
    episode_id: str, service: ServiceDep, owner: OwnerDep, caller: CallerDep, view: View = View.public
) -> EpisodeView:
    if view is View.internals:
        if not caller.admin:
            raise Forbidden("view=internals needs an admin key")
        return await service.internals(episode_id)
    return await service.view(episode_id, owner)


@router.delete("/{episode_id}", summary="Forget an episode", status_code=status.HTTP_204_NO_CONTENT, responses=_ERRORS)
async def delete_episode(episode_id: str, service: ServiceDep, owner: OwnerDep) -> Response:
    await service.delete(episode_id, owner)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
