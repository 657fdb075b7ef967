"""POST /v1/score against a real uvicorn on loopback (heuristic backend, default pack)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from attune_client.wire import ScoreResponse, StepResponse
from env_server.app import create_app
from env_server.embedded import serve_in_thread
from env_server.llm.heuristic import HeuristicSimulator
from env_server.llm.protocol import Appraisal, TurnContext
from env_server.scoring import read_attune_file
from env_server.settings import BackendName, Settings

REPLIES = (
    "That sounds exhausting. What's been the hardest part?",
    "It makes sense you're worn out. It sounds like you feel taken for granted.",
    "I hear you. How are you holding up tonight?",
)


@pytest.fixture
def http(server_url: str):
    with httpx.Client(base_url=server_url, timeout=30) as client:
        yield client


def body(persona_id: str = "maya-overtime", **extra) -> dict:
    messages = [{"role": "user", "content": "Eleven nights in fourteen days."}]
    for index, reply in enumerate(REPLIES):
        messages += [
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "Yeah.", "emotion": 45 + 5 * index},
        ]
    return {"persona_id": persona_id, "messages": messages, **extra}


def assert_error(response: httpx.Response, status: int, code: str, mentions: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and mentions in error["message"]


def episode_counts(http: httpx.Client) -> tuple[float, float]:
    text = http.get("/metrics").text
    created = re.search(r"^attune_episodes_created_total (\S+)$", text, re.MULTILINE)
    active = re.search(r"^attune_active_episodes (\S+)$", text, re.MULTILINE)
    assert created and active, text
    return float(created.group(1)), float(active.group(1))


def test_score_returns_the_trajectory_and_correlation(http: httpx.Client, catalog) -> None:
    response = http.post("/v1/score", json=body(seed=7))
    assert response.status_code == 200, response.text
    scored = ScoreResponse.model_validate(response.json())
    assert scored.persona_id == "maya-overtime" and len(scored.turns) == 3
    assert scored.emotions[0] == catalog.get("maya-overtime").initial_emotion
    assert [turn.recorded_emotion for turn in scored.turns] == [45, 50, 55]
    assert scored.correlation is not None and scored.correlation.n == 3
    assert scored.emotions[-1] > scored.emotions[0]


def test_score_creates_no_episode(http: httpx.Client) -> None:
    before = episode_counts(http)
    for request in (body(), body("nobody"), {"persona_id": "maya-overtime"}):
        http.post("/v1/score", json=request)
    assert episode_counts(http) == before


def test_unknown_persona_is_404(http: httpx.Client) -> None:
    assert_error(http.post("/v1/score", json=body("nobody")), 404, "persona_not_found", "'nobody'")


@pytest.mark.parametrize(
    ("request_body", "mentions"),
    [
        ({"persona_id": "maya-overtime"}, "messages: Field required"),
        ({**body(), "messages": [{"role": "user", "content": "hi"}]}, "at least 2 items"),
        ({**body(), "temperature": 0.3}, "temperature: Extra inputs are not permitted"),
        ({**body(), "messages": body()["messages"][1:]}, "messages[0] is an assistant message"),
        ({**body(), "messages": body()["messages"][:1] * 2}, "messages[1] is a second user message in a row"),
        ({**body(), "messages": [*body()["messages"][:1], {"role": "assistant", "content": "x" * 4001}]}, "4001"),
    ],
)
def test_malformed_requests_are_422(http: httpx.Client, request_body: dict, mentions: str) -> None:
    assert_error(http.post("/v1/score", json=request_body), 422, "invalid_request", mentions)


def test_scoring_an_exported_episode_reproduces_it(http: httpx.Client, tmp_path: Path) -> None:
    created = http.post("/v1/episodes", json={"persona_id": "maya-overtime", "seed": 21}).json()
    episode_id, steps = created["episode_id"], []
    for index in range(6):
        reply = REPLIES[index % 3] if index % 2 == 0 else "Just calm down, it's not a big deal."
        step = StepResponse.model_validate(http.post(f"/v1/episodes/{episode_id}/step", json={"action": reply}).json())
        steps.append(step)
        if step.terminated or step.truncated:
            break
    path = tmp_path / "episode.json"
    path.write_text(http.get(f"/v1/episodes/{episode_id}", params={"view": "internals"}).text, encoding="utf-8")
    (request,) = read_attune_file(path)
    assert request.seed == 21

    scored = ScoreResponse.model_validate(http.post("/v1/score", json=request.model_dump(mode="json")).json())
    assert scored.emotions == http.get(f"/v1/episodes/{episode_id}").json()["emotions"]
    assert [turn.components for turn in scored.turns] == [step.info.reward_components for step in steps]
    assert scored.correlation is not None and scored.correlation.pearson == pytest.approx(1.0)


class FailingAppraisals(HeuristicSimulator):
    async def appraise(self, context: TurnContext) -> Appraisal:
        raise RuntimeError("model worker crashed")


def test_backend_failure_is_503() -> None:
    app = create_app(Settings(backend=BackendName.heuristic), simulator=FailingAppraisals())
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as http:
        assert_error(http.post("/v1/score", json=body()), 503, "backend_unavailable", "model worker crashed")
