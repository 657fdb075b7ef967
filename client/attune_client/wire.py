"""The HTTP wire contract between an Attune server and its clients.

This module is the single source of truth for request and response bodies. The server imports it;
it never imports the server. Every model forbids unknown fields so that a typo in a request is a
422, not a silently ignored option.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AppraisalView",
    "Band",
    "Correlation",
    "CreateEpisodeRequest",
    "CreateEpisodeResponse",
    "Difficulty",
    "EndorsedClaim",
    "EpisodeInternals",
    "EpisodeOptions",
    "EpisodeStatus",
    "EpisodeView",
    "ErrorBody",
    "ErrorCode",
    "ErrorDetail",
    "ForkRequest",
    "ForkResponse",
    "GroundingActs",
    "IntentionType",
    "Message",
    "PersonaList",
    "PersonaPublic",
    "RewardComponents",
    "RewardMode",
    "RewardSpec",
    "Role",
    "ScoreRequest",
    "ScoreResponse",
    "ScoredMessage",
    "ScoredTurn",
    "StepInfo",
    "StepRequest",
    "StepResponse",
    "TerminationReason",
]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorCode(str, Enum):
    """Machine-readable error codes; each maps to one HTTP status and one client exception."""

    invalid_request = "invalid_request"
    action_empty = "action_empty"
    action_too_long = "action_too_long"
    episode_not_found = "episode_not_found"
    persona_not_found = "persona_not_found"
    episode_finished = "episode_finished"
    episode_busy = "episode_busy"
    request_conflict = "request_conflict"
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    backend_unavailable = "backend_unavailable"
    not_found = "not_found"
    method_not_allowed = "method_not_allowed"
    internal = "internal"


class Role(str, Enum):
    """Who said a message: the simulated person (``user``) or the policy (``assistant``)."""

    user = "user"
    assistant = "assistant"


class Band(str, Enum):
    """Emotion bands as in SAGE: S >= 100, A >= 70, B >= 40, C >= 10, F < 10."""

    S = "S"
    A = "A"
    B = "B"
    C = "C"
    F = "F"


class Difficulty(str, Enum):
    """How demanding the simulated person's appraisal is (RLVER's easy / normal / hard)."""

    easy = "easy"
    normal = "normal"
    hard = "hard"


class IntentionType(str, Enum):
    """What the person really wants from the conversation. See README, 'Intention taxonomy'."""

    vent = "vent"
    validation = "validation"
    understand_other = "understand_other"
    deep_empathy = "deep_empathy"
    practical_advice = "practical_advice"
    anger_acknowledged = "anger_acknowledged"
    ambivalence = "ambivalence"
    false_belief = "false_belief"


class RewardMode(str, Enum):
    """``terminal``: emotion/100 on the last step, 0 before (RLVER). ``dense``: delta/100 every step."""

    terminal = "terminal"
    dense = "dense"


class EpisodeStatus(str, Enum):
    """Lifecycle of an episode."""

    active = "active"
    terminated = "terminated"
    truncated = "truncated"


class TerminationReason(str, Enum):
    """Why an episode ended."""

    goal_reached = "goal_reached"
    user_left = "user_left"
    max_turns = "max_turns"


class ErrorDetail(_Wire):
    code: ErrorCode = Field(description="Machine-readable error code.")
    message: str = Field(description="Human-readable explanation naming the problem.")


class ErrorBody(_Wire):
    error: ErrorDetail = Field(description="The error.")


class RewardSpec(_Wire):
    """How a step's reward combines its components. The default is RLVER's: terminal emotion/100 only."""

    mode: RewardMode = Field(default=RewardMode.terminal, description="How the emotion term is paid.")
    emotion_weight: float = Field(default=1.0, description="Weight of the emotion term.")
    integrity_penalty: float = Field(
        default=0.0, ge=0, description="Subtracted on a step whose reply endorses one of the persona's false beliefs."
    )
    question_bonus: float = Field(default=0.0, description="Added on a step whose reply asks an open question.")
    reflection_bonus: float = Field(default=0.0, description="Added on a step whose reply reflects or acknowledges.")
    premature_advice_penalty: float = Field(
        default=0.0, ge=0, description="Subtracted on advice given before the person has been understood."
    )


class EpisodeOptions(_Wire):
    max_turns: int | None = Field(
        default=None, ge=1, le=100, description="Supporter turns before truncation; server default when absent."
    )
    reward_mode: RewardMode | None = Field(
        default=None, description="Shortcut for ``reward.mode``; server default when absent."
    )
    reward: RewardSpec | None = Field(default=None, description="Reward spec for this episode; server's when absent.")


class GroundingActs(_Wire):
    """What the supporter's reply did, as conversation research counts grounding acts."""

    questions: int = Field(ge=0, description="Questions asked (open or closed).")
    open_questions: int = Field(ge=0, description="Open questions asked.")
    reflections: int = Field(ge=0, description="Reflections and acknowledgements of what the person said or felt.")
    advice: int = Field(ge=0, description="Advice statements.")
    premature_advice: bool = Field(
        description="Advice before the person was understood (no question or reflection in an earlier turn), "
        "for personas who did not ask for advice."
    )


