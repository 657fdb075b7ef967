"""AttuneEnv over a MockTransport fake server (the real server is exercised in test_env_against_server.py)."""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING

import gymnasium
import httpx
import pytest
from gymnasium.utils.env_checker import check_env

import attune_client
from attune_client import (
    AttuneClient,
    AttuneEnv,
    EpisodeFinishedError,
    EpisodeNotFoundError,
    PersonaNotFoundError,
    ResetNeeded,
)
from attune_client import env as env_module
from attune_client.spaces import Utterance

if TYPE_CHECKING:
    from tests.client.conftest import FakeServer

REPLY = "That sounds really hard. What happened next?"


@pytest.fixture
def env(client: AttuneClient) -> AttuneEnv:
    env = AttuneEnv(client=client)
    yield env
    env.close()


def test_spaces() -> None:
    env = AttuneEnv()
    assert env.observation_space == Utterance(8192, min_length=0)
    assert env.action_space == Utterance(4000, min_length=1)
    env.close()


def test_reset_returns_opening_and_info(env: AttuneEnv, server: FakeServer) -> None:
    observation, info = env.reset(seed=7)
    assert observation.startswith("[mei-family]") and observation in env.observation_space
    assert info["episode_id"] == env.episode_id and env.episode_id in server.episodes
    assert info | {"episode_id": None} == {
        "reward_components": None,
        "persona_id": "mei-family",
        "emotion": 25,
        "delta": 0,
        "band": "C",
        "turn": 0,
        "max_turns": 5,
        "status": "active",
        "termination_reason": None,
        "episode_id": None,
    }
    assert server.bodies("POST") == [{"seed": 7}]


def test_unseeded_resets_follow_the_last_seed(env: AttuneEnv, server: FakeServer) -> None:
    env.reset(seed=123)
    first, _ = env.reset()
    env.reset(seed=123)
    second, _ = env.reset()
    seeds = [body["seed"] for body in server.bodies("POST", "/episodes")]
    assert seeds[0] == seeds[2] == 123
    assert seeds[1] == seeds[3] and isinstance(seeds[1], int) and 0 <= seeds[1] < 2**63
    assert first == second


def test_reset_deletes_the_previous_episode(env: AttuneEnv, server: FakeServer) -> None:
    env.reset(seed=1)
    first = env.episode_id
    env.reset(seed=2)
    assert first not in server.episodes and list(server.episodes) == [env.episode_id]
    assert [r.method for r in server.requests] == ["POST", "DELETE", "POST"]


def test_reset_tolerates_an_expired_episode(env: AttuneEnv, server: FakeServer) -> None:
    env.reset(seed=1)
    server.episodes.clear()  # the server expired it
    env.reset(seed=1)
    assert env.episode_id in server.episodes


def test_options_override_constructor_defaults(client: AttuneClient, server: FakeServer) -> None:
    env = AttuneEnv(client=client, persona_id="riley-burnout", max_turns=3, reward_mode="dense")
    env.reset(seed=1)
    env.reset(seed=1, options={"persona_id": "mei-family", "max_turns": 2})
    assert server.bodies("POST") == [
        {"persona_id": "riley-burnout", "seed": 1, "options": {"max_turns": 3, "reward_mode": "dense"}},
        {"persona_id": "mei-family", "seed": 1, "options": {"max_turns": 2, "reward_mode": "dense"}},
    ]


def test_unknown_options_are_refused_before_any_request(env: AttuneEnv, server: FakeServer) -> None:
    with pytest.raises(ValueError, match=r"\['persona', 'turns'\]"):
        env.reset(options={"persona": "x", "turns": 3, "max_turns": 2})
    assert server.requests == []


def test_server_errors_propagate_typed(env: AttuneEnv) -> None:
    with pytest.raises(PersonaNotFoundError, match="nobody"):
        env.reset(options={"persona_id": "nobody"})


def test_step_before_reset(env: AttuneEnv) -> None:
    with pytest.raises(ResetNeeded, match="reset"):
        env.step(REPLY)
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step(REPLY)


