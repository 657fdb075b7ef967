"""Grouped attention without repeated key/value heads computes exactly what transformers' sdpa computes.

A small randomly initialised Llama with grouped-query attention (4 query heads per key/value head) runs the same
masked, padded batch under both implementations: over a cache, as our prompts and choice trees run.
"""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from env_server.llm.attention import ATTENTION, register  # noqa: E402
from env_server.llm.transformers_backend import cache_keyword  # noqa: E402


@pytest.fixture(scope="module")
def llama():
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    return transformers.LlamaForCausalLM(config).eval()


def run(model, implementation: str, ids, mask, prefix: int):
    """Logits of ``ids[:, prefix:]`` read over a static cache holding ``ids[:, :prefix]``; positions follow the mask."""
    model.set_attn_implementation(implementation)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = transformers.StaticCache(config=model.config, max_cache_len=ids.shape[1] + 3)
    over_cache = {cache_keyword(model): cache}
    with torch.inference_mode():
        model(
            input_ids=ids[:, :prefix],
            attention_mask=mask[:, :prefix],
            position_ids=positions[:, :prefix],
            **over_cache,
        )
        return model(
            input_ids=ids[:, prefix:],
            attention_mask=mask,
            position_ids=positions[:, prefix:],
            **over_cache,
        ).logits


@pytest.mark.parametrize("new_tokens", [1, 2, 7])
def test_grouped_attention_equals_sdpa_on_a_padded_batch(llama, new_tokens: int) -> None:
    register()
    ids = torch.randint(0, 128, (3, 20 + new_tokens))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding
    mask[2, 12:15] = 0  # padding between a cached prefix and the rest, as a batch over mixed prefixes has
    expected = run(llama, "sdpa", ids, mask, prefix=20)
    folded = run(llama, ATTENTION, ids, mask, prefix=20)
    assert folded.shape == expected.shape == (3, new_tokens, 128)
    torch.testing.assert_close(folded, expected, rtol=1e-5, atol=1e-5)
    # Padding mattered: the padded rows differ from the same tokens read unpadded.
    unpadded = run(llama, ATTENTION, ids, torch.ones_like(ids), prefix=20)
    assert not torch.allclose(unpadded[1:], expected[1:], atol=1e-3)


def test_grouped_attention_folds_the_query_instead_of_repeating_keys(llama, monkeypatch) -> None:
    """The point of the function: masked prompts never reach ``repeat_kv``."""
    from transformers.integrations import sdpa_attention

    register()
    calls: list[int] = []
    original = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda states, n: calls.append(n) or original(states, n))
    ids = torch.randint(0, 128, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    run(llama, "sdpa", ids, mask, prefix=8)
    assert calls  # transformers' own path repeats the key/value heads for a masked prompt
    calls.clear()
    run(llama, ATTENTION, ids, mask, prefix=8)
    assert calls == []


def test_the_cache_goes_by_the_name_the_installed_forward_takes(llama) -> None:
    """transformers 5.24 calls it ``cache``; earlier releases only know ``past_key_values``."""

    class Older(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None):
            return input_ids

    assert cache_keyword(llama) in inspect.signature(llama.forward).parameters
    assert cache_keyword(Older()) == "past_key_values"
