"""The TRL adapter without TRL: ``make_rollout_func`` against a stand-in trainer, and the batched HF generator."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from attune_client.integrations.trl import (
    TransformersGenerator,
    attune_reward,
    emotion_reward,
    episode_prompts,
    make_rollout_func,
)
from attune_client.rollout import EpisodeSpec


def trainer(tokenizer, training: bool = True, group: int = 4) -> SimpleNamespace:
    """What the rollout function reads from a GRPOTrainer when a generate_batch is given."""
    return SimpleNamespace(
        model=SimpleNamespace(training=training),
        num_generations=group,
        num_generations_eval=2,
        processing_class=tokenizer,
    )


def test_episode_prompts_cycle_personas_and_count_seeds() -> None:
    rows = episode_prompts(3, personas=["a", "b"], seed=10, max_turns=2)
    specs = [EpisodeSpec.from_prompt(row["prompt"]) for row in rows]
    assert specs == [
        EpisodeSpec("a", 10, 2),
        EpisodeSpec("b", 11, 2),
        EpisodeSpec("a", 12, 2),
    ]


def test_each_block_of_prompts_is_one_group(client, server, tokenizer, canned) -> None:
    policy = canned(["Tell me more?", "That sounds heavy.", "What would help?", "Ugh."])
    prompts = [row["prompt"] for row in episode_prompts(2, seed=10, max_turns=2) for _ in range(4)]
    output = make_rollout_func(client, generate_batch=policy.batch)(prompts, trainer(tokenizer))

    assert server.bodies("POST", "/v1/episodes") == [
        {"seed": 10, "options": {"max_turns": 2}},
        {"seed": 11, "options": {"max_turns": 2}},
    ]
    assert server.bodies("POST", "/fork") == [{"n": 3}, {"n": 3}]
    assert [len(contexts) for contexts in policy.calls] == [8, 8]
    for key in ("prompt_ids", "completion_ids", "logprobs", "env_mask", "attune_reward", "final_emotion", "episode_id"):
        assert len(output[key]) == 8, key
    for ids, mask, logps in zip(output["completion_ids"], output["env_mask"], output["logprobs"], strict=True):
        assert len(ids) == len(mask) == len(logps) and 0 in mask and mask[0] == 1
    assert output["num_turns"] == [2] * 8
    assert len(set(map(tuple, output["prompt_ids"][:4]))) == 1
    views = [client.get_episode(episode_id) for episode_id in output["episode_id"]]
    assert output["final_emotion"] == [v.emotion for v in views]
    assert attune_reward([None] * 8, **output) == pytest.approx([v.emotion / 100 for v in views])
    assert emotion_reward([None] * 8, **output) == pytest.approx([v.emotion / 100 for v in views])
    assert len(set(output["attune_reward"][:4])) > 1  # the canned replies differ inside the group


def test_unseeded_prompts_get_seeds_every_process_agrees_on(client, server, tokenizer, canned) -> None:
    prompts = ["attune:max_turns=1"] * 8  # two groups of 4 with the same prompt
    first = make_rollout_func(client, generate_batch=canned().batch, seed=3)
    other_process = make_rollout_func(client, generate_batch=canned().batch, seed=3)
    first(prompts, trainer(tokenizer))
    other_process(prompts[:4], trainer(tokenizer))
    first(prompts[:4], trainer(tokenizer))
    seeds = [body["seed"] for body in server.bodies("POST", "/v1/episodes")]
    assert seeds[0] == seeds[1] == seeds[2] != seeds[3]  # same call index and prompt, same seed; next call, new


def test_eval_groups_use_num_generations_eval(client, server, tokenizer, canned) -> None:
    rollout_func = make_rollout_func(client, generate_batch=canned().batch, max_turns=1)
    rollout_func(["attune:seed=1"] * 4, trainer(tokenizer, training=False))
    assert server.bodies("POST", "/fork") == [{"n": 1}, {"n": 1}]


def test_logprobs_are_none_when_the_policy_gives_none(client, tokenizer) -> None:
    output = make_rollout_func(client, generate_batch=lambda contexts: [[7, 2]] * len(contexts))(
        ["attune:seed=1,max_turns=1"] * 2, trainer(tokenizer, group=2)
    )
    assert output["logprobs"] is None and output["completion_ids"] == [[7, 2], [7, 2]]


@pytest.fixture(scope="module")
def tiny_model():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=0,
        eos_token_id=2,
    )
    return LlamaForCausalLM(config).float()


def test_transformers_generator_left_pads_and_stops(tiny_model) -> None:
    tiny_model.train()
    tokenizer = SimpleNamespace(eos_token_id=2, pad_token_id=0)
    greedy = TransformersGenerator(tiny_model, tokenizer, max_new_tokens=6, temperature=0, stop_token_ids=[2, 5])
    contexts = [[10, 11, 12, 13, 14, 15], [20, 21], [30, 31, 32]]
    batch = greedy(contexts)
    assert tiny_model.training  # restored
    for context, generation in zip(contexts, batch, strict=True):
        ids = list(generation.token_ids)
        assert 1 <= len(ids) <= 6 and not any(t in (2, 5) for t in ids[:-1])
        assert len(generation.logprobs) == len(ids) and all(lp <= 0 for lp in generation.logprobs)
        assert greedy([context])[0].token_ids == ids  # padding does not change what a context gets
    sampled = TransformersGenerator(tiny_model, tokenizer, max_new_tokens=4, logprobs=False)(contexts)
    assert all(g.logprobs is None and 1 <= len(g.token_ids) <= 4 for g in sampled)
