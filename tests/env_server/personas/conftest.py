"""Shared helpers for the persona pack tests: the fixtures folder and a writer of valid packs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

PERSONA = """\
  - id: {id}
    name: {name}
    profile: Someone with a long week behind them.
    background: Their week went badly and they want to talk about it.
    hidden_intention: To be listened to without being fixed.
    intention_type: vent
    difficulty: {difficulty}
    initial_emotion: 35
    reactions:
      high: Talks freely.
      medium: Hesitates.
      low: Goes quiet.
      fit: Relaxes.
      miss: Pulls back.
"""

WritePack = Callable[..., Path]


def _pack_text(pack: str, ids: Sequence[str], difficulty: str = "normal") -> str:
    """A valid pack with one persona per id; persona k starts at line 3 + 14 * k."""
    body = "".join(PERSONA.format(id=i, name=i.title(), difficulty=difficulty) for i in ids)
    return f"pack: {pack}\npersonas:\n{body}"


@pytest.fixture
def pack_text() -> Callable[..., str]:
    """``pack_text(pack, ids, difficulty="normal")``: the text of a valid pack; persona k starts at line 3 + 14 * k."""
    return _pack_text


@pytest.fixture
def fixtures_dir() -> Path:
    return Path(__file__).parent / "fixtures"


@pytest.fixture
def write_pack(tmp_path: Path) -> WritePack:
    """Write a valid pack file under tmp_path and return its path."""

    def write(filename: str, pack: str, ids: Sequence[str], difficulty: str = "normal") -> Path:
        path = tmp_path / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_pack_text(pack, ids, difficulty), encoding="utf-8")
        return path

    return write
