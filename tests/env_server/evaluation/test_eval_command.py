"""``attune eval`` end to end against a real heuristic server (the ``server_url`` fixture: max_turns=6)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from attune_client.policies import empathic
from env_server.cli import main
from env_server.embedded import serve_in_thread
from env_server.evaluation.server import ServerStartError, spawn_server

PERSONAS = "maya-overtime,vy-flu-antibiotics"
OUTPUTS = ("trajectories.jsonl", "summary.json", "summary.md", "report.html")
POLICY_KEYS = {
    "score",
    "successes",
    "failures",
    "mean_turns",
    "score_sd_across_seeds",
    "mean_reward",
    "integrity_violations",
    "by_intention_type",
    "by_difficulty",
}


def parrot(observation: str, history: list[tuple[str, str]]) -> str:
    """A ``module:function`` policy: repeats the person's words back."""
    return f"You said: {observation} (turn {sum(role == 'assistant' for role, _ in history) + 1})"


def broken(observation: str, history: list[tuple[str, str]]) -> str:
    raise RuntimeError("the policy's model crashed")


def run_eval(url: str, out: Path, *extra: str, policies: str = "builtin:empathic,builtin:dismissive") -> int:
    argv = ["eval", "--url", url, "--policies", policies, "--out", str(out), "--no-progress", *extra]
    return main(argv)


