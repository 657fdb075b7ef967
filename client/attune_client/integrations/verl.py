"""verl: an agent loop that plays Attune episodes (verl 0.9; ``pip install "attune-client[verl]"``).

verl 0.9 dropped ``BaseInteraction``; multi-turn rollouts are an ``AgentLoopBase`` subclass named in a YAML list
given as ``actor_rollout_ref.rollout.agent.agent_loop_config_path`` and chosen per sample by the dataset's
``agent_name`` column (or ``rollout.agent.default_agent_loop``). verl builds one loop object per sample with
``hydra.utils.instantiate`` (the YAML entry's extra keys become keyword arguments) and awaits
``run(sampling_params, **dataset_fields)``, which returns an ``AgentLoopOutput``.

:class:`AttuneAgentLoop` takes the group's episode from a per-process :class:`~attune_client.rollout.AsyncGroupPool`
keyed by the sample's ``uid`` (verl gives all ``rollout.n`` samples of a prompt one ``uid``), so a group is one
created episode and its forks. It generates each reply with ``server_manager.generate`` (token in, token out),
stops when the episode ends or the completion reaches ``rollout.response_length``, and returns the token layout
of :mod:`attune_client.rollout` as ``response_ids`` / ``response_mask`` / ``response_logprobs`` with
``reward_score`` = the server's reward summed over the episode (final emotion / 100 in terminal mode). A loop
that sets ``reward_score`` makes verl skip its own reward function for that sample. Per-turn rewards, the final
emotion and the episode id go to ``extra_fields``.

The episode comes from the dataset's ``extra_info["attune"]`` (``persona_id``, ``seed``, ``max_turns``,
``reward_mode``), else from an ``attune:...`` last prompt message, else the server chooses; an unseeded group
is seeded from its ``uid``, so a group split across workers still shares one persona and opening. A system
message in the prompt replaces the loop's system prompt.

Without verl installed this module still imports: :func:`run_verl_episode` (the loop's logic) works with any
object whose ``generate`` has verl's signature, and :class:`AttuneAgentLoop` raises ``ImportError`` when built.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from attune_client.http import DEFAULT_BASE_URL, AsyncAttuneClient
from attune_client.rollout import (
    DEFAULT_SYSTEM_PROMPT,
    AsyncGroupPool,
    ChatFormat,
    Dialogue,
    EpisodeSpec,
    Generation,
    Rollout,
    stable_seed,
)
from attune_client.wire import RewardMode

try:
    from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput
except ImportError as _error:  # verl is an optional extra
    _VERL_MISSING: ImportError | None = _error

    class AgentLoopBase:  # type: ignore[no-redef]
        """Stand-in while verl is missing: building a loop says what to install."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise ImportError("AttuneAgentLoop needs verl: pip install 'attune-client[verl]'") from _VERL_MISSING

    AgentLoopOutput = None  # type: ignore[assignment,misc]
else:
    _VERL_MISSING = None

__all__ = ["AttuneAgentLoop", "episode_spec_from_sample", "run_verl_episode"]

_POOLS: dict[tuple[Any, ...], AsyncGroupPool] = {}


def _pool(base_url: str, api_key: str | None, group_size: int, timeout: float) -> AsyncGroupPool:
    """One client and pool per event loop and server: every loop object of a worker shares them."""
    key = (id(asyncio.get_running_loop()), base_url, api_key, group_size)
    if key not in _POOLS:
        _POOLS[key] = AsyncGroupPool(AsyncAttuneClient(base_url, api_key=api_key, timeout=timeout), group_size)
    return _POOLS[key]


def episode_spec_from_sample(sample: Mapping[str, Any]) -> EpisodeSpec:
    """The episode a verl sample asks for (see the module docstring), seeded from its ``uid`` when unseeded.

    Args:
        sample: The dataset fields verl passes to ``run`` (``extra_info``, ``raw_prompt``, ``uid``, ...).

    Returns:
        The spec.
    """
    extra = sample.get("extra_info") or {}
    fields = extra.get("attune") if isinstance(extra, Mapping) else None
    if fields:
        spec = EpisodeSpec(**dict(fields))
    else:
        try:
            spec = EpisodeSpec.from_prompt(list(sample.get("raw_prompt") or []))
        except (ValueError, KeyError, TypeError):
            spec = EpisodeSpec()
    if spec.seed is None and sample.get("uid") is not None:
        spec = EpisodeSpec(spec.persona_id, stable_seed("verl", sample["uid"]), spec.max_turns, spec.reward_mode)
    return spec


def _system_prompt(raw_prompt: Sequence[Mapping[str, Any]] | None, default: str | None) -> str | None:
    for message in raw_prompt or []:
        if message.get("role") == "system" and isinstance(message.get("content"), str):
            return message["content"]
    return default


