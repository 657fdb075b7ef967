"""Linear layers for the few-row products of decoding on a CPU: oneDNN over a weight packed once.

On a CPU, torch's ``nn.Linear`` multiplies through MKL, which is slow for inputs of a few rows, as in a decoding
step (one row per sequence of the batch). oneDNN, torch's other CPU backend, is faster there once each weight is
reordered into its blocked layout. SmolLM2's products of one decoding step, in ms (MKL / packed; measured with
``scripts/bench_linear.py``, 2 cores):

| CPU | float32, 1 row | float32, 16 rows | bfloat16, 1 row | bfloat16, 16 rows |
|---|---|---|---|---|
| AMD EPYC, Zen 3 | 40 / 29 | 84 / 53 | | |
| Intel Sapphire Rapids (AMX) | 21.6 / 28.1 | 51.5 / 43.1 | 21.4 / 14.8 | 21.9 / 15.5 |

MKL catches up as rows grow: in float32 it was as fast from 256 rows on the AMD machine (1,024 rows: 1.24 s
against 1.38 s) and from 1,024 on the Intel one (941 against 901 ms), so inputs of :data:`FEW_ROWS` rows or more
(prompts) stay with it. Below a few rows it depends on the CPU (the Intel machine's MKL wins at 1-2 rows in
float32), so :func:`pack_linears` times both on the model's own first layers and sets where packing starts. torch's
compiler (inductor) makes the same substitution for a frozen model on a CPU.

:class:`PackedLinear` keeps the dense weight (MKL's rows, tied embeddings, ``state_dict``) and adds the packed
copy, so the weights take twice their memory.
"""

from __future__ import annotations

import logging
import time

import torch

log = logging.getLogger("attune.llm")

__all__ = [
    "FEW_ROWS",
    "PackedLinear",
    "can_pack",
    "fewest_packed_rows",
    "pack_linears",
    "packable_dtypes",
    "time_products",
]

FEW_ROWS = 256
"""Inputs of this many rows or more go to MKL (``F.linear``); fewer, down to a layer's ``min_rows``, to oneDNN."""

_TRIED_ROWS = (1, 2, 4, 8)
"""Row counts at which :func:`pack_linears` times both products; from 16 rows packing won on every CPU measured."""


def can_pack() -> bool:
    """Whether this torch has oneDNN's packed linear (a build with mkldnn; torch's CPU wheels have it)."""
    ops = getattr(torch.ops, "mkldnn", None)
    return (
        torch.backends.mkldnn.is_available()
        and ops is not None
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


def packable_dtypes() -> frozenset[torch.dtype]:
    """The weight dtypes oneDNN multiplies on this CPU: float32, and bfloat16 where the CPU has its instructions."""
    if not can_pack():
        return frozenset()
    bf16 = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)()
    return frozenset({torch.float32, torch.bfloat16} if bf16 else {torch.float32})


class PackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` on a CPU that multiplies inputs of ``min_rows`` to :data:`FEW_ROWS` rows through oneDNN with
    a prepacked weight, and others as ``nn.Linear`` does. Shares ``linear``'s parameters and forward hooks."""

    def __init__(self, linear: torch.nn.Linear, min_rows: int = 1) -> None:
        torch.nn.Module.__init__(self)  # nn.Linear's own __init__ would allocate a new weight
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self.min_rows = min_rows
        # Hooks on the layer go with it (the float32 head's cast of its input, say).
        self._forward_pre_hooks.update(linear._forward_pre_hooks)
        self._forward_hooks.update(linear._forward_hooks)
        # A plain attribute, not a buffer: an mkldnn tensor has no storage for state_dict or .to() to handle.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.min_rows * self.in_features <= x.numel() < FEW_ROWS * self.in_features:
            return self.packed_product(x)
        return torch.nn.functional.linear(x, self.weight, self.bias)

    def packed_product(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")


def pack_linears(model: torch.nn.Module, min_rows: int | None = None) -> int:
    """Replace every ``nn.Linear`` on the CPU in ``model`` whose dtype oneDNN multiplies here by a
    :class:`PackedLinear`; how many were. ``min_rows``: the fewest rows to multiply packed; None: timed here, so
    call it on the thread that will run the model (another thread's torch work slows both sides unevenly)."""
    dtypes = packable_dtypes()
    swaps = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear and child.weight.dtype in dtypes and child.weight.device.type == "cpu"
    ]
    with torch.no_grad():
        packed = [PackedLinear(child) for _, _, child in swaps]
        chosen = min_rows if min_rows is not None else fewest_packed_rows(packed[:8]) if packed else 1
        for (parent, name, _), layer in zip(swaps, packed, strict=True):
            layer.min_rows = chosen
            setattr(parent, name, layer)
    if swaps:
        log.info("packed %d linear layers for products of %d to %d rows", len(swaps), chosen, FEW_ROWS - 1)
    return len(swaps)


def fewest_packed_rows(layers: list[PackedLinear]) -> int:
    """The fewest rows, of 1, 2, 4 and 8, at which ``layers`` multiply faster packed than through MKL (else 16)."""
    for rows in _TRIED_ROWS:
        if time_products(layers, rows, packed=True) < time_products(layers, rows, packed=False):
            return rows
    return 2 * _TRIED_ROWS[-1]


def time_products(layers: list[PackedLinear], rows: int, packed: bool, rounds: int = 5, per_round: int = 10) -> float:
    """Seconds of the best of ``rounds`` rounds of ``per_round`` passes over ``layers`` with inputs of ``rows`` rows,
    packed or through MKL. The best, so that a noisy moment on a shared machine does not decide (a model's first
    layer takes under a millisecond a pass)."""
    inputs = [torch.randn(rows, layer.in_features, dtype=layer.weight.dtype) for layer in layers]

    def one_pass() -> None:
        for layer, x in zip(layers, inputs, strict=True):
            if packed:
                layer.packed_product(x)
            else:
                torch.nn.functional.linear(x, layer.weight, layer.bias)

    with torch.inference_mode():
        one_pass()  # the first call of a shape sets oneDNN's kernel up
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(per_round):
                one_pass()
            best = min(best, time.perf_counter() - start)
    return best
