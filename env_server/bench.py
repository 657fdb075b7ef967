"""``attune bench``: throughput of a server through its HTTP API, with ratios measured in one run.

For each concurrency level, that many workers each run episodes with a fixed scripted policy (the
built-in empathic one) through the HTTP API, starting a new episode when one ends. Per level it reports
env steps/s, simulator tokens/s (from the server's ``/metrics``), p50/p99 step latency seen by the client,
and the overhead share: the part of the client-observed step time that is not simulator time (HTTP,
validation, store). In the same run it measures the batched engine against the unbatched one (a second
server with ``ATTUNE_MAX_BATCH_SIZE=1``) and, with ``--stores``, one store against another.

Servers are started as child processes (unless ``--url``), so the load generator does not share a GIL
with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from attune_client.policies import empathic

__all__ = ["LevelResult", "main", "run_level"]


@dataclass
class LevelResult:
    """What one concurrency level measured."""

    concurrency: int
    steps: int
    seconds: float
    steps_per_s: float
    tokens_per_s: float
    tokens_per_step: float
    prompt_tokens_per_step: float
    """Prompt tokens the model computed per step (those served from its prefix cache not counted)."""
    prompt_cached_share: float
    """Share of the prompt tokens served from the prefix cache."""
    p50_ms: float
    p99_ms: float
    overhead_share: float


def _scrape(text: str) -> dict[str, float]:
    """Sums of the metrics the bench reads, over all label sets; prompt tokens by source."""
    wanted = ("attune_simulator_tokens_total", "attune_backend_seconds_sum", "attune_steps_total")
    totals = dict.fromkeys([*wanted, "prompt:cache", "prompt:computed"], 0.0)
    for line in text.splitlines():
        match = re.match(r'^(\w+)(?:\{(?:source="(\w+)")?[^}]*\})? ([0-9.eE+-]+)$', line)
        if not match:
            continue
        name, source, value = match.groups()
        if name in wanted:
            totals[name] += float(value)
        elif name == "attune_prompt_tokens_total" and f"prompt:{source}" in totals:
            totals[f"prompt:{source}"] += float(value)
    return totals


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class _Connection:
    """One keep-alive HTTP/1.1 connection that sends JSON and reads a ``Content-Length`` response.

    The load generator shares the machine with the server, and httpx spends more CPU per request than the
    heuristic server spends per step, so through httpx the bench mostly measured its own client.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, root: str) -> None:
        self._reader, self._writer, self._host, self._root = reader, writer, host, root

    @classmethod
    async def open(cls, url: str) -> _Connection:
        """Connect to the server at ``url`` (http or https; its path, if any, prefixes every request)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        secure = parts.scheme == "https"
        reader, writer = await asyncio.open_connection(
            parts.hostname, parts.port or (443 if secure else 80), ssl=secure
        )
        return cls(reader, writer, parts.netloc, parts.path.rstrip("/"))

    async def request(self, method: str, path: str, body: object = None) -> Any:
        """The decoded JSON answer (None when empty); RuntimeError on an error status."""
        payload = b"" if body is None else json.dumps(body).encode()
        self._writer.write(
            f"{method} {self._root}{path} HTTP/1.1\r\nhost: {self._host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        status_line, *header_lines = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
        if "chunked" in headers.get("transfer-encoding", ""):
            raise RuntimeError(f"{method} {path}: chunked responses are not supported")
        length = int(headers.get("content-length", 0))
        data = await self._reader.readexactly(length) if length else b""
        status = int(status_line.split(" ", 2)[1])
        if status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {status}: {data.decode(errors='replace')}")
        return json.loads(data) if data else None

    async def aclose(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


async def _worker(http: _Connection, steps: int, latencies: list[float], max_turns: int, seed: int) -> None:
    done = 0
    while done < steps:
        created = await http.request("POST", "/v1/episodes", {"seed": seed, "options": {"max_turns": max_turns}})
        episode, history, observation = (
            created["episode_id"],
            [("user", created["observation"])],
            created["observation"],
        )
        seed += 1
        finished = False
        while not finished and done < steps:
            action = empathic(observation, history)
            started = time.perf_counter()
            body = await http.request("POST", f"/v1/episodes/{episode}/step", {"action": action})
            latencies.append(time.perf_counter() - started)
            observation = body["observation"]
            history += [("assistant", action), ("user", observation)]
            finished = body["terminated"] or body["truncated"]
            done += 1
        await http.request("DELETE", f"/v1/episodes/{episode}")


async def run_level(url: str, concurrency: int, steps_per_worker: int, max_turns: int = 10) -> LevelResult:
    """Run one concurrency level against ``url``."""
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        before = _scrape((await http.get("/metrics")).text)
        connections = [await _Connection.open(url) for _ in range(concurrency)]
        latencies: list[float] = []
        started = time.perf_counter()
        try:
            await asyncio.gather(
                *(_worker(connections[i], steps_per_worker, latencies, max_turns, 1000 * i) for i in range(concurrency))
            )
        finally:
            seconds = time.perf_counter() - started
            for connection in connections:
                await connection.aclose()
        after = _scrape((await http.get("/metrics")).text)
    steps = len(latencies)
    tokens = after["attune_simulator_tokens_total"] - before["attune_simulator_tokens_total"]
    backend = after["attune_backend_seconds_sum"] - before["attune_backend_seconds_sum"]
    computed = after["prompt:computed"] - before["prompt:computed"]
    cached = after["prompt:cache"] - before["prompt:cache"]
    return LevelResult(
        concurrency=concurrency,
        steps=steps,
        seconds=round(seconds, 3),
        steps_per_s=round(steps / seconds, 3),
        tokens_per_s=round(tokens / seconds, 2),
        tokens_per_step=round(tokens / steps, 2) if steps else 0.0,
        prompt_tokens_per_step=round(computed / steps, 1) if steps else 0.0,
        prompt_cached_share=round(cached / (cached + computed), 4) if cached + computed else 0.0,
        p50_ms=round(1000 * _percentile(latencies, 0.5), 2),
        p99_ms=round(1000 * _percentile(latencies, 0.99), 2),
        overhead_share=round(max(0.0, 1 - backend / sum(latencies)), 4) if latencies else 0.0,
    )


@contextmanager
def _server(url: str | None, env: Mapping[str, str]) -> Iterator[str]:
    if url:
        yield url
        return
    from env_server.launcher import spawned_server

    with spawned_server(env, ready_timeout=600) as server:
        yield server.url


def _measure(url: str | None, env: Mapping[str, str], levels: list[int], steps: int, max_turns: int, label: str):
    results = []
    with _server(url, env) as base:
        for concurrency in levels:
            result = asyncio.run(run_level(base, concurrency, max(1, steps // concurrency), max_turns))
            # Progress goes to stderr: with --json, stdout carries the one JSON object only.
            print(
                f"  [{label}] concurrency {concurrency}: {result.steps_per_s:.2f} steps/s", file=sys.stderr, flush=True
            )
            results.append(result)
    return results


def _table(title: str, results: list[LevelResult]) -> str:
    lines = [
        title,
        f"{'conc':>5} {'steps':>6} {'steps/s':>9} {'tok/s':>8} {'tok/step':>9} {'prompt/step':>12} {'cached':>7}"
        f" {'p50 ms':>9} {'p99 ms':>9} {'overhead':>9}",
    ]
    for r in results:
        lines.append(
            f"{r.concurrency:>5} {r.steps:>6} {r.steps_per_s:>9.2f} {r.tokens_per_s:>8.1f} {r.tokens_per_step:>9.1f} "
            f"{r.prompt_tokens_per_step:>12.1f} {r.prompt_cached_share:>7.1%} "
            f"{r.p50_ms:>9.1f} {r.p99_ms:>9.1f} {r.overhead_share:>9.1%}"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Run the benchmark described by the parsed ``attune bench`` flags."""
    levels = [int(level) for level in args.concurrency.split(",")]
    stores = [store.strip() for store in args.stores.split(",")] if args.stores else ["memory"]
    base_env = {"ATTUNE_BACKEND": args.backend, "ATTUNE_LOG_LEVEL": "warning"}
    if args.model:
        base_env["ATTUNE_MODEL"] = args.model
    if args.device:
        base_env["ATTUNE_DEVICE"] = args.device
    if args.dtype:
        base_env["ATTUNE_DTYPE"] = args.dtype
    report: dict[str, object] = {"backend": args.backend, "steps_per_level": args.steps}
    if args.dtype and args.backend == "transformers" and not args.url:
        report["dtype"] = args.dtype  # only where it shaped the servers this run started

    by_store: dict[str, list[LevelResult]] = {}
    for store in stores:
        env = {**base_env, "ATTUNE_STORE": store}
        by_store[store] = _measure(args.url, env, levels, args.steps, args.max_turns, f"{store}, batched")
    results = by_store[stores[0]]
    report["levels"] = [asdict(r) for r in results]
    report["overhead_share"] = round(
        sum(r.overhead_share * r.steps for r in results) / max(1, sum(r.steps for r in results)), 4
    )

    unbatched: list[LevelResult] = []
    if args.backend == "transformers" and not args.url and not args.no_unbatched:
        env = {**base_env, "ATTUNE_STORE": stores[0], "ATTUNE_MAX_BATCH_SIZE": "1"}
        unbatched = _measure(None, env, levels, args.unbatched_steps or args.steps, args.max_turns, "unbatched")
        report["unbatched_levels"] = [asdict(r) for r in unbatched]
        report["batched_over_unbatched"] = {
            str(b.concurrency): round(b.steps_per_s / u.steps_per_s, 3) for b, u in zip(results, unbatched, strict=True)
        }
    if len(stores) > 1:
        report["stores"] = {store: [asdict(r) for r in rs] for store, rs in by_store.items()}
        report["store_ratio"] = {
            f"{store}/{stores[0]}": {
                str(a.concurrency): round(b.steps_per_s / a.steps_per_s, 3)
                for a, b in zip(by_store[stores[0]], by_store[store], strict=True)
            }
            for store in stores[1:]
        }

    if args.json:
        print(json.dumps(report))
        return 0
    for store, rs in by_store.items():
        print(_table(f"\n{args.backend} backend, {store} store, batched engine", rs))
    if unbatched:
        print(_table(f"\n{args.backend} backend, unbatched engine (ATTUNE_MAX_BATCH_SIZE=1)", unbatched))
        ratios = ", ".join(f"{c}: {r:.2f}x" for c, r in report["batched_over_unbatched"].items())
        print(f"\nbatched / unbatched steps/s by concurrency: {ratios}")
    for name, ratios in report.get("store_ratio", {}).items():
        print(f"\nsteps/s {name} by concurrency: " + ", ".join(f"{c}: {r:.2f}x" for c, r in ratios.items()))
    print(f"\noverhead share (HTTP + store + service, of client-observed step time): {report['overhead_share']:.1%}")
    if results:
        print(f"simulator tokens per env step: {statistics.mean(r.tokens_per_step for r in results):.1f}")
    return 0
