"""Time one decoding step's linear products of the bundled SmolLM2 through MKL and through oneDNN's packed weights.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_linear.py [--dtype bfloat16] [--rows 1,16,256,1024]

Prints, per row count, the milliseconds of all the model's linear layers (30 x 7 and the head) each way and their
ratio, measured in this one run. The figures in ``env_server/llm/linear.py`` and docs/sizing.md come from it.
"""

from __future__ import annotations

import argparse

import torch

from env_server.llm.linear import PackedLinear, time_products
from env_server.llm.transformers_backend import TransformersChatModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rows", default="1,2,4,16,256,1024")
    args = parser.parse_args()
    chat = TransformersChatModel(dtype=args.dtype, max_batch_size=1, pack_weights=False)
    linears = [module for module in chat.model.modules() if type(module) is torch.nn.Linear]
    dtype = getattr(torch, args.dtype)

    def measure() -> None:
        layers = [PackedLinear(linear) for linear in linears if linear.weight.dtype == dtype]
        print(f"{len(layers)} linear layers in {args.dtype}, {torch.get_num_threads()} threads")
        print(f"{'rows':>6} {'MKL ms':>9} {'packed ms':>10} {'MKL / packed':>13}")
        for rows in (int(part) for part in args.rows.split(",")):
            dense, packed = (1000 * time_products(layers, rows, packed=side, per_round=1) for side in (False, True))
            print(f"{rows:>6} {dense:>9.1f} {packed:>10.1f} {dense / packed:>12.2f}x")

    # On the model's own thread, as it serves: a second thread's torch work slows both sides (see the backend).
    chat.scheduler.run_on_worker(measure)


if __name__ == "__main__":
    main()
