"""End to end on the embedded default: SmolLM2 through transformers, a real server, the Gymnasium client."""

from __future__ import annotations

import gymnasium
import httpx
import pytest

import attune_client  # noqa: F401  (registers Attune-v0)
from env_server.app import create_app
from env_server.embedded import serve_in_thread
from env_server.settings import Settings

pytestmark = pytest.mark.slow


def computed_prompt_tokens(url: str) -> float:
    """The server's count of prompt tokens its model computed (not served from its prefix cache)."""
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith('attune_prompt_tokens_total{source="computed"}'):
            return float(line.split()[-1])
    raise AssertionError("no computed prompt tokens in /metrics")


def test_two_turns_with_the_real_model(catalog) -> None:
    settings = Settings(max_turns=5, max_new_tokens=32, thoughts_tokens=24)
    assert settings.backend.value == "transformers"
    generated = next(p for p in catalog if not p.opening)
    with serve_in_thread(create_app(settings), ready_timeout=600) as url:
        assert httpx.get(f"{url}/readyz").json()["backend"].startswith("transformers:SmolLM2")
        env = gymnasium.make("Attune-v0", base_url=url)
        observation, info = env.reset(seed=3, options={"persona_id": generated.id})
        assert observation.strip() and info["turn"] == 0
        emotions, computed = [info["emotion"]], [computed_prompt_tokens(url)]
        for action in ("That sounds really hard. What happened?", "You should just get over it."):
            observation, reward, terminated, truncated, info = env.step(action)
            computed.append(computed_prompt_tokens(url))
            assert observation.strip() and observation in env.observation_space
            assert -10 <= info["delta"] <= 10 and info["emotion"] == emotions[-1] + info["delta"]
            emotions.append(info["emotion"])
            if terminated or truncated:
                break
        # The persona's system message (~460-710 tokens) was computed before the server turned ready: the first
        # step's four calls computed only the dialogue after it, their thoughts and the lines around them.
        assert computed[1] - computed[0] < 400
        view = httpx.get(f"{url}/v1/episodes/{env.unwrapped.episode_id}").json()
        assert view["emotions"] == emotions
        assert generated.hidden_intention not in str(view)
        env.close()
