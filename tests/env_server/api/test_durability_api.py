"""Retries, concurrent steps, expiry and metrics over HTTP, for the memory store and the real Redis store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from env_server.app import create_app
from env_server.embedded import serve_in_thread
from env_server.llm.heuristic import HeuristicSimulator
from env_server.llm.protocol import Appraisal, TurnContext
from env_server.settings import BackendName, Settings

REDIS_URL = "redis://127.0.0.1:6379/0"


class SlowCountingSimulator(HeuristicSimulator):
    """The real heuristic simulator, slowed down like a model and counting its appraisals."""

    def __init__(self, delay_s: float = 0.4) -> None:
        super().__init__()
        self.delay_s, self.appraisals = delay_s, 0

    async def appraise(self, context: TurnContext) -> Appraisal:
        self.appraisals += 1
        await asyncio.sleep(self.delay_s)
        return await super().appraise(context)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)], scope="module")
def served(request) -> Iterator[tuple[str, SlowCountingSimulator]]:
    store = "memory" if request.param == "memory" else REDIS_URL
    simulator = SlowCountingSimulator()
    settings = Settings(backend=BackendName.heuristic, store=store, episode_ttl_s=2)
    with serve_in_thread(create_app(settings, simulator=simulator)) as url:
        yield url, simulator


def test_retry_with_same_request_id_replays_without_simulating(served) -> None:
    url, simulator = served
    with httpx.Client(base_url=url, timeout=30) as http:
        episode = http.post("/v1/episodes", json={"seed": 3}).json()["episode_id"]
        body = {"action": "What has this week been like?", "request_id": "req-1"}
        first = http.post(f"/v1/episodes/{episode}/step", json=body)
        calls = simulator.appraisals
        again = http.post(f"/v1/episodes/{episode}/step", json=body)
        assert again.status_code == 200 and again.json() == first.json()
        assert simulator.appraisals == calls
        assert http.get(f"/v1/episodes/{episode}").json()["turn"] == 1

        conflict = http.post(f"/v1/episodes/{episode}/step", json={"action": "Something else", "request_id": "req-1"})
        assert conflict.status_code == 409 and conflict.json()["error"]["code"] == "request_conflict"


def test_two_concurrent_steps_one_applies_other_is_busy(served) -> None:
    url, _ = served
    episode = httpx.post(f"{url}/v1/episodes", json={"seed": 4}).json()["episode_id"]
    results: list[httpx.Response] = []
    barrier = threading.Barrier(2)

    def step(action: str) -> None:
        barrier.wait()
        results.append(httpx.post(f"{url}/v1/episodes/{episode}/step", json={"action": action}, timeout=30))

    threads = [threading.Thread(target=step, args=(a,)) for a in ("What happened?", "How are you holding up?")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 409]
    busy = next(r for r in results if r.status_code == 409)
    assert busy.json()["error"]["code"] == "episode_busy"
    assert httpx.get(f"{url}/v1/episodes/{episode}").json()["turn"] == 1


def test_unused_episode_expires_and_use_refreshes(served) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=30) as http:
        kept = http.post("/v1/episodes", json={"seed": 5}).json()["episode_id"]
        dropped = http.post("/v1/episodes", json={"seed": 6}).json()["episode_id"]
        for _ in range(3):
            time.sleep(0.9)
            assert http.get(f"/v1/episodes/{kept}").status_code == 200
        gone = http.get(f"/v1/episodes/{dropped}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "episode_not_found"
        assert "expired" in gone.json()["error"]["message"]


def test_metrics_count_steps_errors_and_latency(served) -> None:
    url, _ = served
    with httpx.Client(base_url=url, timeout=30) as http:
        episode = http.post("/v1/episodes", json={"seed": 7}).json()["episode_id"]
        http.post(f"/v1/episodes/{episode}/step", json={"action": "Tell me more?"})
        http.post(f"/v1/episodes/{episode}/step", json={"action": "   "})
        text = http.get("/metrics").text
    assert 'attune_steps_total{outcome="applied"}' in text
    assert 'attune_errors_total{code="action_empty"}' in text
    assert "attune_step_seconds_bucket" in text and 'attune_backend_seconds_count{call="appraise"}' in text
    assert "attune_active_episodes" in text and "attune_appraisal_fallbacks_total" in text