def episodes_created(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return float(re.search(r"^attune_episodes_created_total (\S+)$", text, re.MULTILINE).group(1))


def test_eval_writes_every_output(server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_eval(server_url, tmp_path, "--personas", PERSONAS, "--seeds", "2", "--concurrency", "3") == 0
    assert all((tmp_path / name).is_file() for name in OUTPUTS)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"backend", "packs", "seeds", "episodes", "policies"} <= set(summary)
    assert (summary["backend"], summary["packs"], summary["seeds"]) == ("heuristic", ["default"], 2)
    assert summary["episodes"] == 2 * 2 * 2 and summary["complete"]
    assert list(summary["policies"]) == ["empathic", "dismissive"]
    for entry in summary["policies"].values():
        assert POLICY_KEYS <= set(entry)
        assert entry["episodes"] == 4
        assert sum(group["n"] for group in entry["by_intention_type"].values()) == 4
        assert set(entry["by_intention_type"]) == {"vent", "false_belief"}
        assert 1 <= entry["mean_turns"] <= 6
    records = [json.loads(line) for line in (tmp_path / "trajectories.jsonl").read_text().splitlines()]
    assert len(records) == 8
    first = records[0]
    assert len(first["emotions"]) == first["turns"] + 1 == len(first["rewards"]) + 1
    assert first["final_emotion"] == first["emotions"][-1]
    assert len(first["transcript"]) == 2 * first["turns"] + 1
    assert {"intention_type", "difficulty", "termination_reason", "integrity_violations", "endorsed_claims"} <= set(
        first
    )
    assert set(first["grounding"]) == {"questions", "open_questions", "reflections", "advice", "premature_advice"}
    printed = capsys.readouterr().out
    assert printed == (tmp_path / "summary.md").read_text()
    for column in ("policy", "score", "successes", "failures", "mean turns", "integrity violations"):
        assert f" {column} |" in printed
    assert "Score by intention type" in printed and "Score by difficulty" in printed
    page = (tmp_path / "report.html").read_text()
    assert '<img src="data:image/png;base64,' in page
    assert not re.search(r"https?://", page)


def test_resume_runs_only_the_missing_episodes(server_url: str, tmp_path: Path) -> None:
    assert run_eval(server_url, tmp_path, "--personas", PERSONAS, "--seeds", "2") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    trajectories = tmp_path / "trajectories.jsonl"
    lines = trajectories.read_text().splitlines(keepends=True)
    dropped = [1, 4, 7]
    # As if interrupted: three episodes never written, the last one cut off mid-line.
    kept = [line for index, line in enumerate(lines) if index not in dropped]
    trajectories.write_text("".join(kept) + lines[7][: len(lines[7]) // 2])

    before = episodes_created(server_url)
    assert run_eval(server_url, tmp_path, "--personas", PERSONAS, "--seeds", "2") == 0
    assert episodes_created(server_url) - before == len(dropped)
    assert len(trajectories.read_text().splitlines()) == 8
    assert json.loads((tmp_path / "summary.json").read_text()) == summary

    before = episodes_created(server_url)
    assert run_eval(server_url, tmp_path, "--personas", PERSONAS, "--seeds", "2") == 0
    assert episodes_created(server_url) == before


def test_a_module_function_policy_from_this_module(server_url: str, tmp_path: Path) -> None:
    spec = f"{__name__}:parrot"
    assert run_eval(server_url, tmp_path, "--personas", "maya-overtime", "--seeds", "1", policies=spec) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert list(summary["policies"]) == [spec]
    record = json.loads((tmp_path / "trajectories.jsonl").read_text())
    assert record["policy"] == spec
    assert record["transcript"][1]["content"] == f"You said: {record['transcript'][0]['content']} (turn 1)"


@pytest.fixture
def fake_llm() -> Iterator[tuple[str, list[dict]]]:
    """An OpenAI-compatible endpoint that answers with the built-in empathic reply, recording each request."""
    app, requests = FastAPI(), []

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/chat/completions")
    def complete(body: dict) -> dict:
        requests.append(body)
        chat = body["messages"][1:]
        history = [(m["role"], m["content"]) for m in chat[:-1]]
        return {"choices": [{"message": {"role": "assistant", "content": empathic(chat[-1]["content"], history)}}]}

    with serve_in_thread(app) as url:
        yield url, requests


def test_an_openai_compatible_policy(server_url: str, tmp_path: Path, fake_llm: tuple[str, list[dict]]) -> None:
    llm_url, requests = fake_llm
    spec = f"openai:supporter-7b@{llm_url}"
    options = ["--personas", "maya-overtime", "--seeds", "2", "--max-turns", "3"]
    assert run_eval(server_url, tmp_path, *options, policies=f"{spec},builtin:empathic") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["policies"][spec]["score"] == summary["policies"]["empathic"]["score"]
    assert len(requests) == 2 * 3
    assert {r["seed"] for r in requests} == {0, 1}
    last = max(requests, key=lambda r: len(r["messages"]))
    assert [m["role"] for m in last["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]


def test_empathic_outscores_dismissive_on_the_default_pack(server_url: str, tmp_path: Path) -> None:
    assert run_eval(server_url, tmp_path, "--seeds", "1", "--concurrency", "16") == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["personas"] >= 32
    policies = summary["policies"]
    assert policies["empathic"]["score"] > policies["dismissive"]["score"]
    assert policies["empathic"]["failures"] < policies["dismissive"]["failures"]


def test_usage_errors(server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_eval(server_url, tmp_path, policies="builtin:kind") == 2
    assert "unknown built-in policy 'kind'" in capsys.readouterr().err
    assert run_eval(server_url, tmp_path, "--personas", "nobody") == 1
    assert "unknown personas: nobody" in capsys.readouterr().err
    assert run_eval(server_url, tmp_path, "--seeds", "0") == 2


def test_a_failing_policy_stops_the_run_and_keeps_what_finished(
    server_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = f"{__name__}:broken"
    options = ["--personas", "maya-overtime", "--seeds", "1", "--concurrency", "1"]
    assert run_eval(server_url, tmp_path, *options, policies=f"builtin:empathic,{spec}") == 1
    assert "stopped after a failure" in (err := capsys.readouterr().err) and "the policy's model crashed" in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["episodes"], summary["expected_episodes"], summary["complete"]) == (1, 2, False)


def test_without_url_a_child_server_is_started(tmp_path: Path) -> None:
    argv = ["eval", "--backend", "heuristic", "--max-turns", "2", "--seeds", "1", "--no-progress"]
    assert main([*argv, "--personas", "maya-overtime", "--policies", "empathic", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["backend"] == "heuristic" and summary["max_turns"] == 2


def test_a_child_server_that_cannot_start_says_why() -> None:
    with pytest.raises(ServerStartError, match="exited with status .*ATTUNE_BACKEND|backend"):
        with spawn_server({"ATTUNE_BACKEND": "no-such-backend"}, ready_timeout=60):
            pass
