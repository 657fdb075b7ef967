"""The Gymnasium env against a real heuristic server on loopback."""

from __future__ import annotations

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import attune_client  # noqa: F401  (registers Attune-v0)
from attune_client.errors import EpisodeFinishedError, PersonaNotFoundError


def test_check_env_passes(server_url: str) -> None:
    env = gymnasium.make("Attune-v0", base_url=server_url)
    try:
        check_env(env.unwrapped, skip_render_check=True)
    finally:
        env.close()


def test_episode_through_gymnasium_make(server_url: str, catalog) -> None:
    env = gymnasium.make("Attune-v0", base_url=server_url, max_turns=3)
    observation, info = env.reset(seed=2, options={"persona_id": catalog.ids[1]})
    assert observation in env.observation_space and info["persona_id"] == catalog.ids[1]
    done, steps = False, 0
    while not done:
        observation, reward, terminated, truncated, info = env.step("That sounds heavy. What's weighing on you most?")
        assert observation in env.observation_space and isinstance(reward, float)
        done, steps = terminated or truncated, steps + 1
    assert steps <= 3 and info["termination_reason"] in {"goal_reached", "user_left", "max_turns"}
    with pytest.raises(EpisodeFinishedError):
        env.unwrapped.step("hello?")
    env.close()


def test_server_errors_become_typed_exceptions(server_url: str) -> None:
    env = gymnasium.make("Attune-v0", base_url=server_url)
    with pytest.raises(PersonaNotFoundError, match="nobody"):
        env.reset(options={"persona_id": "nobody"})
    env.close()
