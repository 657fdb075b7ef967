"""Client for Attune: simulated people ("sentient agents") for training empathic language models.

Installs without torch. Importing the package registers the Gymnasium env ``Attune-v0``::

    import gymnasium
    import attune_client

    env = gymnasium.make("Attune-v0", base_url="http://127.0.0.1:8000")
    observation, info = env.reset(seed=7)
    observation, reward, terminated, truncated, info = env.step("That sounds hard. What happened?")

``gymnasium.make("attune_client:Attune-v0", ...)`` imports the package itself.

Modules: :mod:`~attune_client.wire` (the HTTP contract), :mod:`~attune_client.http` (sync and async
clients), :mod:`~attune_client.env` (the Gymnasium env), :mod:`~attune_client.spaces`,
:mod:`~attune_client.errors` and :mod:`~attune_client.policies` (scripted baseline supporters).
"""

from __future__ import annotations

import gymnasium

from attune_client.env import RESET_OPTIONS, AttuneEnv
from attune_client.errors import (
    ERROR_CLASSES,
    ActionEmptyError,
    ActionTooLongError,
    AttuneError,
    AuthenticationError,
    BackendUnavailableError,
    ConflictError,
    EpisodeBusyError,
    EpisodeFinishedError,
    EpisodeNotFoundError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PermissionDeniedError,
    PersonaNotFoundError,
    RequestConflictError,
    ResetNeeded,
    ServerError,
    TransportError,
    error_from_response,
)
from attune_client.http import DEFAULT_BASE_URL, AsyncAttuneClient, AttuneClient
from attune_client.policies import (
    BUILTIN_POLICIES,
    Policy,
    dismissive,
    empathic,
    solution_dumping,
    sycophantic,
)
from attune_client.rollout import (
    DEFAULT_SYSTEM_PROMPT,
    EMPTY_REPLY,
    MAX_ACTION_CHARS,
    AsyncGenerate,
    AsyncGroupPool,
    BatchGenerate,
    ChatFormat,
    ChatTokenizer,
    Dialogue,
    EpisodeSpec,
    Generate,
    Generation,
    GroupPool,
    Opening,
    Rollout,
    aopen_group,
    arun_dialogue,
    open_group,
    run_dialogue,
    run_group,
    stable_seed,
)
from attune_client.spaces import SAMPLE_CHARSET, Utterance
from attune_client.wire import (
    AppraisalView,
    Band,
    Correlation,
    CreateEpisodeRequest,
    CreateEpisodeResponse,
    Difficulty,
    EndorsedClaim,
    EpisodeInternals,
    EpisodeOptions,
    EpisodeStatus,
    EpisodeView,
    ErrorBody,
    ErrorCode,
    ErrorDetail,
    ForkRequest,
    ForkResponse,
    GroundingActs,
    IntentionType,
    Message,
    PersonaList,
    PersonaPublic,
    RewardComponents,
    RewardMode,
    RewardSpec,
    Role,
    ScoredMessage,
    ScoredTurn,
    ScoreRequest,
    ScoreResponse,
    StepInfo,
    StepRequest,
    StepResponse,
    TerminationReason,
)

__all__ = [
    "BUILTIN_POLICIES",
    "DEFAULT_BASE_URL",
    "DEFAULT_SYSTEM_PROMPT",
    "EMPTY_REPLY",
    "ENV_ID",
    "ERROR_CLASSES",
    "MAX_ACTION_CHARS",
    "RESET_OPTIONS",
    "SAMPLE_CHARSET",
    "ActionEmptyError",
    "ActionTooLongError",
    "AppraisalView",
    "AsyncAttuneClient",
    "AsyncGenerate",
    "AsyncGroupPool",
    "AttuneClient",
    "AttuneEnv",
    "AttuneError",
    "AuthenticationError",
    "BackendUnavailableError",
    "Band",
    "BatchGenerate",
    "ChatFormat",
    "ChatTokenizer",
    "ConflictError",
    "Correlation",
    "CreateEpisodeRequest",
    "CreateEpisodeResponse",
    "Dialogue",
    "Difficulty",
    "EndorsedClaim",
    "EpisodeBusyError",
    "EpisodeFinishedError",
    "EpisodeInternals",
    "EpisodeNotFoundError",
    "EpisodeOptions",
    "EpisodeSpec",
    "EpisodeStatus",
    "EpisodeView",
    "ErrorBody",
    "ErrorCode",
    "ErrorDetail",
    "ForkRequest",
    "ForkResponse",
    "Generate",
    "Generation",
    "GroundingActs",
    "GroupPool",
    "IntentionType",
    "InvalidRequestError",
    "Message",
    "MethodNotAllowedError",
    "NotFoundError",
    "Opening",
    "PermissionDeniedError",
    "PersonaList",
    "PersonaNotFoundError",
    "PersonaPublic",
    "Policy",
    "RequestConflictError",
    "ResetNeeded",
    "RewardComponents",
    "RewardMode",
    "RewardSpec",
    "Role",
    "Rollout",
    "ScoreRequest",
    "ScoreResponse",
    "ScoredMessage",
    "ScoredTurn",
    "ServerError",
    "StepInfo",
    "StepRequest",
    "StepResponse",
    "TerminationReason",
    "TransportError",
    "Utterance",
    "aopen_group",
    "arun_dialogue",
    "dismissive",
    "empathic",
    "error_from_response",
    "open_group",
    "run_dialogue",
    "run_group",
    "solution_dumping",
    "stable_seed",
    "sycophantic",
]

ENV_ID = "Attune-v0"
"""The id under which :class:`AttuneEnv` is registered with Gymnasium."""

# The guard keeps a re-import (importlib.reload, "attune_client:Attune-v0") from re-registering,
# which Gymnasium would warn about.
if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="attune_client.env:AttuneEnv")
