"""TRL: a ``rollout_func`` for ``GRPOTrainer`` that plays Attune episodes.

TRL 1.16 calls ``rollout_func(prompts, trainer)`` once per generation batch, with this process's slice of the
batch: the dataset's ``prompt`` column, each prompt repeated ``num_generations`` times in a row. It needs
``prompt_ids``, ``completion_ids`` and ``logprobs`` (one list per prompt; ``logprobs`` may be ``None``, which TRL
only uses for vLLM importance sampling). ``env_mask`` is taken as the trainer's tool mask: the loss and the
completion-length metrics count only tokens where it is 1. Every other key is a list with one value per prompt
that TRL hands to the reward functions as a keyword argument.

Here a prompt names an episode (``attune:persona_id=...,seed=...``, see :func:`episode_prompts`); each run of
equal prompts (at most ``num_generations`` long) becomes one GRPO group, one created episode forked for the
rest, so the members share persona and opening line. The dialogues run in lockstep, one batched generate per
turn. The extra keys are ``attune_reward`` (the server's reward summed over the episode: final emotion / 100 in
terminal mode), ``final_emotion``, ``emotions``, ``turn_rewards``, ``num_turns``, ``episode_id`` and
``persona_id``; :func:`attune_reward` and :func:`emotion_reward` are reward functions over them.

This module does not import ``trl`` (the trainer is duck-typed); :class:`TransformersGenerator` needs torch.
"""

from __future__ import annotations

import concurrent.futures
import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from attune_client.http import DEFAULT_BASE_URL, AttuneClient
from attune_client.rollout import (
    DEFAULT_SYSTEM_PROMPT,
    BatchGenerate,
    ChatFormat,
    EpisodeSpec,
    Generation,
    Opening,
    Rollout,
    open_group,
    run_group,
    stable_seed,
)
from attune_client.wire import RewardMode

__all__ = [
    "TransformersGenerator",
    "attune_reward",
    "emotion_reward",
    "episode_prompts",
    "make_rollout_func",
    "to_trl_output",
]


