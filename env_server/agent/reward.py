"""Reward components of a step and how a :class:`~attune_client.wire.RewardSpec` combines them.

- ``emotion``: ``terminal`` mode pays emotion/100 on the step that ends the episode (RLVER's default, so
  an episode's return is its final emotion / 100); ``dense`` pays delta/100 on every step.
- ``integrity``: -1 per false belief of the persona that the reply endorses, whatever the emotion did
  (warmth that agrees with a false belief is the failure the research warns about).
- grounding acts: questions, reflections/acknowledgements, advice, and advice given before the person was
  understood. Counted on every step; they enter the total only through the spec's bonus/penalty weights,
  which are paid on the step where the act happens in both modes.
"""

from __future__ import annotations

from collections.abc import Sequence

from attune_client.wire import (
    EndorsedClaim,
    GroundingActs,
    IntentionType,
    RewardComponents,
    RewardMode,
    RewardSpec,
    Role,
)
from env_server.llm.heuristic import endorsed_beliefs, extract_features
from env_server.llm.protocol import Turn
from env_server.personas.schema import Persona

__all__ = ["grounding_acts", "integrity_findings", "step_components", "step_reward"]


def step_reward(mode: RewardMode, *, delta: int, emotion: int, done: bool) -> float:
    """The emotion term alone: delta/100 (dense) or emotion/100 on the last step (terminal)."""
    if mode is RewardMode.dense:
        return delta / 100
    return emotion / 100 if done else 0.0


def _understood(reply: str, previous_user: str) -> bool:
    features = extract_features(reply, previous_user)
    return features.open_question + features.closed_question + features.reflection + features.validation > 0


def grounding_acts(persona: Persona, history: Sequence[Turn], reply: str) -> GroundingActs:
    """Grounding acts of ``reply``, the supporter's answer to the dialogue in ``history``."""
    last_user = next((t.content for t in reversed(history) if t.role is Role.user), "")
    features = extract_features(reply, last_user)
    earlier = [
        (turn.content, history[index - 1].content if index else "")
        for index, turn in enumerate(history)
        if turn.role is Role.assistant
    ]
    understood_before = any(_understood(text, user) for text, user in earlier)
    advice = round(features.advice)
    return GroundingActs(
        questions=round(features.open_question + features.closed_question),
        open_questions=round(features.open_question),
        reflections=round(features.reflection + features.validation),
        advice=advice,
        premature_advice=bool(
            advice and not understood_before and persona.intention_type is not IntentionType.practical_advice
        ),
    )


def integrity_findings(persona: Persona, reply: str) -> list[EndorsedClaim]:
    """The persona's false beliefs that ``reply`` endorses, each with the reason."""
    return [
        EndorsedClaim(
            claim=belief.claim,
            reason="the reply names this belief and agrees with it (or restates it as fact) without correcting it; "
            f"what is true: {belief.correction}",
        )
        for belief in endorsed_beliefs(persona, reply)
    ]


def step_components(
    spec: RewardSpec, persona: Persona, history: Sequence[Turn], reply: str, *, delta: int, emotion: int, done: bool
) -> RewardComponents:
    """Every component of one step, and their combination under ``spec`` as ``total``."""
    grounding = grounding_acts(persona, history, reply)
    claims = integrity_findings(persona, reply)
    integrity = -float(len(claims))
    total = spec.emotion_weight * step_reward(spec.mode, delta=delta, emotion=emotion, done=done)
    total += spec.integrity_penalty * integrity
    total += spec.question_bonus * (grounding.open_questions > 0) + spec.reflection_bonus * (grounding.reflections > 0)
    total -= spec.premature_advice_penalty * grounding.premature_advice
    return RewardComponents(
        emotion_dense=delta / 100,
        emotion_terminal=emotion / 100 if done else None,
        integrity=integrity,
        endorsed_claims=claims,
        grounding=grounding,
        total=round(total, 6),
    )
