"""``attune eval``: start or reach a server, run the episodes, write the outputs, print the tables."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from attune_client.errors import AttuneError
from attune_client.http import AsyncAttuneClient
from attune_client.wire import PersonaPublic
from env_server.evaluation.html_report import html_report
from env_server.evaluation.policies import EvalPolicy, PolicySpecError, load_policies
from env_server.evaluation.report import markdown_report, summarize
from env_server.evaluation.runner import EvalOutcome, TrajectoryLog, evaluate, record_key
from env_server.evaluation.server import ServerStartError, spawn_server

__all__ = ["run_eval"]

_SERVER_FLAGS = {
    "backend": "ATTUNE_BACKEND",
    "model": "ATTUNE_MODEL",
    "device": "ATTUNE_DEVICE",
    "max_turns": "ATTUNE_MAX_TURNS",
    "reward_mode": "ATTUNE_REWARD_MODE",
    "temperature": "ATTUNE_TEMPERATURE",
}


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _server_env(args: argparse.Namespace) -> dict[str, str]:
    env = {var: str(value) for name, var in _SERVER_FLAGS.items() if (value := getattr(args, name, None)) is not None}
    if args.packs:
        env["ATTUNE_PACKS"] = ",".join(str(Path(path).resolve()) for path in args.packs)
    return env


def _select(personas: list[PersonaPublic], wanted: str | None) -> list[PersonaPublic]:
    if not wanted:
        return personas
    ids = [part.strip() for part in wanted.split(",") if part.strip()]
    known = {persona.id: persona for persona in personas}
    unknown = [persona_id for persona_id in ids if persona_id not in known]
    if unknown:
        raise ValueError(f"unknown personas: {', '.join(unknown)}; the server has {len(known)}: {', '.join(known)}")
    return [known[persona_id] for persona_id in dict.fromkeys(ids)]


async def _run(
    url: str, policies: list[EvalPolicy], args: argparse.Namespace, log: TrajectoryLog
) -> tuple[EvalOutcome, list[PersonaPublic], str | None]:
    try:
        async with AsyncAttuneClient(url, timeout=300.0) as client:
            async with httpx.AsyncClient() as http:
                backend = (await http.get(f"{url}/readyz", timeout=10)).json().get("backend")
            personas = _select(await client.list_personas(), args.personas)
            outcome = await evaluate(
                client,
                policies,
                personas,
                args.seeds,
                log,
                concurrency=args.concurrency,
                max_turns=args.max_turns,
                progress=not args.no_progress,
            )
    finally:
        for policy in policies:
            await policy.aclose()
    return outcome, personas, backend


def _write_outputs(out: Path, summary: dict[str, Any], records: list[dict[str, Any]]) -> str:
    markdown = markdown_report(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(markdown, encoding="utf-8")
    (out / "report.html").write_text(html_report(summary, records), encoding="utf-8")
    return markdown


def run_eval(args: argparse.Namespace, make_settings: Callable[[argparse.Namespace], object]) -> int:
    """Run ``attune eval`` with parsed arguments; returns the exit status.

    Args:
        args: The parsed command line.
        make_settings: Builds server Settings from the flags; called only to check them before a server starts.
    """
    if args.seeds < 1 or args.concurrency < 1:
        _say("attune eval: --seeds and --concurrency must be at least 1")
        return 2
    try:
        policies = load_policies(args.policies, api_key=os.environ.get("OPENAI_API_KEY"))
    except PolicySpecError as exc:
        _say(f"attune eval: {exc}")
        return 2
    server: AbstractContextManager[str]
    if args.url:
        server = nullcontext(args.url.rstrip("/"))
    else:
        try:
            make_settings(args)
        except ValidationError as exc:
            _say(f"attune eval: invalid server settings:\n{exc}")
            return 2
        _say("attune eval: starting a server (attune serve, a child process)...")
        server = spawn_server(_server_env(args))
    out = Path(args.out)
    started = time.perf_counter()
    try:
        with server as url, TrajectoryLog(out / "trajectories.jsonl") as log:
            outcome, personas, backend = asyncio.run(_run(url, policies, args, log))
            wanted = {
                (p.name, persona.id, seed) for p in policies for persona in personas for seed in range(args.seeds)
            }
            records = [record for key, record in log.read().items() if key in wanted]
    except (ServerStartError, AttuneError, ValueError, RuntimeError) as exc:
        _say(f"attune eval: {exc}")
        return 1
    seconds = time.perf_counter() - started
    records.sort(key=record_key)
    summary = summarize(
        records,
        policies=[policy.name for policy in policies],
        backend=backend,
        packs=sorted({persona.pack for persona in personas}),
        seeds=args.seeds,
        expected_episodes=len(wanted),
    )
    print(_write_outputs(out, summary, records), end="")
    _say(
        f"attune eval: {outcome.ran} episodes run, {outcome.skipped} already in {log.path}, {seconds:.1f} s; "
        f"wrote summary.json, summary.md and report.html to {out}"
    )
    if outcome.errors:
        (policy, persona_id, seed), message = outcome.errors[0]
        _say(
            f"attune eval: stopped after a failure in {policy} / {persona_id} / seed {seed}: {message}\n"
            f"{len(wanted) - len(records)} episodes missing; run the same command again to resume."
        )
        return 1
    return 0
