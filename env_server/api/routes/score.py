"""Scoring: the sentient agent appraises a recorded dialogue's supporter turns; no episode is made."""

from __future__ import annotations

from fastapi import APIRouter

from attune_client.wire import ErrorBody, ScoreRequest, ScoreResponse
from env_server.api.deps import RuntimeDep
from env_server.scoring import find_persona, score_dialogue

router = APIRouter(prefix="/v1/score", tags=["scoring"])

_ERRORS = {code: {"model": ErrorBody} for code in (401, 404, 422, 503)}


@router.post(
    "",
    summary="Score a recorded dialogue: each supporter turn appraised with the recorded user turns kept",
    response_model=ScoreResponse,
    responses=_ERRORS,
)
async def score(body: ScoreRequest, runtime: RuntimeDep) -> ScoreResponse:
    persona = find_persona(runtime.catalog, body.persona_id)
    settings = runtime.settings
    return await score_dialogue(
        runtime.service.simulator,
        persona,
        body.messages,
        initial_emotion=body.initial_emotion,
        seed=body.seed,
        spec=settings.default_reward(),
        max_chars=settings.max_action_chars,
        timer=runtime.metrics.backend_seconds.labels("appraise"),
    )
