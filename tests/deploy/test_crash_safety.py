"""kill -9 between and during steps, and two servers on one Redis: real processes, real Redis."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.support.processes import ServerProcess, attune_server, free_port, redis_server

pytestmark = pytest.mark.redis


def env_for(redis_port: int, backend: str = "heuristic", **extra: str) -> dict[str, str]:
    return {"ATTUNE_BACKEND": backend, "ATTUNE_STORE": f"redis://127.0.0.1:{redis_port}/0", **extra}


def consistent(view: dict) -> bool:
    """Nothing half-applied: one emotion and two messages per supporter turn, after the opening."""
    turn = view["turn"]
    return len(view["emotions"]) == turn + 1 and len(view["transcript"]) == 2 * turn + 1


def test_kill_9_between_steps_keeps_every_acknowledged_step() -> None:
    with redis_server() as port:
        env = env_for(port)
        first = ServerProcess(env, free_port()).wait_ready()
        episode = httpx.post(f"{first.url}/v1/episodes", json={"seed": 8}).json()["episode_id"]
        acked = [
            httpx.post(f"{first.url}/v1/episodes/{episode}/step", json={"action": action}).json()
            for action in ("What happened?", "That sounds hard. What hurt most?")
        ]
        before = httpx.get(f"{first.url}/v1/episodes/{episode}").json()
        first.kill()

        with attune_server(env) as second:
            after = httpx.get(f"{second.url}/v1/episodes/{episode}").json()
            assert after == before and after["turn"] == 2 and consistent(after)
            assert [m["content"] for m in after["transcript"][2::2]] == [a["observation"] for a in acked]
            more = httpx.post(f"{second.url}/v1/episodes/{episode}/step", json={"action": "Go on?"})
            assert more.status_code == 200 and more.json()["info"]["turn"] == 3


def test_two_servers_serve_alternating_steps_of_one_episode() -> None:
    with redis_server() as port, attune_server(env_for(port)) as a, attune_server(env_for(port)) as b:
        episode = httpx.post(f"{a.url}/v1/episodes", json={"seed": 12}).json()["episode_id"]
        for turn, server in enumerate([b, a, b, a], start=1):
            step = httpx.post(f"{server.url}/v1/episodes/{episode}/step", json={"action": f"Tell me more ({turn})?"})
            assert step.status_code == 200 and step.json()["info"]["turn"] == turn
        views = [httpx.get(f"{s.url}/v1/episodes/{episode}").json() for s in (a, b)]
        assert views[0] == views[1] and consistent(views[0]) and views[0]["turn"] == 4
        fork = httpx.post(f"{a.url}/v1/episodes/{episode}/fork", json={"n": 1}).json()["episode_ids"][0]
        assert httpx.post(f"{b.url}/v1/episodes/{fork}/step", json={"action": "And then?"}).json()["info"]["turn"] == 5


@pytest.mark.slow
def test_kill_9_during_a_step_applies_nothing_and_episode_continues() -> None:
    # A live step renews its lease, so the lease can be short: the dead server's lease blocks the episode
    # for at most that long after the crash.
    lease_s = 3
    extra = {"ATTUNE_STEP_LEASE_S": str(lease_s), "ATTUNE_MAX_NEW_TOKENS": "24", "ATTUNE_THOUGHTS_TOKENS": "24"}
    extra["ATTUNE_PINNED_PREFIX_TOKENS"] = "0"  # a first appraisal that computes its whole prompt: a slow step
    with redis_server() as port:
        env = env_for(port, backend="transformers", **extra)
        first = ServerProcess(env, free_port()).wait_ready(600)
        episode = httpx.post(f"{first.url}/v1/episodes", json={"seed": 2}, timeout=120).json()["episode_id"]
        before = httpx.get(f"{first.url}/v1/episodes/{episode}").json()
        outcome: list[object] = []

        def step() -> None:
            try:
                outcome.append(
                    httpx.post(f"{first.url}/v1/episodes/{episode}/step", json={"action": "Why?"}, timeout=60)
                )
            except httpx.TransportError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=step)
        thread.start()
        time.sleep(1.0)  # the model is mid-appraisal: a step takes several seconds on this CPU
        first.kill()
        thread.join()
        assert isinstance(outcome[0], httpx.TransportError), "the step finished before the kill; slow it down"

        with attune_server(env, ready_timeout=600) as second:
            after = httpx.get(f"{second.url}/v1/episodes/{episode}").json()
            assert after == before and consistent(after)
            deadline = time.monotonic() + lease_s + 5
            while True:
                resumed = httpx.post(
                    f"{second.url}/v1/episodes/{episode}/step",
                    json={"action": "Hello?", "request_id": "r"},
                    timeout=120,
                )
                if resumed.status_code != 409 or time.monotonic() > deadline:
                    break
                assert resumed.json()["error"]["code"] == "episode_busy"  # the dead server's lease has not expired
                time.sleep(1)
            assert resumed.status_code == 200, resumed.text
            assert resumed.json()["info"]["turn"] == 1
            assert consistent(httpx.get(f"{second.url}/v1/episodes/{episode}").json())
