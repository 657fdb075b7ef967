"""A step retried after a lost reply waits for its own first attempt instead of failing on 409 busy."""

from __future__ import annotations

import httpx
import pytest

from attune_client import http as client_http
from attune_client.errors import EpisodeBusyError
from attune_client.http import AttuneClient
from tests.support.sleeps import patch_sleep

STEP = {
    "observation": "ok",
    "reward": 0.0,
    "terminated": False,
    "truncated": False,
    "info": {
        "persona_id": "p",
        "emotion": 40,
        "delta": 0,
        "band": "B",
        "turn": 1,
        "max_turns": 10,
        "status": "active",
    },
}
BUSY = {"error": {"code": "episode_busy", "message": "episode 'e' is running another step"}}


def scripted(*outcomes):
    seen: list[str] = []
    queue = list(outcomes)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.read().decode())
        outcome = queue.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return handler, seen


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    patch_sleep(monkeypatch, client_http, "time", lambda _: None)
    monkeypatch.setattr(client_http, "_BUSY_WAIT_S", 0.0)


def test_retry_waits_while_its_first_attempt_runs_then_gets_the_replay() -> None:
    handler, seen = scripted(
        httpx.ReadTimeout("slow model"),
        httpx.Response(409, json=BUSY),
        httpx.Response(409, json=BUSY),
        httpx.Response(200, json=STEP),
    )
    with AttuneClient("http://t", transport=httpx.MockTransport(handler), backoff=0) as client:
        assert client.step("e", "hello").observation == "ok"
    assert len(seen) == 4 and len(set(seen)) == 1  # the same body, so the same request id, every time


def test_a_first_attempt_that_finds_the_episode_busy_fails_at_once() -> None:
    handler, seen = scripted(httpx.Response(409, json=BUSY))
    with AttuneClient("http://t", transport=httpx.MockTransport(handler), backoff=0) as client:
        with pytest.raises(EpisodeBusyError):
            client.step("e", "hello")
    assert len(seen) == 1
