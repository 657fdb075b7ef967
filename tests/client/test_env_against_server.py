"""The Gymnasium env against a real heuristic server on loopback."""

from __future__ import annotations

import gymnasium
import pytest
from gymnasium.utils.env_checker import check_env

import attune_client  # noqa: F401  (registers Attune-v0)
from attune_client import AttuneClient, AttuneEnv
from attune_client.errors import EpisodeFinishedError, EpisodeNotFoundError, PersonaNotFoundError


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


def test_groups_forks_and_internals(server_url: str) -> None:
    with AttuneClient(server_url) as client:
        created = client.create_episode(seed=3, n=3)
        assert len(set(created.episode_ids)) == 3 and created.episode_ids[0] == created.episode_id
        views = [client.get_episode(i) for i in created.episode_ids]
        assert all(view.transcript == views[0].transcript for view in views)

        env = AttuneEnv(client=client, max_turns=4)
        env.reset(seed=5)
        env.step("That sounds heavy. What's weighing on you most?")
        forks = env.fork(2)
        assert all(fork.transcript == env.transcript for fork in forks)
        forks[0].step("Tell me more about that.")
        assert client.get_episode(forks[1].episode_id).turn == 1 and client.get_episode(env.episode_id).turn == 1
        internals = client.get_internals(forks[0].episode_id)  # a server without keys serves internals to all
        assert internals.seed == 5 and [a.turn for a in internals.appraisals] == [1, 2]
        for fork in forks:
            fork.close()
        parent_id = env.episode_id
        assert client.get_episode(parent_id).turn == 1
        env.close()
        with pytest.raises(EpisodeNotFoundError):
            client.fork(parent_id)
        assert client.readyz()  # the shared client is still open
