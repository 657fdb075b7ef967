"""Run policies x personas x seeds through the HTTP API, and keep every finished episode on disk at once.

Each finished episode is one JSON line of ``trajectories.jsonl``, written and flushed when it ends, so an
interrupted evaluation loses only the episodes in flight; the next run reads the file and skips every
(policy, persona, seed) it already holds. A last line cut off mid-write is dropped before appending.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from attune_client.errors import AttuneError
from attune_client.http import AsyncAttuneClient
from attune_client.wire import PersonaPublic
from env_server.evaluation.policies import EvalPolicy, PolicyError

__all__ = [
    "FAILURE_EMOTION",
    "SUCCESS_EMOTION",
    "EpisodeKey",
    "EvalOutcome",
    "TrajectoryLog",
    "evaluate",
    "plan",
    "record_key",
    "run_episode",
]

EpisodeKey = tuple[str, str, int]
"""(policy name, persona id, seed): what identifies an episode of an evaluation."""

SUCCESS_EMOTION = 100
"""SAGE: a dialogue succeeds when the emotion reaches 100..."""
FAILURE_EMOTION = 10
"""... and fails when it falls below 10."""

_logger = logging.getLogger("attune.eval")


def record_key(record: dict[str, Any]) -> EpisodeKey:
    """The key of a trajectory record."""
    return record["policy"], record["persona_id"], int(record["seed"])


class TrajectoryLog:
    """``trajectories.jsonl``: one finished episode a line, appended and flushed one at a time.

    Open it as a context manager; it holds an exclusive lock on the file meanwhile, so that two
    evaluations cannot write into one folder at once.
    """

    def __init__(self, path: Path) -> None:
        """Name the file; nothing is opened yet."""
        self.path = path
        self._file: TextIO | None = None

    def __enter__(self) -> TrajectoryLog:
        """Open (creating it), lock, and drop a torn last line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise RuntimeError(f"another evaluation is writing {self.path}") from None
        self._drop_torn_tail()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Unlock and close."""
        if self._file is not None:
            self._file.close()  # closing releases the lock
            self._file = None

    def _drop_torn_tail(self) -> None:
        assert self._file is not None
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            _logger.warning("dropping an incomplete last line of %s (%d bytes)", self.path, len(data) - keep)
            self._file.truncate(keep)

    def read(self) -> dict[EpisodeKey, dict[str, Any]]:
        """Every complete record by key (the last one wins); lines that do not parse are skipped with a warning."""
        records: dict[EpisodeKey, dict[str, Any]] = {}
        if not self.path.exists():
            return records
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    records[record_key(record)] = record
                except (ValueError, KeyError, TypeError):
                    _logger.warning("%s:%d is not a trajectory record; skipped", self.path, number)
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line and flush it to the operating system."""
        assert self._file is not None, "use TrajectoryLog as a context manager"
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()