def test_step_returns_the_five_tuple(env: AttuneEnv, server: FakeServer) -> None:
    env.reset(seed=4)
    observation, reward, terminated, truncated, info = env.step(REPLY)
    assert observation == "Turn 1: I hear you. I'm at 36 now."
    assert type(reward) is float and terminated is False and truncated is False
    assert "episode_id" not in info and info["turn"] == 1 and info["delta"] == 6
    assert server.bodies("POST", "/step")[0]["action"] == REPLY


def test_episode_runs_to_truncation_then_refuses(env: AttuneEnv) -> None:
    env.reset(seed=4, options={"max_turns": 2, "reward_mode": "terminal"})
    assert env.step(REPLY)[3] is False
    _, reward, terminated, truncated, info = env.step(REPLY)
    assert (terminated, truncated, info["termination_reason"]) == (False, True, "max_turns")
    assert reward == pytest.approx(info["emotion"] / 100)
    with pytest.raises(EpisodeFinishedError):
        env.step(REPLY)


def test_transcript_and_ansi_render(client: AttuneClient) -> None:
    env = AttuneEnv(client=client, render_mode="ansi")
    opening, _ = env.reset(seed=0)
    reply, *_ = env.step(REPLY)
    assert env.transcript == [("user", opening), ("assistant", REPLY), ("user", reply)]
    assert env.render() == f"[user] {opening}\n[assistant] {REPLY}\n[user] {reply}\n"


def test_human_render_prints_as_it_goes(client: AttuneClient, capsys: pytest.CaptureFixture[str]) -> None:
    env = AttuneEnv(client=client, render_mode="human")
    opening, _ = env.reset(seed=0)
    env.step(REPLY)
    assert env.render() is None
    out = capsys.readouterr().out
    assert out.startswith(f"[user] {opening}\n[assistant] {REPLY}\n[user] Turn 1")


def test_render_mode_is_validated() -> None:
    with pytest.raises(ValueError, match="render_mode"):
        AttuneEnv(render_mode="rgb_array")


def test_long_observations_are_cut_to_the_space(server_factory: type[FakeServer]) -> None:
    server = server_factory(opening_suffix=" 很长" * 100)
    env = AttuneEnv(client=AttuneClient(transport=httpx.MockTransport(server)), max_observation_chars=50)
    observation, _ = env.reset(seed=0)
    assert len(observation) == 50 and observation in env.observation_space
    assert len(env.transcript[0][1]) > 50


def test_close_deletes_the_episode_and_leaves_a_given_client_open(env: AttuneEnv, server: FakeServer) -> None:
    env.reset(seed=0)
    env.close()
    assert server.episodes == {} and env.episode_id is None
    env.close()  # twice is fine
    assert env.client.healthz()  # not ours to close


def test_close_closes_an_owned_client() -> None:
    env = AttuneEnv(base_url="http://attune.invalid")
    env.close()
    env.close()
    assert env.client._http.is_closed


def test_close_warns_instead_of_raising(env: AttuneEnv, server: FakeServer) -> None:
    env.reset(seed=0)
    server.fail_next(403)
    with pytest.warns(UserWarning, match="could not delete"):
        env.close()


def test_fork_before_reset(env: AttuneEnv, server: FakeServer) -> None:
    with pytest.raises(ResetNeeded, match=r"fork\(\) called with no current episode"):
        env.fork(2)
    assert server.requests == []


def test_fork_sizes(env: AttuneEnv, server: FakeServer) -> None:
    env.reset(seed=1)
    assert env.fork(0) == [] and len(server.requests) == 1  # a group of one: [env, *env.fork(0)]
    with pytest.raises(ValueError, match="n must be >= 0"):
        env.fork(-1)
    assert len(env.fork()) == 1 and server.bodies("POST", "/fork") == [{"n": 1}]


