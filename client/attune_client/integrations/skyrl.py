"""SkyRL: :class:`AttuneTextEnv`, a SkyRL-Gym text environment whose other side is an Attune simulated person.

SkyRL's generator makes one environment per trajectory with ``skyrl_gym.make(env_class, env_config=...,
extras=...)``, calls ``init(prompt)`` with the dataset row's chat messages, then alternates the policy's reply
and ``step(reply_text)`` until ``done``; it tokenizes the messages itself and masks the environment's turns.

* **Prompt.** The row's last message names the episode, ``attune:persona_id=...,seed=...`` (see
  :meth:`~attune_client.rollout.EpisodeSpec.from_prompt`); ``init`` opens it and returns the system prompt (the
  row's own system message when it has one, else ``env_config.system_prompt``) and the person's opening line.
* **Reward and termination.** Each step pays the server's step reward: in ``terminal`` mode (RLVER, the default)
  final emotion / 100 on the last step and 0 before; in ``dense`` mode delta / 100 each step. ``done`` is true
  when the person reaches emotion 100, leaves (below 10) or the episode reaches ``max_turns`` replies.
* **Groups.** SkyRL repeats each prompt ``n_samples_per_prompt`` times in a batch and builds each environment on
  its own, so a process-wide :class:`~attune_client.rollout.GroupPool` gathers them: the first ``init`` for a
  prompt creates the episode and forks it ``group_size - 1`` times, the next ``group_size - 1`` take the forks,
  so the members share persona and opening line. Set ``env_config.group_size`` to ``n_samples_per_prompt``.

``env_config`` keys (all optional): ``base_url``, ``api_key``, ``timeout``, ``group_size`` (1), ``max_turns`` and
``reward_mode`` (used when the prompt does not say; ``max_turns`` falls back to ``extras["max_turns"]``, which
SkyRL's generator sets), ``system_prompt``.

When ``skyrl_gym`` is installed, :class:`AttuneTextEnv` subclasses its ``BaseTextEnv``; otherwise it subclasses a
minimal local stand-in with the same ``init`` / ``step`` / ``close`` / ``get_metrics`` methods, so the module
imports (and can be tested) without SkyRL.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from typing import Any

from attune_client.http import DEFAULT_BASE_URL, AttuneClient
from attune_client.rollout import (
    DEFAULT_SYSTEM_PROMPT,
    EMPTY_REPLY,
    MAX_ACTION_CHARS,
    EpisodeSpec,
    GroupPool,
    Opening,
)
from attune_client.wire import Role, StepResponse

__all__ = ["HAVE_SKYRL_GYM", "AttuneTextEnv", "register_env"]

try:
    from skyrl_gym.envs.base_text_env import BaseTextEnv as _BaseTextEnv

    HAVE_SKYRL_GYM = True
except ImportError:  # pragma: no cover - exercised only where skyrl-gym is absent
    HAVE_SKYRL_GYM = False

    class _BaseTextEnv:  # type: ignore[no-redef]
        """Stand-in for ``skyrl_gym.envs.base_text_env.BaseTextEnv`` (same methods) when skyrl-gym is absent."""

        def __init__(self) -> None:
            self.turns = 0
            self.max_turns = 1

        def init(self, prompt: list[dict[str, str]]) -> tuple[list[dict[str, str]], dict[str, Any]]:
            return prompt, {}

        def step(self, action: str) -> dict[str, Any]:
            raise NotImplementedError

        def close(self) -> None:
            pass

        def get_metrics(self) -> dict[str, Any]:
            return {}


_POOLS: dict[tuple[Any, ...], GroupPool] = {}
_POOLS_LOCK = threading.Lock()


def _shared_pool(base_url: str, api_key: str | None, timeout: float, group_size: int) -> GroupPool:
    """One client and pool per process and setting, shared by every environment SkyRL builds there."""
    key = (base_url, api_key, timeout, group_size)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = GroupPool(AttuneClient(base_url, api_key=api_key, timeout=timeout), group_size)
        return _POOLS[key]


@atexit.register
def _close_pools() -> None:
    with _POOLS_LOCK:
        for pool in _POOLS.values():
            pool.client.close()


class AttuneTextEnv(_BaseTextEnv):
    """One Attune episode as a SkyRL-Gym ``BaseTextEnv``; see the module docstring for config and rewards."""

    def __init__(self, env_config: Mapping[str, Any] | None = None, extras: Mapping[str, Any] | None = None) -> None:
        """Read the settings; nothing is sent to the server before :meth:`init`.

        Args:
            env_config: ``environment.skyrl_gym.<env_class>`` from SkyRL's config (see the module docstring).
            extras: The dataset row's extra fields (SkyRL adds ``max_turns``).
        """
        super().__init__()
        config = dict(env_config or {})
        self.extras = dict(extras or {})
        self.pool = _shared_pool(
            str(config.get("base_url") or DEFAULT_BASE_URL),
            config.get("api_key"),
            float(config.get("timeout", 120.0)),
            int(config.get("group_size", 1)),
        )
        self.client = self.pool.client
        self.system_prompt: str | None = config.get("system_prompt", DEFAULT_SYSTEM_PROMPT)
        self.default_max_turns = config.get("max_turns") or self.extras.get("max_turns")
        self.default_reward_mode = config.get("reward_mode")
        self.opening: Opening | None = None
        self.steps: list[StepResponse] = []

    def init(self, prompt: list[dict[str, str]]) -> tuple[list[dict[str, str]], dict[str, Any]]:
        """Open (or join) the prompt's group and return the chat the policy answers first.

        Args:
            prompt: The dataset row's messages; the last one is ``attune:...``.

        Returns:
            ``[system, user: opening line]`` and metadata (``episode_id``, ``persona_id``, ``emotion``).
        """
        spec = EpisodeSpec.from_prompt(prompt).with_defaults(
            max_turns=self.default_max_turns, reward_mode=self.default_reward_mode
        )
        key = (str(prompt[-1]["content"]), spec, self.extras.get("uid"), self.extras.get("index"))
        self.opening = self.pool.take(key, spec)
        self.max_turns = self.opening.info.max_turns
        self.turns = 0
        self.steps = []
        own_system = [dict(m) for m in prompt[:-1] if m.get("role") == "system"]
        system = own_system or ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        messages = [*system, {"role": Role.user.value, "content": self.opening.observation}]
        return messages, self._metadata(self.opening.info.emotion)

    def step(self, action: str) -> dict[str, Any]:
        """Send the policy's reply; return the person's answer, the step reward and whether the episode ended.

        Args:
            action: The policy's reply text.

        Returns:
            A ``BaseTextEnvStepOutput``: ``observations`` (the person's answer as a user message, none once
            done), ``reward``, ``done`` and ``metadata`` (emotion, delta, termination reason, ids).
        """
        if self.opening is None:
            raise RuntimeError("step() before init()")
        text = action.strip()[:MAX_ACTION_CHARS].strip() or EMPTY_REPLY
        result = self.client.step(self.opening.episode_id, text)
        self.steps.append(result)
        self.turns += 1
        done = result.terminated or result.truncated
        observations = [] if done else [{"role": Role.user.value, "content": result.observation}]
        metadata = self._metadata(result.info.emotion)
        metadata.update(
            delta=result.info.delta,
            termination_reason=(
                result.info.termination_reason.value if result.info.termination_reason is not None else None
            ),
            observation=result.observation,
        )
        return {"observations": observations, "reward": float(result.reward), "done": done, "metadata": metadata}

    def get_metrics(self) -> dict[str, Any]:
        """Per-episode numbers SkyRL averages: turns, final emotion, summed reward."""
        emotion = self.steps[-1].info.emotion if self.steps else (self.opening.info.emotion if self.opening else 0)
        return {
            "turns": self.turns,
            "final_emotion": emotion,
            "reward": sum(float(s.reward) for s in self.steps),
        }

    def _metadata(self, emotion: int) -> dict[str, Any]:
        assert self.opening is not None
        return {
            "episode_id": self.opening.episode_id,
            "persona_id": self.opening.info.persona_id,
            "emotion": emotion,
        }


def register_env(env_id: str = "attune") -> None:
    """Register :class:`AttuneTextEnv` with SkyRL-Gym as ``env_id`` (the dataset's ``env_class``).

    Call it where SkyRL builds environments (its Ray entrypoint), before training starts; registering an id
    twice is a no-op.

    Raises:
        ImportError: ``skyrl_gym`` is not installed.
    """
    try:
        import skyrl_gym
    except ImportError as exc:
        raise ImportError('register_env needs SkyRL-Gym: pip install "attune-client[skyrl]"') from exc
    if env_id not in skyrl_gym.registry:
        skyrl_gym.register(id=env_id, entry_point=f"{__name__}:AttuneTextEnv")
