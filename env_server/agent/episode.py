"""Episode state and the pure transition that one supporter turn applies to it.

An :class:`EpisodeRecord` is everything the server keeps about one dialogue, public and private. The
transition (:func:`advance`) builds a *new* record from the old one plus the simulator's appraisal and
reply; the caller stores it only once every model call has succeeded, so a failing backend never
leaves an episode half-updated.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field

from attune_client.wire import (
    EpisodeStatus,
    EpisodeView,
    Message,
    RewardSpec,
    Role,
    StepInfo,
    TerminationReason,
)
from env_server.agent.emotion import EMOTION_GOAL, EMOTION_LEAVE, apply_delta, band_of
from env_server.agent.reward import step_components
from env_server.llm.protocol import Appraisal, Turn
from env_server.personas.schema import Persona

__all__ = ["AppraisalRecord", "EpisodeRecord", "StepRecord", "advance", "turn_seed"]


def turn_seed(episode_seed: int, turn: int, purpose: str) -> int:
    """A stable 63-bit seed for one simulator call, derived from the episode seed.

    Forks share the episode seed, so they sample identically from the same state until their actions differ.
    """
    digest = hashlib.blake2b(f"{episode_seed}:{turn}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


class AppraisalRecord(BaseModel):
    """The private side of one turn: what the simulated person thought (never sent to the policy)."""

    model_config = ConfigDict(extra="forbid")

    turn: int
    thoughts: str
    delta: int
    fallback: bool
    signals: dict[str, float] = Field(default_factory=dict)


class StepRecord(BaseModel):
    """A stored step result, replayed verbatim for a retried request id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    action: str
    observation: str
    reward: float
    terminated: bool
    truncated: bool
    info: StepInfo


class EpisodeRecord(BaseModel):
    """Everything the server keeps about an episode."""

    model_config = ConfigDict(extra="forbid")

    episode_id: str
    persona_id: str
    seed: int
    max_turns: int
    reward: RewardSpec
    emotion: int
    turn: int = 0
    status: EpisodeStatus = EpisodeStatus.active
    termination_reason: TerminationReason | None = None
    transcript: list[Message]
    emotions: list[int]
    appraisals: list[AppraisalRecord] = Field(default_factory=list)
    steps: list[StepRecord] = Field(default_factory=list)
    """One result per supporter turn, kept so a retried request id replays instead of stepping again."""
    owner: str | None = None
    """Fingerprint of the API key that created the episode (None when keys are off)."""

    def step_for(self, request_id: str) -> StepRecord | None:
        """The stored result of the step sent with ``request_id``, if any."""
        return next((step for step in self.steps if step.request_id == request_id), None)

    @property
    def finished(self) -> bool:
        """True once terminated or truncated."""
        return self.status is not EpisodeStatus.active

    def history(self) -> tuple[Turn, ...]:
        """The dialogue as the simulator reads it."""
        return tuple(Turn(role=message.role, content=message.content) for message in self.transcript)

    def info(self, delta: int = 0) -> StepInfo:
        """Public step info for the current state."""
        return StepInfo(
            persona_id=self.persona_id,
            emotion=self.emotion,
            delta=delta,
            band=band_of(self.emotion),
            turn=self.turn,
            max_turns=self.max_turns,
            status=self.status,
            termination_reason=self.termination_reason,
        )

    def view(self) -> EpisodeView:
        """Public transcript and trajectory: no thoughts, no hidden intention."""
        return EpisodeView(
            episode_id=self.episode_id,
            persona_id=self.persona_id,
            status=self.status,
            termination_reason=self.termination_reason,
            turn=self.turn,
            max_turns=self.max_turns,
            reward=self.reward,
            emotion=self.emotion,
            emotions=list(self.emotions),
            transcript=list(self.transcript),
        )


def advance(
    record: EpisodeRecord, persona: Persona, action: str, appraisal: Appraisal, reply: str, request_id: str
) -> tuple[EpisodeRecord, StepRecord]:
    """Apply one supporter turn: the new record and the step result, the old record untouched."""
    emotion = apply_delta(record.emotion, appraisal.delta)
    turn = record.turn + 1
    status, reason = EpisodeStatus.active, None
    if emotion >= EMOTION_GOAL:
        status, reason = EpisodeStatus.terminated, TerminationReason.goal_reached
    elif emotion < EMOTION_LEAVE:
        status, reason = EpisodeStatus.terminated, TerminationReason.user_left
    elif turn >= record.max_turns:
        status, reason = EpisodeStatus.truncated, TerminationReason.max_turns
    delta = emotion - record.emotion
    updated = record.model_copy(
        update={
            "emotion": emotion,
            "turn": turn,
            "status": status,
            "termination_reason": reason,
            "transcript": [
                *record.transcript,
                Message(role=Role.assistant, content=action),
                Message(role=Role.user, content=reply, emotion=emotion),
            ],
            "emotions": [*record.emotions, emotion],
            "appraisals": [
                *record.appraisals,
                AppraisalRecord(
                    turn=turn,
                    thoughts=appraisal.thoughts,
                    delta=delta,
                    fallback=appraisal.fallback,
                    signals=dict(appraisal.signals),
                ),
            ],
        }
    )
    components = step_components(
        record.reward, persona, record.history(), action, delta=delta, emotion=emotion, done=updated.finished
    )
    step = StepRecord(
        request_id=request_id,
        action=action,
        observation=reply,
        reward=components.total,
        terminated=status is EpisodeStatus.terminated,
        truncated=status is EpisodeStatus.truncated,
        info=updated.info(delta=delta).model_copy(update={"reward_components": components}),
    )
    updated.steps = [*record.steps, step]
    return updated, step
