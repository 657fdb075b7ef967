"""PrefixCache's lookup, replacement and eviction on plain tensors; with the real model, cached == uncached."""

from __future__ import annotations

import asyncio

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
