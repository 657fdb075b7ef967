"""Summary numbers, tables and the HTML page, from hand-made trajectory records."""

from __future__ import annotations

import re

import pytest

from env_server.evaluation.html_report import html_report
from env_server.evaluation.report import markdown_report, summarize, tables


def record(policy: str, persona: str, seed: int, emotions: list[int], **extra) -> dict:
    final = emotions[-1]
    base = {
        "policy": policy,
        "persona_id": persona,
        "seed": seed,
        "intention_type": "vent",
        "difficulty": "easy",
        "pack": "default",
        "emotions": emotions,
        "final_emotion": final,
        "success": final >= 100,
        "failure": final < 10,
        "turns": len(emotions) - 1,
        "max_turns": 4,
        "termination_reason": "max_turns",
        "rewards": [0.0] * (len(emotions) - 2) + [final / 100],
        "return": final / 100,
        "integrity_violations": 0,
        "endorsed_claims": [],
        "grounding": {"questions": 1, "open_questions": 1, "reflections": 0, "advice": 0, "premature_advice": 0},
        "transcript": [],
    }
    return {**base, **extra}


RECORDS = [
    record("kind", "p1", 0, [40, 60, 80, 100], termination_reason="goal_reached"),
    record("kind", "p1", 1, [40, 50, 60, 70, 80]),
    record("kind", "p2", 0, [40, 50, 60, 70, 60], difficulty="hard"),
    record("kind", "p2", 1, [40, 50, 60, 70, 40], difficulty="hard"),
    record("rude", "p1", 0, [40, 20, 5], termination_reason="user_left"),
    record("rude", "p1", 1, [40, 30, 20, 10, 9], termination_reason="user_left"),
    record(
        "rude",
        "p2",
        0,
        [40, 30, 20, 30, 30],
        difficulty="hard",
        intention_type="false_belief",
        integrity_violations=2,
        endorsed_claims=[{"turn": 1, "claim": "Sugar makes kids hyper.", "reason": "agreed"}] * 2,
        transcript=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "So true!"}],
    ),
    record("rude", "p2", 1, [40, 30, 20, 30, 30], difficulty="hard", intention_type="false_belief"),
]


def summary(records=RECORDS, **overrides) -> dict:
    options = {"policies": ["rude", "kind"], "backend": "heuristic", "packs": ["default"], "seeds": 2}
    return summarize(records, **{**options, **overrides})


def test_sage_score_successes_failures_and_spread_across_seeds() -> None:
    result = summary()
    assert (result["episodes"], result["expected_episodes"], result["complete"]) == (8, 8, True)
    assert list(result["policies"]) == ["rude", "kind"]
    kind, rude = result["policies"]["kind"], result["policies"]["rude"]
    assert kind["score"] == pytest.approx((100 + 80 + 60 + 40) / 4)
    assert (kind["successes"], kind["failures"], kind["mean_turns"]) == (1, 0, 3.75)
    # per-seed means: seed 0 (100 + 60) / 2 = 80, seed 1 (80 + 40) / 2 = 60; their sample sd is 14.142
    assert kind["score_by_seed"] == {"0": 80.0, "1": 60.0}
    assert kind["score_sd_across_seeds"] == pytest.approx(14.142, abs=1e-3)
    assert kind["mean_reward"] == pytest.approx(0.7)
    assert (rude["failures"], rude["integrity_violations"], rude["episodes_with_violations"]) == (2, 2, 1)
    assert rude["termination"] == {"max_turns": 2, "user_left": 2}
    assert rude["by_intention_type"] == {
        "vent": {"score": 7.0, "n": 2, "successes": 0, "failures": 2},
        "false_belief": {"score": 30.0, "n": 2, "successes": 0, "failures": 0},
    }
    assert list(kind["by_difficulty"]) == ["easy", "hard"]
    assert rude["false_belief"]["integrity_violations"] == 2
    assert "false_belief" not in kind
    assert kind["grounding_per_turn"]["questions"] == pytest.approx(4 / 15, abs=1e-3)


def test_order_of_records_does_not_change_the_summary() -> None:
    assert summary(list(reversed(RECORDS))) == summary()


def test_one_seed_has_no_spread_and_missing_episodes_mark_it_incomplete() -> None:
    result = summary([r for r in RECORDS if r["seed"] == 0], seeds=1, expected_episodes=6)
    assert result["policies"]["kind"]["score_sd_across_seeds"] is None
    assert result["complete"] is False
    assert "incomplete: 6 asked for" in markdown_report(result)


def test_tables_rank_by_score_and_include_false_belief_integrity() -> None:
    leaderboard, by_type, by_difficulty, false_belief = tables(summary())
    assert leaderboard.headers[:2] == ["policy", "score"]
    assert {"successes", "failures", "mean turns", "integrity violations"} <= set(leaderboard.headers)
    assert [row[0] for row in leaderboard.rows] == ["kind", "rude"]
    # kind met p2 as a vent persona, rude as a false-belief one: n differs, so it moves into the cells
    assert by_type.headers == ["policy", "vent", "false_belief (n=2)"]
    assert by_type.rows == [["kind", "70.0 (n=4)", "–"], ["rude", "7.0 (n=2)", "30.0"]]
    assert by_difficulty.headers == ["policy", "easy (n=2)", "hard (n=2)"]
    assert false_belief.rows == [["rude", "2", "30.0", "2", "1"]]
    text = markdown_report(summary())
    assert "| kind | 70.0 | 14.1 | 1 | 0 | 3.8 | 0.700 | 0 |" in text


def test_html_report_is_one_self_contained_page() -> None:
    page = html_report(summary(), RECORDS)
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<img src="data:image/png;base64,') == 4
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page
    assert "Sugar makes kids hyper." in page and "So true!" in page


def test_html_report_survives_no_records() -> None:
    page = html_report(summary([], expected_episodes=8), [])
    assert "Incomplete" in page and "<img" not in page
