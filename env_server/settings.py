"""One Settings object: every configuration value, read from ``ATTUNE_*`` environment variables.

Nothing else in the server reads ``os.environ``. The CLI builds a Settings from its flags (flags win
over the environment) and hands it to :func:`env_server.app.create_app`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from attune_client.wire import RewardMode, RewardSpec

__all__ = ["BackendName", "DtypeName", "Settings", "default_packs_path"]


def default_packs_path() -> Path:
    """The repository's top-level ``personas/`` folder (the default pack lives there)."""
    return Path(__file__).resolve().parents[1] / "personas"


_PLACEHOLDER_KEYS = {"changeme", "change-me", "secret", "password", "test", "example"}


class BackendName(str, Enum):
    """Which simulator backend serves the episodes."""

    transformers = "transformers"
    openai = "openai"
    heuristic = "heuristic"


class DtypeName(str, Enum):
    """Torch dtype of the transformers backend's model; ``auto`` lets the hardware decide (see ``resolve_dtype``)."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Settings(BaseSettings):
    """Server configuration. Every field is also the environment variable ``ATTUNE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="ATTUNE_", extra="forbid")

    backend: BackendName = Field(default=BackendName.transformers, description="Simulator backend.")
    model: str | None = Field(
        default=None,
        description="HF model directory or GGUF file for the transformers backend; the bundled SmolLM2 when absent.",
    )
    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible server for the openai backend (vLLM, SGLang, llama.cpp, hosted)."
    )
    openai_model: str = Field(default="default", description="Model name sent to the OpenAI-compatible server.")
    openai_api_key: SecretStr | None = Field(default=None, description="Bearer key for the OpenAI-compatible server.")
    openai_max_concurrency: int = Field(default=32, ge=1, description="Requests in flight to that server.")
    openai_prefix_mode: str = Field(
        default="continue",
        pattern="^(continue|instruct)$",
        description="'continue' (vLLM, SGLang, llama-server) or 'instruct' (servers that cannot continue a turn).",
    )
    device: str = Field(default="cpu", description="Torch device for the transformers backend (cpu, cuda, cuda:1).")
    dtype: DtypeName = Field(
        default=DtypeName.float32,
        description=(
            "Torch dtype for the transformers backend. float32 keeps batched results identical to unbatched ones; "
            "bfloat16 is faster on a CPU with AMX or a GPU but rounds them apart; auto = bfloat16 where the "
            "hardware has it, float32 elsewhere."
        ),
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    packs: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [default_packs_path()], description="Persona pack files or folders of them."
    )
    max_turns: int = Field(default=10, ge=1, le=100, description="Supporter turns before an episode is truncated.")
    reward_mode: RewardMode | None = Field(
        default=None, description="Default reward mode; overrides reward.mode when set (terminal or dense)."
    )
    reward: RewardSpec = Field(
        default_factory=RewardSpec,
        description='Default reward spec as JSON, e.g. {"mode": "dense", "integrity_penalty": 0.5}.',
    )
    max_action_chars: int = Field(default=4000, ge=1, description="Longest supporter reply accepted (422 beyond).")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Simulator sampling temperature; 0 = greedy.")
    max_new_tokens: int = Field(default=64, ge=8, le=1024, description="Token budget of each simulator reply.")
    thoughts_tokens: int = Field(default=40, ge=8, le=512, description="Token budget of each appraisal's thoughts.")
    transcript_window: int = Field(
        default=0,
        ge=0,
        description=(
            "Most recent dialogue messages a model-backed simulator reads each turn; 0 = the whole dialogue. "
            "Set it when dialogues outgrow the model's context."
        ),
    )
    max_batch_size: int = Field(
        default=16, ge=1, le=256, description="Most concurrent simulator calls batched into one model call; 1 = off."
    )
    max_wait_ms: float = Field(
        default=200.0, ge=0, le=10000, description="Longest a simulator call waits for others to share its batch."
    )
    batch_gap_ms: float = Field(
        default=10.0,
        ge=0,
        le=10000,
        description="A batch that is not full starts once no call has joined it for this long (at most max_wait_ms).",
    )
    prefix_cache_tokens: int = Field(
        default=65536,
        ge=0,
        description="Tokens of attention states the transformers backend keeps for prompts that repeat; 0 = off.",
    )
    pinned_prefix_tokens: int = Field(
        default=24576,
        ge=0,
        description=(
            "Tokens of the personas' system prompts the transformers backend computes before turning ready and keeps"
            " for good, besides prefix_cache_tokens; 0 = off (as when prefix_cache_tokens is 0)."
        ),
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads; torch's default when absent."
    )
    log_level: str = Field(default="info", description="Log level of the server.")
    store: str = Field(
        default="memory", description="Episode store: 'memory' or a Redis URL such as redis://127.0.0.1:6379/0."
    )
    episode_ttl_s: int = Field(
        default=3600, ge=1, description="Seconds an unused episode is kept; every use refreshes it."
    )
    step_lease_s: float = Field(
        default=120, gt=0, description="Longest a step may hold its episode; a crashed server's lease expires after it."
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Bearer keys that may use the API (comma-separated); empty = no auth."
    )
    admin_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Bearer keys that may also read episode internals (comma-separated)."
    )

    @field_validator("api_keys", "admin_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_keys", "admin_keys")
    @classmethod
    def _keys_are_real(cls, value: list[SecretStr]) -> list[SecretStr]:
        for key in value:
            secret = key.get_secret_value()
            if len(secret) < 16 or secret.lower() in _PLACEHOLDER_KEYS:
                raise ValueError("API keys must be at least 16 characters and not a placeholder")
        return value

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("store must be 'memory' or a redis:// URL")
        return value

    def default_reward(self) -> RewardSpec:
        """The reward spec an episode gets when it asks for none: ``reward``, its mode overridden by ``reward_mode``."""
        return self.reward.model_copy(update={"mode": self.reward_mode}) if self.reward_mode else self.reward

    @property
    def auth_enabled(self) -> bool:
        """Whether requests need a bearer key."""
        return bool(self.api_keys or self.admin_keys)

    @field_validator("packs", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        # Environment variables carry several paths separated by commas.
        if isinstance(value, str):
            return [part for part in value.split(",") if part.strip()]
        return value

    @field_validator("packs")
    @classmethod
    def _packs_exist(cls, value: list[Path]) -> list[Path]:
        missing = [str(path) for path in value if not path.exists()]
        if missing:
            raise ValueError(f"persona pack path does not exist: {', '.join(missing)}")
        if not value:
            raise ValueError("at least one persona pack path is needed")
        return value