def test_forks_start_where_the_parent_is_and_step_independently(env: AttuneEnv, server: FakeServer) -> None:
    env.reset(seed=4, options={"max_turns": 4})
    env.step(REPLY)
    parent_transcript = env.transcript
    forks = env.fork(3)
    assert server.bodies("POST", "/fork") == [{"n": 3}]
    ids = [fork.episode_id for fork in forks]
    assert len(set(ids)) == 3 and env.episode_id not in ids and set(ids) <= set(server.episodes)
    for fork in forks:
        assert fork.transcript == parent_transcript and fork.client is env.client
        assert fork.observation_space == env.observation_space and fork.action_space == env.action_space

    results = [fork.step(action) for fork, action in zip(forks, ["Go on?", "Hmm.", "I see."], strict=True)]
    assert [info["turn"] for *_, info in results] == [2, 2, 2]
    assert [info["max_turns"] for *_, info in results] == [4, 4, 4]  # the parent's episode settings
    assert [fork.transcript[-2] for fork in forks] == [
        ("assistant", "Go on?"),
        ("assistant", "Hmm."),
        ("assistant", "I see."),
    ]
    assert all(fork.transcript[:3] == parent_transcript for fork in forks)
    assert env.transcript == parent_transcript and server.episodes[env.episode_id].turn == 1

    forks[0].step("And then?")
    assert [server.episodes[i].turn for i in ids] == [3, 2, 2] and server.episodes[env.episode_id].turn == 1
    observation, *_ = env.step(REPLY)
    assert observation == "Turn 2: I hear you. I'm at 42 now." and [len(f.transcript) for f in forks] == [7, 5, 5]


def test_closing_a_fork_keeps_the_shared_client_and_the_parent(
    monkeypatch: pytest.MonkeyPatch, server: FakeServer
) -> None:
    # The parent creates (and so owns) its client; route that client to the fake server.
    def owned_client(base_url: str, **kwargs: object) -> AttuneClient:
        return AttuneClient(base_url, transport=httpx.MockTransport(server), **kwargs)

    monkeypatch.setattr(env_module, "AttuneClient", owned_client)
    parent = AttuneEnv(base_url="http://attune.test")
    parent.reset(seed=2)
    first, second = parent.fork(2)
    first.close()
    assert first.episode_id is None and parent.episode_id in server.episodes and second.episode_id in server.episodes
    assert not parent.client._http.is_closed
    second.step(REPLY)
    parent.step(REPLY)

    parent.close()
    assert parent.client._http.is_closed and list(server.episodes) == [second.episode_id]


def test_reset_on_a_fork_starts_a_fresh_episode(env: AttuneEnv, server: FakeServer) -> None:
    env.reset(seed=3)
    (fork,) = env.fork()
    forked_id = fork.episode_id
    observation, info = fork.reset(seed=9)
    assert forked_id not in server.episodes and env.episode_id in server.episodes
    assert info["episode_id"] == fork.episode_id != env.episode_id and "(seed 9)" in observation
    assert fork.transcript == [("user", observation)]
    fork.close()


def test_forks_reset_reproducibly_and_differently(client: AttuneClient, server: FakeServer) -> None:
    def fork_seeds() -> list[int]:
        env = AttuneEnv(client=client)
        env.reset(seed=11)
        forks = env.fork(2)
        server.requests.clear()
        for fork in forks:
            fork.reset()
        return [body["seed"] for body in server.bodies("POST", "/episodes")]

    first = fork_seeds()
    assert first == fork_seeds() and first[0] != first[1]


def test_fork_of_an_expired_episode(env: AttuneEnv, server: FakeServer) -> None:
    env.reset(seed=1)
    server.episodes.clear()
    with pytest.raises(EpisodeNotFoundError):
        env.fork(2)


def test_make_by_id_and_module_prefix(client: AttuneClient) -> None:
    for env_id in ("Attune-v0", "attune_client:Attune-v0"):
        env = gymnasium.make(env_id, client=client, max_turns=3)
        assert isinstance(env.unwrapped, AttuneEnv)
        observation, info = env.reset(seed=5)
        assert info["max_turns"] == 3
        env.step(REPLY)
        env.close()


def test_reimport_does_not_reregister() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(attune_client)
    assert gymnasium.registry["Attune-v0"].entry_point == "attune_client.env:AttuneEnv"


def test_gymnasium_check_env_passes_without_warnings(client: AttuneClient) -> None:
    env = gymnasium.make("Attune-v0", client=client)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped)  # includes the render modes and close checks through env.spec
    env.close()