async def run_episode(
    client: AsyncAttuneClient,
    policy: EvalPolicy,
    persona: PersonaPublic,
    seed: int,
    max_turns: int | None = None,
) -> dict[str, Any]:
    """Play one episode to its end and return its trajectory record (the episode is then deleted)."""
    started = time.perf_counter()
    created = await client.create_episode(persona_id=persona.id, seed=seed, max_turns=max_turns)
    episode_id, observation, info = created.episode_id, created.observation, created.info
    emotions = [info.emotion]
    transcript: list[dict[str, Any]] = [{"role": "user", "content": observation, "emotion": info.emotion}]
    history: list[tuple[str, str]] = []
    rewards: list[float] = []
    endorsed: list[dict[str, Any]] = []
    grounding = {"questions": 0, "open_questions": 0, "reflections": 0, "advice": 0, "premature_advice": 0}
    violations = 0
    try:
        while True:
            action = await policy.reply(observation, history, seed)
            result = await client.step(episode_id, action)
            history += [("user", observation), ("assistant", action)]
            observation, info = result.observation, result.info
            emotions.append(info.emotion)
            rewards.append(result.reward)
            transcript += [
                {"role": "assistant", "content": action},
                {"role": "user", "content": observation, "emotion": info.emotion},
            ]
            components = info.reward_components
            if components is not None:
                violations += len(components.endorsed_claims)
                endorsed += [{"turn": info.turn, **claim.model_dump()} for claim in components.endorsed_claims]
                acts = components.grounding
                grounding["questions"] += acts.questions
                grounding["open_questions"] += acts.open_questions
                grounding["reflections"] += acts.reflections
                grounding["advice"] += acts.advice
                grounding["premature_advice"] += int(acts.premature_advice)
            if result.terminated or result.truncated:
                break
    finally:
        try:
            await client.delete_episode(episode_id)
        except AttuneError:
            pass  # the server forgets it after its TTL anyway
    final = info.emotion
    return {
        "policy": policy.name,
        "persona_id": persona.id,
        "seed": seed,
        "intention_type": persona.intention_type.value,
        "difficulty": persona.difficulty.value,
        "pack": persona.pack,
        "emotions": emotions,
        "final_emotion": final,
        "success": final >= SUCCESS_EMOTION,
        "failure": final < FAILURE_EMOTION,
        "turns": info.turn,
        "max_turns": info.max_turns,
        "termination_reason": info.termination_reason.value if info.termination_reason else None,
        "rewards": rewards,
        "return": sum(rewards),
        "integrity_violations": violations,
        "endorsed_claims": endorsed,
        "grounding": grounding,
        "transcript": transcript,
        "seconds": round(time.perf_counter() - started, 3),
    }


@dataclass
class EvalOutcome:
    """What :func:`evaluate` did: episodes run now, episodes skipped as already done, and the failures."""

    ran: int = 0
    skipped: int = 0
    errors: list[tuple[EpisodeKey, str]] = field(default_factory=list)


def plan(policies: Iterable[EvalPolicy], personas: Iterable[PersonaPublic], seeds: int) -> list[tuple]:
    """Every (policy, persona, seed), seed-major, so that an interrupted run has covered policies evenly."""
    personas, policies = list(personas), list(policies)
    return [(policy, persona, seed) for seed in range(seeds) for persona in personas for policy in policies]


async def evaluate(
    client: AsyncAttuneClient,
    policies: list[EvalPolicy],
    personas: list[PersonaPublic],
    seeds: int,
    log: TrajectoryLog,
    *,
    concurrency: int = 8,
    max_turns: int | None = None,
    progress: bool = True,
) -> EvalOutcome:
    """Run every episode that ``log`` does not hold yet, ``concurrency`` at a time, appending each as it ends.

    The first failure (after the client's own retries) stops the evaluation: no new episode starts, those
    in flight finish and are kept, and the failure is reported in the outcome. Failures here are seldom
    one-off (a server gone, a policy with a bug), and a rerun resumes where this one stopped.
    """
    done = set(log.read())
    work = plan(policies, personas, seeds)
    pending = [item for item in work if (item[0].name, item[1].id, item[2]) not in done]
    outcome = EvalOutcome(skipped=len(work) - len(pending))
    queue: asyncio.Queue = asyncio.Queue()
    for item in pending:
        queue.put_nowait(item)
    bar = tqdm(total=len(work), initial=outcome.skipped, unit="episode", desc="eval", disable=not progress)

    async def worker() -> None:
        while not queue.empty():
            policy, persona, seed = queue.get_nowait()
            try:
                record = await run_episode(client, policy, persona, seed, max_turns)
            except (AttuneError, PolicyError) as exc:
                outcome.errors.append(((policy.name, persona.id, seed), f"{type(exc).__name__}: {exc}"))
                while not queue.empty():
                    queue.get_nowait()
            else:
                log.append(record)
                outcome.ran += 1
            bar.update()

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(pending))))))
    finally:
        bar.close()
    return outcome