class EndorsedClaim(_Wire):
    claim: str = Field(description="The persona's false belief that the reply endorsed.")
    reason: str = Field(description="Why the reply counts as endorsing it.")


class RewardComponents(_Wire):
    """The parts a step's reward is made of; ``total`` is the step's reward."""

    emotion_dense: float = Field(description="Emotion change / 100.")
    emotion_terminal: float | None = Field(description="Final emotion / 100 on the last step, else null.")
    integrity: float = Field(le=0, description="-1 per endorsed false belief on this step, else 0.")
    endorsed_claims: list[EndorsedClaim] = Field(description="Which false beliefs were endorsed, and why.")
    grounding: GroundingActs = Field(description="Grounding acts of this reply.")
    total: float = Field(description="The combined reward under the episode's reward spec.")


class CreateEpisodeRequest(_Wire):
    persona_id: str | None = Field(default=None, description="Persona to play; chosen by the seed when absent.")
    seed: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="Seeds persona choice and the simulator's sampling."
    )
    options: EpisodeOptions = Field(default_factory=EpisodeOptions, description="Per-episode overrides.")
    n: int = Field(
        default=1, ge=1, le=64, description="Identical episodes to create (a GRPO group): same persona and opening."
    )


class StepInfo(_Wire):
    persona_id: str = Field(description="Persona being played.")
    emotion: int = Field(ge=0, le=100, description="The simulated person's emotion after this step, 0..100.")
    delta: int = Field(ge=-10, le=10, description="Emotion change caused by the last supporter reply.")
    band: Band = Field(description="Emotion band of ``emotion``.")
    turn: int = Field(ge=0, description="Supporter turns taken so far.")
    max_turns: int = Field(ge=1, description="Supporter turns allowed before truncation.")
    status: EpisodeStatus = Field(description="Episode status after this step.")
    termination_reason: TerminationReason | None = Field(default=None, description="Why the episode ended, if it did.")
    reward_components: RewardComponents | None = Field(
        default=None, description="How this step's reward was made (absent after reset)."
    )


class CreateEpisodeResponse(_Wire):
    episode_id: str = Field(description="Opaque episode id (the first of ``episode_ids``).")
    episode_ids: list[str] = Field(description="Every episode created: one, or ``n`` identical ones.")
    observation: str = Field(description="The simulated person's opening message.")
    info: StepInfo = Field(description="State after the opening (turn 0, delta 0).")


class ForkRequest(_Wire):
    n: int = Field(default=1, ge=1, le=64, description="Copies to make of the episode's current state.")


class ForkResponse(_Wire):
    episode_ids: list[str] = Field(description="The new episodes: identical state, independent from now on.")


class StepRequest(_Wire):
    action: str = Field(min_length=1, description="The supporter's reply.")
    request_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="Idempotency key: a retry with it replays the result."
    )


class StepResponse(_Wire):
    observation: str = Field(description="What the simulated person says next.")
    reward: float = Field(description="Reward for this step under the episode's reward mode.")
    terminated: bool = Field(description="The episode ended (goal reached or user left).")
    truncated: bool = Field(description="The episode hit max_turns.")
    info: StepInfo = Field(description="Emotion and progress after the step.")


