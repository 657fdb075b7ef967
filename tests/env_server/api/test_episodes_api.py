"""The HTTP API against a real uvicorn on loopback (heuristic backend, default pack)."""

from __future__ import annotations

import httpx
import pytest

from attune_client.wire import CreateEpisodeResponse, EpisodeView, PersonaList, StepResponse


@pytest.fixture
def http(server_url: str):
    with httpx.Client(base_url=server_url, timeout=30) as client:
        yield client


def create(http: httpx.Client, **body) -> CreateEpisodeResponse:
    response = http.post("/v1/episodes", json=body)
    assert response.status_code == 201, response.text
    return CreateEpisodeResponse.model_validate(response.json())


def assert_error(response: httpx.Response, status: int, code: str, mentions: str = "") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert mentions.lower() in error["message"].lower()


def test_health_and_readiness(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz").json()
    assert ready["status"] == "ready" and ready["backend"] == "heuristic" and ready["personas"] >= 24


def test_episode_lifecycle(http: httpx.Client, catalog) -> None:
    persona = catalog.ids[0]
    created = create(http, persona_id=persona, seed=3)
    assert created.info.persona_id == persona and created.info.turn == 0 and created.observation
    assert created.info.emotion == catalog.get(persona).initial_emotion

    response = http.post(f"/v1/episodes/{created.episode_id}/step", json={"action": "That sounds hard. What happened?"})
    assert response.status_code == 200, response.text
    step = StepResponse.model_validate(response.json())
    assert step.info.turn == 1 and step.observation
    assert step.info.emotion == created.info.emotion + step.info.delta

    view = EpisodeView.model_validate(http.get(f"/v1/episodes/{created.episode_id}").json())
    assert [m.role.value for m in view.transcript] == ["user", "assistant", "user"]
    assert view.emotions == [created.info.emotion, step.info.emotion]

    assert http.delete(f"/v1/episodes/{created.episode_id}").status_code == 204
    assert_error(http.get(f"/v1/episodes/{created.episode_id}"), 404, "episode_not_found", created.episode_id)


def test_seed_picks_persona_and_opening_deterministically(http: httpx.Client) -> None:
    first, second = create(http, seed=11), create(http, seed=11)
    assert (first.info.persona_id, first.observation) == (second.info.persona_id, second.observation)
    assert len({create(http, seed=s).info.persona_id for s in range(12)}) > 3


def test_episode_runs_to_truncation_then_refuses_steps(http: httpx.Client) -> None:
    created = create(http, seed=5, options={"max_turns": 2, "reward_mode": "terminal"})
    rewards = []
    for _ in range(2):
        body = http.post(f"/v1/episodes/{created.episode_id}/step", json={"action": "Tell me more about that?"}).json()
        rewards.append(body["reward"])
        if body["terminated"]:
            break
    assert body["truncated"] or body["terminated"]
    assert body["reward"] == pytest.approx(body["info"]["emotion"] / 100)
    assert all(r == 0 for r in rewards[:-1])
    late = http.post(f"/v1/episodes/{created.episode_id}/step", json={"action": "Still there?"})
    assert_error(late, 409, "episode_finished", "reset")


@pytest.mark.parametrize(
    ("body", "code", "mentions"),
    [
        ({"action": ""}, "invalid_request", "action"),
        ({"action": "   \n"}, "action_empty", "empty"),
        ({"action": "x" * 4001}, "action_too_long", "4000"),
        ({}, "invalid_request", "action"),
        ({"action": "hi", "mood": "happy"}, "invalid_request", "mood"),
        ({"action": 5}, "invalid_request", "action"),
    ],
)
def test_bad_step_bodies_are_422_and_leave_episode_intact(http: httpx.Client, body, code, mentions) -> None:
    created = create(http, seed=1)
    assert_error(http.post(f"/v1/episodes/{created.episode_id}/step", json=body), 422, code, mentions)
    view = http.get(f"/v1/episodes/{created.episode_id}").json()
    assert view["turn"] == 0 and len(view["transcript"]) == 1


def test_malformed_json_is_422(http: httpx.Client) -> None:
    created = create(http, seed=1)
    response = http.post(
        f"/v1/episodes/{created.episode_id}/step", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "invalid_request")


def test_unknown_episode_persona_and_route(http: httpx.Client) -> None:
    assert_error(http.post("/v1/episodes/nope/step", json={"action": "hi"}), 404, "episode_not_found", "nope")
    assert_error(http.post("/v1/episodes", json={"persona_id": "nobody"}), 404, "persona_not_found", "nobody")
    assert_error(http.get("/v1/personas/nobody"), 404, "persona_not_found", "nobody")
    assert_error(http.get("/v1/nothing-here"), 404, "not_found")
    assert_error(http.post("/v1/episodes", json={"seed": -1}), 422, "invalid_request", "seed")
    assert_error(http.post("/v1/episodes", json={"options": {"max_turns": 0}}), 422, "invalid_request", "max_turns")


def test_personas_expose_public_fields_only(http: httpx.Client, catalog) -> None:
    listing = PersonaList.model_validate(http.get("/v1/personas").json())
    assert {p.id for p in listing.personas} == set(catalog.ids)
    raw = http.get("/v1/personas").text + http.get(f"/v1/personas/{catalog.ids[0]}").text
    for persona in catalog:
        assert persona.hidden_intention not in raw and persona.background not in raw


def test_hidden_state_never_reaches_the_policy(http: httpx.Client, catalog) -> None:
    texts = []
    for seed in range(8):
        created = create(http, seed=seed)
        texts.append(created.model_dump_json())
        for action in ("You should just move on.", "That sounds really painful. What hurts most?"):
            response = http.post(f"/v1/episodes/{created.episode_id}/step", json={"action": action})
            texts.append(response.text)
        texts.append(http.get(f"/v1/episodes/{created.episode_id}").text)
    blob = "\n".join(texts)
    for persona in catalog:
        assert persona.hidden_intention not in blob
    assert "thoughts" not in blob


def test_openapi_documents_the_api(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    assert {"/v1/episodes", "/v1/episodes/{episode_id}/step", "/v1/personas", "/healthz", "/readyz"} <= set(
        spec["paths"]
    )
    assert http.get("/docs").status_code == 200
