"""PrefixCache's lookup, replacement and eviction on plain tensors; with the real model, cached == uncached."""

from __future__ import annotations

import asyncio
import logging

import pytest
import torch

from env_server.llm.prefix_cache import PrefixCache


def states(tokens: list[int], layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-layer states whose values name their token, so a slice shows which tokens it holds."""
    column = torch.tensor(tokens, dtype=torch.float32)[None, :, None]
    return [(column.expand(3, -1, 4) + layer, -column.expand(3, -1, 4)) for layer in range(layers)]


def test_exports() -> None:
    from env_server.llm import prefix_cache

    assert prefix_cache.__all__ == ["CachedPrefix", "PrefixCache"]


def test_an_empty_cache_finds_nothing_and_counts_every_token_as_computed() -> None:
    cache = PrefixCache(100)
    found = cache.longest([1, 2, 3])
    assert found.length == 0 and found.states is None
    assert (cache.hits, cache.misses) == (0, 3)


def test_the_longest_common_prefix_is_found_and_sliced() -> None:
    cache = PrefixCache(100)
    cache.put([1, 2, 3, 4], states([1, 2, 3, 4]))
    cache.put([1, 2, 9], states([1, 2, 9]))
    found = cache.longest([1, 2, 3, 7, 8])
    assert found.length == 3
    keys, values = found.states[1]
    assert keys[0, :, 0].tolist() == [2.0, 3.0, 4.0]  # tokens 1, 2, 3 (+ layer 1)
    assert values[0, :, 0].tolist() == [-1.0, -2.0, -3.0]
    assert (cache.hits, cache.misses) == (3, 2)


def test_one_token_is_always_left_to_compute() -> None:
    cache = PrefixCache(100)
    cache.put([5, 6, 7], states([5, 6, 7]))
    assert cache.longest([5, 6, 7]).length == 2  # its next-token distribution is what the caller wants
    assert cache.longest([5]).length == 0


def test_a_longer_sequence_replaces_its_prefix_and_a_prefix_of_a_held_one_is_not_stored() -> None:
    cache = PrefixCache(100)
    cache.put([1, 2], states([1, 2]))
    cache.put([1, 2, 3], states([1, 2, 3]))
    assert len(cache) == 1 and cache.tokens == 3
    cache.put([1, 2], states([1, 2]))
    assert len(cache) == 1 and cache.tokens == 3
    assert cache.longest([1, 2, 3, 4]).length == 3


def test_least_recently_used_entries_go_first_when_over_budget() -> None:
    cache = PrefixCache(6)
    cache.put([1, 1, 1], states([1, 1, 1]))
    cache.put([2, 2, 2], states([2, 2, 2]))
    assert cache.longest([1, 1, 1, 5]).length == 3  # touches the first entry
    cache.put([3, 3, 3], states([3, 3, 3]))
    assert cache.tokens == 6
    assert cache.longest([2, 2, 2, 5]).length == 0  # the least recently used one was dropped
    assert cache.longest([1, 1, 1, 5]).length == 3
    cache.put(list(range(10)), states(list(range(10))))  # longer than the whole budget: never held
    assert cache.tokens == 6


def test_a_zero_budget_keeps_nothing_and_a_negative_one_is_refused() -> None:
    cache = PrefixCache(0)
    cache.put([1, 2], states([1, 2]))
    assert len(cache) == 0 and cache.longest([1, 2, 3]).length == 0
    with pytest.raises(ValueError, match="negative"):
        PrefixCache(-1)


@pytest.mark.slow
def test_a_cached_dialogue_simulates_exactly_as_an_uncached_one(catalog) -> None:
    # Three turns of one episode, greedy: the model with a prefix cache (and batching) must write the same thoughts
    # and replies, and choose the same feelings, as the same model computing every prompt in full; and it must
    # have served most prompt tokens from the cache.
    from dataclasses import replace

    from attune_client.wire import Role
    from env_server.agent.emotion import apply_delta
    from env_server.llm.chat import ChatSimulator
    from env_server.llm.protocol import Turn, TurnContext
    from env_server.llm.transformers_backend import TransformersChatModel

    # float32: in bfloat16 the cached and uncached computations round differently (see test_batching).
    cached = TransformersChatModel(dtype="float32", temperature=0.0, max_batch_size=8)
    plain = TransformersChatModel(dtype="float32", temperature=0.0, max_batch_size=1, prefix_cache_tokens=0)
    persona = next(p for p in catalog if p.opening)
    actions = ["That sounds exhausting. What happened?", "You should just quit.", "I hear you. That is a lot."]

    async def dialogue(model) -> list[tuple[str, int, str]]:
        simulator = ChatSimulator(model, max_new_tokens=24, thoughts_tokens=16)
        history, emotion, out = [Turn(Role.user, persona.opening)], persona.initial_emotion, []
        for turn, action in enumerate(actions, 1):
            history.append(Turn(Role.assistant, action))
            context = TurnContext(persona=persona, history=tuple(history), emotion=emotion, turn=turn, seed=turn)
            appraisal = await simulator.appraise(context)
            after = apply_delta(emotion, appraisal.delta)
            reply = await simulator.reply(
                replace(context, emotion=after, emotion_before=emotion, thoughts=appraisal.thoughts)
            )
            out.append((appraisal.thoughts, appraisal.delta, reply))
            history.append(Turn(Role.user, reply))
            emotion = after
        return out

    assert asyncio.run(dialogue(cached)) == asyncio.run(dialogue(plain))
    assert cached.prefix_cache.hits > 2 * cached.prefix_cache.misses
    assert plain.prefix_cache.hits == 0


def test_a_pinned_entry_is_found_and_outlives_the_lru_entries() -> None:
    cache = PrefixCache(6, max_pinned_tokens=4)
    assert cache.pin([7, 7, 7], states([7, 7, 7]))
    for first in range(1, 5):  # 12 tokens through a 6-token budget: every LRU entry but the last two is evicted
        cache.put([first] * 3, states([first] * 3))
    assert cache.longest([1, 1, 1, 5]).length == 0
    found = cache.longest([7, 7, 7, 5])
    assert found.length == 3 and found.states[0][0][0, :, 0].tolist() == [7.0, 7.0, 7.0]
    assert (cache.tokens, cache.pinned_tokens, len(cache)) == (6, 3, 3)


def test_a_longer_entry_does_not_replace_a_pinned_one_and_a_prefix_of_it_is_not_stored() -> None:
    cache = PrefixCache(100, max_pinned_tokens=10)
    cache.pin([1, 2, 3], states([1, 2, 3]))
    cache.put([1, 2, 3, 4, 5], states([1, 2, 3, 4, 5]))  # a dialogue that began with the pinned prompt
    cache.put([1, 2], states([1, 2]))  # held already, as the start of the pinned entry
    assert (cache.tokens, cache.pinned_tokens, len(cache)) == (5, 3, 2)
    assert cache.longest([1, 2, 3, 4, 5, 6]).length == 5  # the longer dialogue serves its own continuation
    cache.put([9], states([9]))
    cache.max_tokens = 1
    cache.put([8], states([8]))  # evicts every LRU entry but this one
    assert cache.longest([1, 2, 3, 4, 5, 6]).length == 3  # the pinned prompt remains


def test_pinning_past_the_pinned_budget_keeps_nothing_and_a_repeat_is_counted_once() -> None:
    cache = PrefixCache(100, max_pinned_tokens=5)
    assert cache.pin([1, 2, 3], states([1, 2, 3]))
    assert cache.pin([1, 2, 3], states([1, 2, 3]))
    assert cache.is_pinned([1, 2, 3]) and not cache.is_pinned([1, 2])
    assert not cache.pin([4, 5, 6], states([4, 5, 6]))
    assert cache.pinned_tokens == 3 and cache.longest([4, 5, 6, 7]).length == 0
    assert not PrefixCache(100).pin([1], states([1]))  # no pinned budget by default
    with pytest.raises(ValueError, match="negative"):
        PrefixCache(10, max_pinned_tokens=-1)


@pytest.mark.slow
def test_primed_personas_serve_their_first_turn_and_simulate_as_unprimed(catalog, caplog) -> None:
    # The personas' system messages are pinned before any episode: a first appraisal then computes only what follows
    # them, and the dialogue (greedy, float32) is the one a model computing every prompt in full writes. A budget
    # smaller than the pack pins the personas that fit, in order.
    from attune_client.wire import Role
    from env_server.llm.chat import ChatSimulator
    from env_server.llm.prompts import appraisal_messages, appraisal_system_messages
    from env_server.llm.protocol import Turn, TurnContext
    from env_server.llm.transformers_backend import TransformersChatModel

    personas = list(catalog)[:3]
    primed = TransformersChatModel(dtype="float32", temperature=0.0, max_batch_size=4, pinned_prefix_tokens=100_000)
    plain = TransformersChatModel(
        dtype="float32", temperature=0.0, max_batch_size=1, prefix_cache_tokens=0, pinned_prefix_tokens=100_000
    )
    assert ChatSimulator(plain).prime(personas) == 0  # no prefix cache: none pinned either
    pinned = ChatSimulator(primed, max_new_tokens=16, thoughts_tokens=12).prime(personas)
    systems = [primed._lasting_ids(appraisal_system_messages(persona)) for persona in personas]
    assert pinned == sum(len(tokens) for tokens in systems) == primed.prefix_cache.pinned_tokens
    assert all(len(tokens) > 300 and primed.prefix_cache.is_pinned(tokens) for tokens in systems)
    assert ChatSimulator(primed).prime(personas) == pinned  # a second prime keeps what it has

    def context(persona) -> TurnContext:
        history = (Turn(Role.user, persona.opening or "Hi."), Turn(Role.assistant, "That sounds hard. What happened?"))
        return TurnContext(persona=persona, history=history, emotion=persona.initial_emotion, turn=1, seed=3)

    prompts = [primed._prompt_ids(appraisal_messages(context(persona))) for persona in personas]
    assert all(p[: len(s)] == s for p, s in zip(prompts, systems, strict=True))  # they begin the real prompts

    async def first_turns(model) -> list[tuple[str, int]]:
        simulator = ChatSimulator(model, max_new_tokens=16, thoughts_tokens=12)
        appraisals = await asyncio.gather(*(simulator.appraise(context(persona)) for persona in personas))
        return [(appraisal.thoughts, appraisal.delta) for appraisal in appraisals]

    misses = primed.prefix_cache.misses
    assert asyncio.run(first_turns(primed)) == asyncio.run(first_turns(plain))
    # Each first appraisal, its blank-reply baseline and its thoughts computed only what follows the system message.
    after_system = sum(len(p) - len(s) for p, s in zip(prompts, systems, strict=True))
    assert primed.prefix_cache.misses - misses < 2 * after_system + 40 * len(personas) < pinned

    small = TransformersChatModel(dtype="float32", max_batch_size=1, pinned_prefix_tokens=len(systems[0]) + 10)
    with caplog.at_level(logging.WARNING, logger="attune.llm"):
        assert ChatSimulator(small).prime(personas) == len(systems[0])  # the second and third do not fit
    assert "2 of 3 prompts to prime did not fit" in caplog.text