class Message(_Wire):
    role: Role = Field(description="Speaker.")
    content: str = Field(description="What was said.")
    emotion: int | None = Field(default=None, description="For user messages: emotion when it was said.")


class EpisodeView(_Wire):
    episode_id: str = Field(description="Opaque episode id.")
    persona_id: str = Field(description="Persona being played.")
    status: EpisodeStatus = Field(description="Lifecycle state.")
    termination_reason: TerminationReason | None = Field(default=None, description="Why it ended, if it did.")
    turn: int = Field(description="Supporter turns taken.")
    max_turns: int = Field(description="Supporter turns allowed.")
    reward: RewardSpec = Field(description="Reward spec of this episode.")
    emotion: int = Field(description="Current emotion.")
    emotions: list[int] = Field(description="Emotion trajectory: the initial value, then one per supporter turn.")
    transcript: list[Message] = Field(description="Public transcript, opening message first.")


class AppraisalView(_Wire):
    turn: int = Field(description="Supporter turn appraised.")
    thoughts: str = Field(description="The simulated person's inner thoughts about that reply.")
    delta: int = Field(description="Emotion change applied.")
    fallback: bool = Field(description="The change came from the heuristic fallback, not the model.")
    signals: dict[str, float] = Field(description="What the appraiser noticed (backend-specific scores).")


class EpisodeInternals(EpisodeView):
    """Privileged view (admin key): the episode with its hidden intention and every appraisal."""

    hidden_intention: str = Field(description="What the simulated person really wants.")
    seed: int = Field(description="Episode seed: persona choice and simulator sampling derive from it.")
    appraisals: list[AppraisalView] = Field(description="One per supporter turn.")


class ScoredMessage(_Wire):
    role: Role = Field(description="Speaker.")
    content: str = Field(min_length=1, description="What was said.")
    emotion: int | None = Field(default=None, ge=0, le=100, description="Recorded emotion after a user message.")


class ScoreRequest(_Wire):
    persona_id: str = Field(description="Persona whose simulator appraises the supporter's turns.")
    messages: list[ScoredMessage] = Field(
        min_length=2, description="The recorded dialogue, the person first; user turns are kept as recorded."
    )
    initial_emotion: int | None = Field(
        default=None, ge=0, le=100, description="Emotion before the first supporter turn; the persona's when absent."
    )
    seed: int = Field(default=0, ge=0, le=2**63 - 1, description="Seeds the simulator's sampling.")


class ScoredTurn(_Wire):
    turn: int = Field(description="Supporter turn (1-based).")
    delta: int = Field(description="Appraised emotion change.")
    emotion: int = Field(description="Emotion after the turn (ours).")
    recorded_emotion: int | None = Field(description="Emotion the recording gives after this turn, if any.")
    components: RewardComponents = Field(description="Reward components of the turn (dense emotion, integrity...).")


class Correlation(_Wire):
    n: int = Field(description="Pairs compared.")
    spearman: float | None = Field(description="Spearman rank correlation (null when undefined).")
    pearson: float | None = Field(description="Pearson correlation (null when undefined).")


class ScoreResponse(_Wire):
    persona_id: str = Field(description="Persona used.")
    emotions: list[int] = Field(description="Our emotion trajectory: initial, then one per supporter turn.")
    turns: list[ScoredTurn] = Field(description="One per supporter turn.")
    correlation: Correlation | None = Field(description="Ours vs recorded emotion, when the recording has it.")


class PersonaPublic(_Wire):
    id: str = Field(description="Persona id.")
    name: str = Field(description="Display name.")
    language: str = Field(description="Language the persona speaks (BCP 47 code).")
    difficulty: Difficulty = Field(description="How demanding the appraisal is.")
    intention_type: IntentionType = Field(description="Category of the hidden intention (metadata for curricula).")
    initial_emotion: int = Field(description="Emotion at the start of an episode.")
    pack: str = Field(description="Pack the persona comes from.")


class PersonaList(_Wire):
    personas: list[PersonaPublic] = Field(description="Every persona the server serves.")
