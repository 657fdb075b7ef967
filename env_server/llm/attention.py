"""Grouped-query attention over a masked prompt without copying the keys and values.

transformers' ``sdpa`` attention serves a masked query of more than one token by repeating every key/value head
for each query head that shares it (``repeat_kv``): with SmolLM2's 3 key/value heads for 9 query heads, a batch
of 16 rows over a thousand cached tokens copies ~70 MB per layer per pass. Our prompts are masked whenever a batch
mixes lengths, and the choice-tree pass is masked always, so that copy took most of a scoring pass on this CPU.

:func:`grouped_sdpa` instead folds the query heads that share a key/value head into the query-length axis, as
transformers does for a single query token (``pack_gqa``), and repeats only the mask. A single token on the CPU
goes to torch's own grouped kernel (``enable_gqa``), which takes a mask there. The arithmetic per query and key is
unchanged. It is registered as the attention implementation ``"attune_sdpa"``.
"""

from __future__ import annotations

__all__ = ["ATTENTION", "grouped_sdpa", "register"]

ATTENTION = "attune_sdpa"


def grouped_sdpa(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    """transformers' ``sdpa`` attention, with grouped query heads folded instead of key/value heads repeated."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, length, dim = query.shape
    plain = (
        kwargs.get("position_bias") is None and kwargs.get("softcap") is None and not kwargs.get("output_attentions")
    )
    if groups > 1 and length == 1 and attention_mask is not None and query.device.type == "cpu" and plain:
        # A decoding step. torch's CPU kernel reads grouped key/value heads in place under a mask too, and in
        # bfloat16 it ran a batch-16 step ~7 % faster than transformers' packed query (made for CUDA, where a mask
        # turns torch's grouped path off).
        output = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
        )
        return output.transpose(1, 2).contiguous(), None
    if groups == 1 or length == 1 or attention_mask is None or attention_mask.shape[1] != 1 or kwargs.get("cache"):
        # One query token is already folded, and an unmasked prompt goes to the kernel's own grouped path.
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    # Query head h = kv * groups + g reads key/value head kv; row g * length + t of the folded query is its token t.
    query = query.reshape(batch, heads // groups, groups * length, dim)
    mask = attention_mask[:, :, None].expand(-1, -1, groups, -1, -1)
    mask = mask.reshape(attention_mask.shape[0], 1, groups * length, attention_mask.shape[-1])
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling
    )
    return output.reshape(batch, heads, length, dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make ``"attune_sdpa"`` an attention implementation (with sdpa's masks); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, grouped_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
    return ATTENTION
