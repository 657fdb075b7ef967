"""API keys: bearer auth on every route but /healthz, episodes bound to their key, internals for admins."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from env_server.app import create_app
from env_server.embedded import serve_in_thread
from env_server.settings import BackendName, Settings

ALICE, BOB, ADMIN = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef00", "admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    settings = Settings(backend=BackendName.heuristic, api_keys=[ALICE, BOB], admin_keys=[ADMIN])
    # Readiness is polled on /readyz, which needs a key here: wait on it with one.
    with serve_in_thread(create_app(settings), ready_headers={"Authorization": f"Bearer {ALICE}"}) as base:
        yield base


def client(url: str, key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


@pytest.mark.parametrize("path", ["/readyz", "/v1/personas", "/docs", "/openapi.json", "/metrics", "/v1/episodes/x"])
@pytest.mark.parametrize("key", [None, "wrong-key-0123456789abcdef", ""])
def test_every_route_but_healthz_needs_a_key(url: str, path: str, key: str | None) -> None:
    response = client(url, key).get(path)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"


def test_healthz_is_open(url: str) -> None:
    assert client(url, None).get("/healthz").status_code == 200


def test_scheme_must_be_bearer(url: str) -> None:
    response = httpx.get(f"{url}/v1/personas", headers={"Authorization": f"Basic {ALICE}"})
    assert response.status_code == 401


def test_episode_is_bound_to_its_key(url: str) -> None:
    alice, bob = client(url, ALICE), client(url, BOB)
    episode = alice.post("/v1/episodes", json={"seed": 2}).json()["episode_id"]
    assert alice.get(f"/v1/episodes/{episode}").status_code == 200
    for response in (
        bob.get(f"/v1/episodes/{episode}"),
        bob.post(f"/v1/episodes/{episode}/step", json={"action": "hi there"}),
        bob.post(f"/v1/episodes/{episode}/fork", json={"n": 1}),
        bob.delete(f"/v1/episodes/{episode}"),
    ):
        assert response.status_code == 404 and response.json()["error"]["code"] == "episode_not_found"
    assert alice.post(f"/v1/episodes/{episode}/step", json={"action": "What happened?"}).status_code == 200


def test_internals_need_an_admin_key(url: str, catalog) -> None:
    alice, admin = client(url, ALICE), client(url, ADMIN)
    created = alice.post("/v1/episodes", json={"seed": 5}).json()
    episode = created["episode_id"]
    alice.post(f"/v1/episodes/{episode}/step", json={"action": "That sounds hard. What happened?"})
    denied = alice.get(f"/v1/episodes/{episode}", params={"view": "internals"})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    internals = admin.get(f"/v1/episodes/{episode}", params={"view": "internals"})
    assert internals.status_code == 200
    body = internals.json()
    assert body["hidden_intention"] == catalog.get(created["info"]["persona_id"]).hidden_intention
    assert len(body["appraisals"]) == 1 and body["appraisals"][0]["thoughts"]
    assert "hidden_intention" not in alice.get(f"/v1/episodes/{episode}").text


def test_keys_are_never_logged(url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG"):
        client(url, "wrong-key-0123456789abcdef").get("/v1/personas")
        client(url, ALICE).get("/v1/personas")
    assert ALICE not in caplog.text and "wrong-key" not in caplog.text


@pytest.mark.parametrize("bad", ["short", "changeme"])
def test_placeholder_or_short_keys_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(api_keys=[bad])