class TransformersGenerator:
    """A batched ``generate_batch`` over a Hugging Face causal LM: left-padded ``model.generate``, sampled."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        stop_token_ids: Sequence[int] | None = None,
        logprobs: bool = True,
    ) -> None:
        """Bind a model and sampling settings (TRL's defaults: temperature 1, no top-p / top-k cut).

        Args:
            model: A ``transformers`` causal LM.
            tokenizer: Its tokenizer (for the pad and end-of-sequence ids).
            max_new_tokens: Most tokens per reply.
            temperature: Sampling temperature; 0 is greedy.
            top_p: Nucleus sampling cut.
            top_k: Top-k cut; 0 disables it.
            min_p: Min-p cut, when set.
            repetition_penalty: ``transformers``' repetition penalty.
            stop_token_ids: Tokens that end a reply; the tokenizer's end-of-sequence token when ``None``.
            logprobs: Also return each sampled token's log-probability under the sampling distribution.
        """
        self.model = model
        self.max_new_tokens = max_new_tokens
        stops = list(stop_token_ids) if stop_token_ids is not None else [tokenizer.eos_token_id]
        self.stop_token_ids = [int(s) for s in stops]
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else self.stop_token_ids[0])
        self.logprobs = logprobs
        sampling: dict[str, Any] = {"do_sample": temperature > 0}
        if temperature > 0:
            sampling.update(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p)
        self._sampling = {k: v for k, v in sampling.items() if v is not None}
        self._sampling["repetition_penalty"] = repetition_penalty

    def __call__(self, contexts: list[list[int]]) -> list[Generation]:
        """One reply per context, in order; each ends at its first stop token, or at ``max_new_tokens``."""
        import torch

        device = next(self.model.parameters()).device
        width = max(len(c) for c in contexts)
        input_ids = torch.full((len(contexts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(contexts), width), dtype=torch.long)
        for row, context in enumerate(contexts):
            input_ids[row, width - len(context) :] = torch.tensor(context, dtype=torch.long)
            attention_mask[row, width - len(context) :] = 1
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    max_new_tokens=self.max_new_tokens,
                    eos_token_id=self.stop_token_ids,
                    pad_token_id=self.pad_token_id,
                    use_cache=True,
                    output_scores=self.logprobs,
                    return_dict_in_generate=True,
                    **self._sampling,
                )
                scores = (
                    self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
                    if self.logprobs
                    else None
                )
        finally:
            self.model.train(was_training)
        generations = []
        for row, ids in enumerate(out.sequences[:, width:].tolist()):
            end = next((i + 1 for i, t in enumerate(ids) if t in self.stop_token_ids), len(ids))
            logps = scores[row, :end].tolist() if scores is not None else None
            generations.append(Generation(ids[:end], logps))
        return generations


def episode_prompts(
    count: int,
    *,
    personas: Sequence[str] | None = None,
    seed: int | None = 0,
    max_turns: int | None = None,
    reward_mode: RewardMode | str | None = None,
) -> list[dict[str, str]]:
    """Dataset rows for ``GRPOTrainer``: ``{"prompt": "attune:..."}``, one episode spec each.

    Args:
        count: Rows to make.
        personas: Persona ids to cycle through; the seed chooses each persona when ``None``.
        seed: Row ``i`` gets seed ``seed + i``, so a row is the same episode every epoch; ``None`` leaves the
            seed to the rollout function (a fresh one per step).
        max_turns: Replies per episode; the server's default when ``None``.
        reward_mode: ``terminal`` or ``dense``; the server's default when ``None``.

    Returns:
        The rows (``datasets.Dataset.from_list(rows)`` makes the dataset).
    """
    cycle = itertools.cycle(personas) if personas else itertools.repeat(None)
    return [
        {
            "prompt": EpisodeSpec(
                persona_id=next(cycle),
                seed=None if seed is None else seed + i,
                max_turns=max_turns,
                reward_mode=reward_mode,
            ).to_prompt()
        }
        for i in range(count)
    ]


def to_trl_output(rollouts: Sequence[Rollout]) -> dict[str, list[Any] | None]:
    """The dict a TRL ``rollout_func`` returns, one entry per rollout in each list (see the module docstring)."""
    logprobs = [r.logprobs for r in rollouts]
    return {
        "prompt_ids": [r.prompt_ids for r in rollouts],
        "completion_ids": [r.completion_ids for r in rollouts],
        "logprobs": None if any(lp is None for lp in logprobs) else logprobs,
        "env_mask": [r.env_mask for r in rollouts],
        "attune_reward": [r.reward for r in rollouts],
        "final_emotion": [r.final_emotion for r in rollouts],
        "emotions": [r.emotions for r in rollouts],
        "turn_rewards": [r.rewards for r in rollouts],
        "num_turns": [r.num_turns for r in rollouts],
        "episode_id": [r.episode_id for r in rollouts],
        "persona_id": [r.persona_id for r in rollouts],
    }


def attune_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: the server's reward for the episode (final emotion / 100 in terminal mode)."""
    return [float(r) for r in kwargs["attune_reward"]]


def emotion_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL reward function: final emotion / 100, whatever the episode's reward mode."""
    return [e / 100 for e in kwargs["final_emotion"]]


def _groups(prompts: Sequence[Any], group_size: int) -> list[tuple[Any, int]]:
    """Runs of equal prompts, each at most ``group_size`` long: ``(prompt, run length)``."""
    runs: list[tuple[Any, int]] = []
    for prompt in prompts:
        if runs and runs[-1][0] == prompt and runs[-1][1] < group_size:
            runs[-1] = (prompt, runs[-1][1] + 1)
        else:
            runs.append((prompt, 1))
    return runs


def make_rollout_func(
    client: AttuneClient | str = DEFAULT_BASE_URL,
    *,
    tokenizer: Any = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    generate_batch: BatchGenerate | None = None,
    max_new_tokens: int = 128,
    max_turns: int | None = None,
    reward_mode: RewardMode | str | None = None,
    episode_spec: Callable[[Any], EpisodeSpec] = EpisodeSpec.from_prompt,
    seed: int = 0,
    max_workers: int = 16,
    on_rollouts: Callable[[list[Rollout]], None] | None = None,
) -> Callable[[list[Any], Any], dict[str, list[Any] | None]]:
    """A ``rollout_func`` for TRL's ``GRPOTrainer`` that plays each prompt's group of Attune episodes.

    Args:
        client: The server's client, or its base URL.
        tokenizer: The policy's tokenizer; the trainer's ``processing_class`` when ``None``.
        system_prompt: The supporter's instructions (part of the prompt tokens).
        generate_batch: The policy, ``list of contexts -> list of replies``; when ``None``, a
            :class:`TransformersGenerator` over the trainer's model with the trainer's sampling settings.
        max_new_tokens: Most tokens per reply for the default generator.
        max_turns: Replies per episode when the prompt does not say; the server's default when ``None``.
        reward_mode: ``terminal`` or ``dense`` when the prompt does not say; the server's default when ``None``.
        episode_spec: Maps a prompt to its episode; parses ``attune:...`` prompts by default.
        seed: Mixed into the seed of episodes whose prompt gives none. Such a seed depends on the prompt and
            on the call's index, which every training process shares, so a group split across processes
            still gets one persona and opening.
        max_workers: Most concurrent requests to the server.
        on_rollouts: Called with each call's rollouts, in prompt order (for logging or checks).

    Returns:
        ``rollout_func(prompts, trainer) -> dict``.
    """
    attune = AttuneClient(client) if isinstance(client, str) else client
    calls = itertools.count()

    def rollout_func(prompts: list[Any], trainer: Any) -> dict[str, list[Any] | None]:
        call = next(calls)
        processing = tokenizer if tokenizer is not None else trainer.processing_class
        chat = ChatFormat(getattr(processing, "tokenizer", processing), system_prompt)
        training = getattr(trainer.model, "training", True)
        group_size = getattr(trainer, "num_generations" if training else "num_generations_eval", None) or len(prompts)
        specs = []
        for prompt, size in _groups(prompts, group_size):
            spec = episode_spec(prompt).with_defaults(max_turns=max_turns, reward_mode=reward_mode)
            if spec.seed is None:
                spec = replace(spec, seed=stable_seed(seed, call, prompt))
            specs.append((spec, size))
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
            groups = list(pool.map(lambda job: open_group(attune, *job), specs))
        openings: list[Opening] = [member for group in groups for member in group]
        policy = generate_batch or _trainer_generator(trainer, chat, max_new_tokens)
        rollouts = run_group(attune, openings, policy, chat, max_workers=max_workers)
        if on_rollouts is not None:
            on_rollouts(rollouts)
        return to_trl_output(rollouts)

    return rollout_func


def _trainer_generator(trainer: Any, chat: ChatFormat, max_new_tokens: int) -> TransformersGenerator:
    args = trainer.args
    model = trainer.accelerator.unwrap_model(trainer.model)
    return TransformersGenerator(
        model,
        chat.tokenizer,
        max_new_tokens=max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k or 0,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        stop_token_ids=chat.stop_token_ids,
    )