async def run_verl_episode(
    server_manager: Any,
    pool: AsyncGroupPool,
    chat: ChatFormat,
    sampling_params: Mapping[str, Any],
    sample: Mapping[str, Any],
    *,
    response_length: int,
    max_tokens_per_turn: int | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> tuple[Rollout, dict[str, float]]:
    """Play one verl sample's episode: the logic of :meth:`AttuneAgentLoop.run`, without verl.

    Args:
        server_manager: Has ``async generate(request_id=, prompt_ids=, sampling_params=)`` returning an object
            with ``token_ids`` and ``log_probs`` (verl's ``TokenOutput``).
        pool: Where the group's members come from.
        chat: The policy's chat format.
        sampling_params: verl's sampling parameters; ``max_tokens`` is set per reply.
        sample: The dataset fields verl passed to ``run`` (``uid`` keys the group).
        response_length: The completion's token budget (``rollout.response_length``).
        max_tokens_per_turn: Most tokens per reply (the remaining budget when ``None``).
        defaults: ``max_turns`` / ``reward_mode`` for specs that do not set them.

    Returns:
        The rollout, and timings (``generate_sequences`` and ``tool_calls``: seconds in the policy and the server).
    """
    spec = episode_spec_from_sample(sample).with_defaults(**dict(defaults or {}))
    key = sample.get("uid") if sample.get("uid") is not None else uuid.uuid4().hex
    timings = {"generate_sequences": 0.0, "tool_calls": 0.0}
    started = time.monotonic()
    opening = await pool.take(key, spec)
    timings["tool_calls"] += time.monotonic() - started
    dialogue = Dialogue(chat, opening, max_completion_tokens=response_length)
    request_id = uuid.uuid4().hex  # one per trajectory: verl routes it to the same server (prefix cache)
    while not dialogue.done:
        budget = dialogue.remaining_tokens or 0
        if max_tokens_per_turn is not None:
            budget = min(budget, max_tokens_per_turn)
        started = time.monotonic()
        output = await server_manager.generate(
            request_id=request_id,
            prompt_ids=dialogue.context_ids,
            sampling_params={**sampling_params, "max_tokens": max(1, budget)},
        )
        timings["generate_sequences"] += time.monotonic() - started
        action = dialogue.add_reply(Generation(list(output.token_ids), getattr(output, "log_probs", None)))
        started = time.monotonic()
        dialogue.add_step(await pool.client.step(dialogue.episode_id, action))
        timings["tool_calls"] += time.monotonic() - started
    return dialogue.result(), timings


class AttuneAgentLoop(AgentLoopBase):
    """A verl agent loop whose environment is an Attune server; see the module docstring for the YAML entry."""

    def __init__(
        self,
        *args: Any,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        max_turns: int | None = None,
        reward_mode: RewardMode | str | None = None,
        max_tokens_per_turn: int | None = 256,
        timeout: float = 120.0,
        **kwargs: Any,
    ) -> None:
        """Built by verl for every sample; the keyword arguments come from the YAML entry.

        Args:
            *args: verl's positional arguments for ``AgentLoopBase``.
            base_url: The Attune server.
            api_key: Sent as a bearer token when set.
            system_prompt: The supporter's instructions, unless the sample's prompt has a system message.
            max_turns: Replies per episode when the sample does not say; the server's default when ``None``.
            reward_mode: ``terminal`` or ``dense`` when the sample does not say; the server's when ``None``.
            max_tokens_per_turn: Most tokens per reply; ``None`` lets one reply use the whole response budget.
            timeout: Seconds allowed per request phase to the Attune server.
            **kwargs: verl's keyword arguments for ``AgentLoopBase`` (``tools`` is accepted and unused).
        """
        kwargs.pop("tools", None)
        super().__init__(*args, **kwargs)
        self.base_url = base_url
        self.api_key = api_key
        self.system_prompt = system_prompt
        self.defaults = {"max_turns": max_turns, "reward_mode": reward_mode}
        self.max_tokens_per_turn = max_tokens_per_turn
        self.timeout = timeout

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> Any:
        """Play the sample's episode and return verl's ``AgentLoopOutput``."""
        rollout_config = self.rollout_config
        pool = _pool(self.base_url, self.api_key, int(rollout_config.n), self.timeout)
        chat = ChatFormat(
            self.tokenizer,
            _system_prompt(kwargs.get("raw_prompt"), self.system_prompt),
            chat_template_kwargs=dict(self.apply_chat_template_kwargs or {}),
        )
        response_length = int(rollout_config.response_length)
        rollout, timings = await run_verl_episode(
            self.server_manager,
            pool,
            chat,
            sampling_params,
            kwargs,
            response_length=response_length,
            max_tokens_per_turn=self.max_tokens_per_turn,
            defaults=self.defaults,
        )
        if len(rollout.prompt_ids) > int(rollout_config.prompt_length):
            raise ValueError(
                f"the Attune prompt has {len(rollout.prompt_ids)} tokens; raise rollout.prompt_length "
                f"(now {rollout_config.prompt_length}) or shorten the system prompt"
            )
        return AgentLoopOutput(
            prompt_ids=rollout.prompt_ids,
            response_ids=rollout.completion_ids[:response_length],
            response_mask=rollout.env_mask[:response_length],
            response_logprobs=rollout.logprobs[:response_length] if rollout.logprobs is not None else None,
            reward_score=rollout.reward,
            num_turns=len(rollout.messages) - (1 if rollout.messages[0]["role"] == "system" else 0),
            metrics=timings,
            extra_fields={
                "turn_scores": rollout.rewards,
                "final_emotion": rollout.final_emotion,
                "episode_id": rollout.episode_id,
                "persona_id": rollout.persona_id,
                "termination_reason": rollout.termination_reason,
            },
        )
