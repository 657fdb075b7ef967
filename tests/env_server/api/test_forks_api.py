"""GRPO groups: create n identical episodes, fork an episode's state; no model call involved."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture
def http(server_url: str):
    with httpx.Client(base_url=server_url, timeout=30) as client:
        yield client


def view(http: httpx.Client, episode_id: str) -> dict:
    body = http.get(f"/v1/episodes/{episode_id}").json()
    body.pop("episode_id")
    return body


def test_create_with_n_makes_identical_episodes(http: httpx.Client) -> None:
    created = http.post("/v1/episodes", json={"seed": 9, "n": 4})
    assert created.status_code == 201
    body = created.json()
    ids = body["episode_ids"]
    assert len(set(ids)) == 4 and ids[0] == body["episode_id"]
    views = [view(http, i) for i in ids]
    assert all(v == views[0] for v in views)


def test_forks_share_state_and_sample_identically_then_diverge(http: httpx.Client) -> None:
    parent = http.post("/v1/episodes", json={"seed": 21}).json()["episode_id"]
    http.post(f"/v1/episodes/{parent}/step", json={"action": "What happened this week?"})
    forked = http.post(f"/v1/episodes/{parent}/fork", json={"n": 3})
    assert forked.status_code == 201
    children = forked.json()["episode_ids"]
    assert len(set(children)) == 3 and parent not in children
    assert all(view(http, c) == view(http, parent) for c in children)

    same = "That sounds exhausting. What was the hardest moment?"
    answers = {http.post(f"/v1/episodes/{e}/step", json={"action": same}).text for e in [parent, *children[:2]]}
    assert len(answers) == 1  # same state, same seed, same action: same answer and emotion

    different = http.post(f"/v1/episodes/{children[2]}/step", json={"action": "Just get over it."}).json()
    assert different["info"]["turn"] == 2
    assert view(http, parent)["transcript"][-2]["content"] == same  # the fork's step did not touch the parent


def test_fork_errors(http: httpx.Client) -> None:
    assert http.post("/v1/episodes/nope/fork", json={"n": 2}).json()["error"]["code"] == "episode_not_found"
    parent = http.post("/v1/episodes", json={"seed": 1}).json()["episode_id"]
    for n in (0, 65):
        response = http.post(f"/v1/episodes/{parent}/fork", json={"n": n})
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    assert http.post("/v1/episodes", json={"n": 0}).status_code == 422
