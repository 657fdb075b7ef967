"""oneDNN's packed linear for few rows, MKL's for many (fast: small random layers; one slow test on SmolLM2)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from env_server.llm import linear
from env_server.llm.linear import FEW_ROWS, PackedLinear, can_pack, fewest_packed_rows, pack_linears, packable_dtypes

pytestmark = pytest.mark.skipif(not can_pack(), reason="this torch has no oneDNN packed linear")


def layer(bias: bool = False) -> torch.nn.Linear:
    torch.manual_seed(0)
    return torch.nn.Linear(96, 160, bias=bias)


def test_exports() -> None:
    assert linear.__all__ == [
        "FEW_ROWS",
        "PackedLinear",
        "can_pack",
        "fewest_packed_rows",
        "pack_linears",
        "packable_dtypes",
        "time_products",
    ]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 96), (16, 1, 96), (3, 5, 96), (FEW_ROWS + 7, 96)])
def test_a_packed_layer_computes_what_the_plain_one_does(shape: tuple[int, ...], bias: bool) -> None:
    plain = layer(bias)
    packed = PackedLinear(plain)
    x = torch.randn(shape)
    with torch.inference_mode():
        want, got = plain(x), packed(x)
    assert got.shape == want.shape == (*shape[:-1], 160)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)


def route(monkeypatch, packed: PackedLinear, rows: tuple[int, ...]) -> list[str]:
    """Which product each input of ``rows`` rows went through."""
    calls: list[str] = []
    dense, onednn = torch.nn.functional.linear, torch.ops.mkldnn._linear_pointwise

    def through_mkl(*args):
        calls.append("mkl")
        return dense(*args)

    def through_onednn(*args):
        calls.append("onednn")
        return onednn(*args)

    monkeypatch.setattr(linear.torch.nn.functional, "linear", through_mkl)
    monkeypatch.setattr(linear.torch.ops.mkldnn, "_linear_pointwise", through_onednn)
    with torch.inference_mode():
        for count in rows:
            packed(torch.randn(count, 96))
    return calls


def test_few_rows_go_to_onednn_and_many_to_mkl(monkeypatch) -> None:
    rows = (1, 16, FEW_ROWS - 1, FEW_ROWS, 4 * FEW_ROWS)
    assert route(monkeypatch, PackedLinear(layer()), rows) == ["onednn", "onednn", "onednn", "mkl", "mkl"]


def test_fewer_rows_than_a_layers_min_rows_go_to_mkl(monkeypatch) -> None:
    rows = (1, 3, 4, 16, FEW_ROWS)
    assert route(monkeypatch, PackedLinear(layer(), min_rows=4), rows) == ["mkl", "mkl", "onednn", "onednn", "mkl"]


@pytest.mark.parametrize(("packed_wins_from", "chosen"), [(1, 1), (2, 2), (4, 4), (8, 8), (None, 16)])
def test_packing_starts_at_the_fewest_rows_where_it_timed_faster(monkeypatch, packed_wins_from, chosen) -> None:
    # The clock is the one thing replaced, by times that say packing wins from ``packed_wins_from`` rows.
    timed: list[tuple[int, bool]] = []

    def best_seconds(layers, rows: int, packed: bool) -> float:
        assert len(layers) == 2
        timed.append((rows, packed))
        faster = packed_wins_from is not None and rows >= packed_wins_from
        return (1.0 if faster else 3.0) if packed else 2.0

    monkeypatch.setattr(linear, "time_products", best_seconds)
    assert fewest_packed_rows([PackedLinear(layer()), PackedLinear(layer(bias=True))]) == chosen
    tried = [rows for rows in (1, 2, 4, 8) if rows <= chosen]
    assert timed == [(rows, packed) for rows in tried for packed in (True, False)]


def test_timing_runs_both_products_on_the_layers() -> None:
    layers = [PackedLinear(layer()), PackedLinear(layer(bias=True))]
    for packed in (True, False):
        assert 0 < linear.time_products(layers, 2, packed=packed, rounds=2, per_round=3) < 1


def test_the_timed_choice_is_one_of_the_tried_row_counts_and_set_on_every_layer() -> None:
    model = torch.nn.Sequential(*(torch.nn.Linear(96, 96) for _ in range(3)))
    assert pack_linears(model) == 3
    assert {layer.min_rows for layer in model} <= {1, 2, 4, 8, 16}
    assert len({layer.min_rows for layer in model}) == 1


def test_a_packed_layer_keeps_the_forward_hooks_of_the_layer_it_replaces() -> None:
    plain = layer()
    plain.register_forward_pre_hook(lambda module, args: (args[0].float(),))  # as the float32 head's cast
    seen: list[torch.dtype] = []
    plain.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    packed = PackedLinear(plain, min_rows=1)
    with torch.inference_mode():
        out = packed(torch.randn(2, 96, dtype=torch.bfloat16))
    assert out.dtype == torch.float32 and seen == [torch.float32]


def test_packing_a_model_shares_its_parameters_and_keeps_its_state_dict() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(16, 4)))
    model[2].add_module("float16", torch.nn.Linear(4, 4).to(torch.float16))
    weights = {name: p for name, p in model.named_parameters()}
    keys = list(model.state_dict())
    x = torch.randn(3, 8)
    with torch.inference_mode():
        before = model[2][0](model[1](model[0](x)))
    assert pack_linears(model, min_rows=1) == 2  # the float16 layer is left as it is: oneDNN does not pack it
    assert type(model[0]) is PackedLinear and type(model[2][0]) is PackedLinear
    assert type(model[2].float16) is torch.nn.Linear
    assert {name: p for name, p in model.named_parameters()} == weights  # the same tensors, not copies
    assert list(model.state_dict()) == keys
    with torch.inference_mode():
        after = model[2][0](model[1](model[0](x)))
    assert torch.allclose(after, before, atol=1e-6)
    assert pack_linears(model, min_rows=1) == 0  # packed layers are not packed again


@pytest.mark.slow
def test_smollm2_packs_on_the_cpu_and_writes_what_it_writes_unpacked() -> None:
    from env_server.llm.transformers_backend import TransformersChatModel

    packed = TransformersChatModel(dtype="float32", temperature=0.0, max_batch_size=4)
    plain = TransformersChatModel(dtype="float32", temperature=0.0, max_batch_size=4, pack_weights=False)
    assert packed.packed_linears == 211 and plain.packed_linears == 0  # 30 layers x 7, and the head
    assert type(packed.model.get_output_embeddings()) is PackedLinear
    # The head still shares the input embeddings' tensor.
    assert packed.model.get_output_embeddings().weight is packed.model.get_input_embeddings().weight
    chats = [[{"role": "user", "content": text}] for text in ("Hi", "Tell me about the sea.", "What is 2+2?")]

    async def write(model) -> list[str]:
        return await asyncio.gather(*(model.generate(chat, max_new_tokens=16, seed=0) for chat in chats))

    assert asyncio.run(write(packed)) == asyncio.run(write(plain))
    # In bfloat16 the 210 layers pack where the CPU multiplies bfloat16, and the head's float32 copy always.
    bf16 = TransformersChatModel(dtype="bfloat16", max_batch_size=1)
    assert bf16.packed_linears == (211 if torch.bfloat16 in packable_dtypes() else 1)


def test_this_cpu_packs_float32_and_bfloat16_only_where_it_multiplies_it() -> None:
    dtypes = packable_dtypes()
    assert torch.float32 in dtypes and torch.float16 not in dtypes
    assert (torch.bfloat16 in dtypes) == torch.ops.mkldnn._is_mkldnn_bf16_supported()
