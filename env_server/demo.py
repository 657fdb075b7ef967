"""``attune demo``: a few episodes through the Gymnasium client with built-in policies, printed turn by turn."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import nullcontext
from statistics import mean, stdev

import gymnasium

import attune_client  # noqa: F401  (registers Attune-v0)
from attune_client.http import AttuneClient
from attune_client.policies import BUILTIN_POLICIES

__all__ = ["run_demo", "run_policy"]


def run_policy(
    env: gymnasium.Env, policy, seed: int, persona_id: str | None = None, echo: Callable[[str], None] = print
) -> tuple[int, int]:
    """One episode: returns (final emotion, supporter turns)."""
    observation, info = env.reset(seed=seed, options={"persona_id": persona_id} if persona_id else None)
    history: list[tuple[str, str]] = [("user", observation)]
    echo(f"  [{info['persona_id']}] user ({info['emotion']}): {observation}")
    done = False
    while not done:
        action = policy(observation, history)
        observation, reward, terminated, truncated, info = env.step(action)
        history += [("assistant", action), ("user", observation)]
        echo(f"    supporter: {action}")
        echo(f"    user ({info['emotion']}, {info['delta']:+d}, band {info['band']}): {observation}")
        done = terminated or truncated
    echo(f"  -> final emotion {info['emotion']} ({info['termination_reason']}), reward {reward:.2f}")
    return info["emotion"], info["turn"]


def run_demo(args: argparse.Namespace, make_settings: Callable[..., object]) -> int:
    """Run the demo against ``--url`` or an in-process server built from the flags."""
    names = [name.strip() for name in args.policies.split(",") if name.strip()]
    unknown = [name for name in names if name not in BUILTIN_POLICIES]
    if unknown:
        print(f"unknown policies: {', '.join(unknown)}; built-in: {', '.join(sorted(BUILTIN_POLICIES))}")
        return 2
    if args.url:
        server = nullcontext(args.url)
    else:
        from env_server.app import create_app
        from env_server.embedded import serve_in_thread

        server = serve_in_thread(create_app(make_settings(args)))
    finals: dict[str, list[int]] = {}
    timing: dict[str, tuple[float, int]] = {}
    echo = (lambda _: None) if args.quiet else print
    with server as url:
        env = gymnasium.make("Attune-v0", base_url=url)
        personas = [p.id for p in AttuneClient(url).list_personas()] if args.all_personas else [None] * args.episodes
        try:
            for name in names:
                print(f"== policy {name}")
                started, steps = time.perf_counter(), 0
                for episode, persona_id in enumerate(personas):
                    final, turns = run_policy(env, BUILTIN_POLICIES[name], args.seed + episode, persona_id, echo)
                    finals.setdefault(name, []).append(final)
                    steps += turns
                timing[name] = (time.perf_counter() - started, steps)
        finally:
            env.close()
    for name, values in finals.items():
        seconds, steps = timing[name]
        spread = f" (sd {stdev(values):.1f})" if len(values) > 1 else ""
        print(
            f"{name}: mean final emotion {mean(values):.1f}{spread} over {len(values)} episodes; "
            f"{steps} steps, {seconds / max(steps, 1):.3f} s per step (reset included)"
        )
    return 0
