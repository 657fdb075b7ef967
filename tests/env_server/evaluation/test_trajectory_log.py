"""``trajectories.jsonl``: append-only, torn tails dropped, one writer at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from env_server.evaluation.runner import TrajectoryLog


def line(policy: str, seed: int) -> str:
    return json.dumps({"policy": policy, "persona_id": "p", "seed": seed, "final_emotion": seed}) + "\n"


def test_records_are_appended_one_line_each_and_read_back_by_key(tmp_path: Path) -> None:
    path = tmp_path / "out" / "trajectories.jsonl"
    with TrajectoryLog(path) as log:
        log.append({"policy": "a", "persona_id": "p", "seed": 0, "final_emotion": 1})
        log.append({"policy": "a", "persona_id": "p", "seed": 1, "final_emotion": 2})
        log.append({"policy": "a", "persona_id": "p", "seed": 0, "final_emotion": 3})
        assert path.read_text().count("\n") == 3
        records = log.read()
    assert set(records) == {("a", "p", 0), ("a", "p", 1)}
    assert records[("a", "p", 0)]["final_emotion"] == 3


def test_a_torn_last_line_is_dropped_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    path.write_text(line("a", 0) + line("a", 1)[:20])
    with TrajectoryLog(path) as log:
        assert set(log.read()) == {("a", "p", 0)}
        log.append(json.loads(line("a", 2)))
    assert path.read_text() == line("a", 0) + line("a", 2)


def test_garbage_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    path.write_text(line("a", 0) + "not json\n" + '{"no": "key"}\n' + "\n" + line("b", 0))
    with TrajectoryLog(path) as log:
        assert set(log.read()) == {("a", "p", 0), ("b", "p", 0)}


def test_two_writers_cannot_share_a_folder(tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    with TrajectoryLog(path), pytest.raises(RuntimeError, match="another evaluation is writing"):
        TrajectoryLog(path).__enter__()
    with TrajectoryLog(path):
        pass
