"""The ``attune`` command: serve, personas, demo, score."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    # Flags default to None so that only the ones given override ATTUNE_* environment variables.
    parser.add_argument(
        "--backend", choices=["transformers", "openai", "heuristic"], help="simulator backend [transformers]"
    )
    parser.add_argument("--openai-base-url", help="OpenAI-compatible server for --backend openai")
    parser.add_argument("--openai-model", help="model name on that server")
    parser.add_argument("--model", help="HF model directory or GGUF file [bundled SmolLM2-135M-Instruct]")
    parser.add_argument("--device", help="torch device: cpu, cuda, cuda:1 [cpu]")
    parser.add_argument("--packs", action="append", help="persona pack file or folder (repeatable) [personas/]")
    parser.add_argument("--max-turns", type=int, help="supporter turns before truncation [10]")
    parser.add_argument("--reward-mode", choices=["terminal", "dense"], help="default reward mode [terminal]")
    parser.add_argument("--temperature", type=float, help="simulator sampling temperature, 0 = greedy [0.7]")
    parser.add_argument("--store", help="episode store: memory or redis://host:port/db [memory]")


class _InvalidSettings(Exception):
    """A flag or ATTUNE_* variable out of range; its message names each setting and what is wrong."""


def _settings(args: argparse.Namespace, **extra: object):
    from pydantic import ValidationError

    from env_server.settings import Settings

    given = {
        name: value
        for name in (
            "backend",
            "model",
            "device",
            "packs",
            "max_turns",
            "reward_mode",
            "temperature",
            "host",
            "port",
            "openai_base_url",
            "openai_model",
            "store",
            "transcript_window",
        )
        if (value := getattr(args, name, None)) is not None
    }
    try:
        return Settings(**given, **extra)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise _InvalidSettings(f"attune: invalid settings: {problems}") from None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from env_server.app import create_app

    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Access lines are logged at info: above it, uvicorn would still format each one and then drop it.
    access_log = settings.log_level.lower() in ("trace", "debug", "info")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=access_log,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from env_server.demo import run_demo

    return run_demo(args, _settings)


def _bench(args: argparse.Namespace) -> int:
    from env_server.bench import main as bench

    return bench(args)


def _eval(args: argparse.Namespace) -> int:
    from env_server.evaluation import run_eval

    return run_eval(args, _settings)


def _personas(args: argparse.Namespace) -> int:
    from env_server.personas import commands

    if args.personas_command == "validate":
        return commands.validate(args.paths)
    if args.personas_command == "list":
        return commands.list_personas(args.paths or [str(commands.default_packs_path())])
    if args.personas_command == "import":
        from env_server.personas.importers import import_command

        return import_command(args.format, args.input, args.output)
    return commands.schema()


def _score(args: argparse.Namespace) -> int:
    from env_server.scoring import score_command

    return score_command(args.format, args.input, _settings(args), seed=args.seed, as_json=args.json, out_path=args.out)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``attune``."""
    from env_server.settings import DtypeName

    parser = argparse.ArgumentParser(prog="attune", description="Sentient-agent environments for empathy RL.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    _add_server_flags(serve)
    serve.add_argument("--host", help="interface to bind [127.0.0.1]")
    serve.add_argument("--port", type=int, help="port to bind [8000]")
    serve.set_defaults(run=_serve)

    demo = sub.add_parser("demo", help="run a few episodes with built-in policies through the Gymnasium client")
    _add_server_flags(demo)
    demo.add_argument("--url", help="use a running server instead of starting one in-process")
    demo.add_argument("--episodes", type=int, default=2, help="episodes per policy [2]")
    demo.add_argument("--policies", default="empathic,solution-dumping", help="comma-separated built-in policies")
    demo.add_argument("--seed", type=int, default=0, help="first episode seed [0]")
    demo.add_argument("--all-personas", action="store_true", help="one episode per persona of the served packs")
    demo.add_argument("--quiet", action="store_true", help="print only the summary")
    demo.set_defaults(run=_demo)

    bench = sub.add_parser("bench", help="measure steps/s, tokens/s and latency through the HTTP API")
    bench.add_argument("--backend", choices=["transformers", "heuristic"], default="transformers")
    bench.add_argument("--model", help="HF model directory or GGUF file [bundled SmolLM2]")
    bench.add_argument("--device", help="torch device [cpu]")
    bench.add_argument("--dtype", choices=[name.value for name in DtypeName], help="torch dtype of the model [float32]")
    bench.add_argument("--url", help="measure a running server instead of starting one (no unbatched comparison)")
    bench.add_argument("--concurrency", default="1,4,16,32", help="comma-separated levels [1,4,16,32]")
    bench.add_argument("--steps", type=int, default=64, help="env steps per level [64]")
    bench.add_argument("--unbatched-steps", type=int, help="env steps per level for the unbatched engine [--steps]")
    bench.add_argument("--no-unbatched", action="store_true", help="skip the unbatched comparison")
    bench.add_argument("--max-turns", type=int, default=10, help="episode length [10]")
    bench.add_argument("--stores", help="comma-separated stores to compare, e.g. memory,redis://127.0.0.1:6379/0")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.set_defaults(run=_bench)

    builtin = "builtin:empathic,builtin:solution-dumping,builtin:dismissive,builtin:sycophantic"
    evaluate = sub.add_parser("eval", help="SAGE-style evaluation: policies x personas x seeds, tables and a report")
    _add_server_flags(evaluate)
    evaluate.add_argument("--url", help="use a running server instead of starting one (a child process)")
    evaluate.add_argument(
        "--policies",
        default=builtin,
        help="comma-separated: builtin:NAME, openai:MODEL@BASE_URL (key from OPENAI_API_KEY), module:function "
        "[the four built-ins]",
    )
    evaluate.add_argument("--seeds", type=int, default=3, help="seeds 0..K-1 per persona and policy [3]")
    evaluate.add_argument("--out", required=True, help="output folder; an existing trajectories.jsonl is resumed")
    evaluate.add_argument("--concurrency", type=int, default=8, help="episodes in flight at once [8]")
    evaluate.add_argument("--personas", help="comma-separated persona ids [every persona the server serves]")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=_eval)

    personas = sub.add_parser("personas", help="validate, list or describe persona packs")
    psub = personas.add_subparsers(dest="personas_command", required=True)
    validate = psub.add_parser("validate", help="check pack files; every error names file, line and field")
    validate.add_argument("paths", nargs="+", help="pack files or folders")
    listing = psub.add_parser("list", help="table of personas")
    listing.add_argument("paths", nargs="*", help="pack files or folders [personas/]")
    psub.add_parser("schema", help="JSON Schema of a pack file, for editors")
    importer = psub.add_parser("import", help="turn SAGE or RLVER profile JSONL into a pack")
    importer.add_argument("--format", required=True, choices=["sage", "rlver"], help="source format")
    importer.add_argument("input", help="profile file (JSONL)")
    importer.add_argument("-o", "--output", required=True, help="pack file to write (YAML)")
    personas.set_defaults(run=_personas)

    score = sub.add_parser("score", help="appraise recorded dialogues in-process; correlate with recorded emotion")
    score.add_argument("--format", required=True, choices=["attune", "sage"], help="transcript format")
    score.add_argument("input", help="ScoreRequest JSONL or exported episode JSON (attune); SAGE dialogue JSONL")
    score.add_argument("--backend", choices=["transformers", "heuristic"], help="simulator backend [transformers]")
    score.add_argument("--model", help="HF model directory or GGUF file [bundled SmolLM2-135M-Instruct]")
    score.add_argument("--device", help="torch device: cpu, cuda, cuda:1 [cpu]")
    score.add_argument("--packs", action="append", help="persona pack file or folder (repeatable) [personas/]")
    score.add_argument("--reward-mode", choices=["terminal", "dense"], help="reward mode of the totals [terminal]")
    score.add_argument("--temperature", type=float, help="simulator sampling temperature, 0 = greedy [0.7]")
    score.add_argument("--seed", type=int, help="simulator seed for every dialogue [the file's; 0 for SAGE]")
    score.add_argument(
        "--transcript-window",
        type=int,
        help="most recent messages the simulator reads per turn, for dialogues longer than its context [0 = all]",
    )
    score.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    score.add_argument("--out", help="write every full ScoreResponse here as JSONL")
    score.set_defaults(run=_score)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attune`` command."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except _InvalidSettings as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
