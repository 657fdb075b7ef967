"""The SkyRL adapter: ``AttuneTextEnv`` made by ``skyrl_gym.make``, played against the real heuristic server."""

from __future__ import annotations

import concurrent.futures
from typing import Any

import pytest

from attune_client import AttuneClient
from attune_client.policies import empathic
from attune_client.rollout import GroupPool

skyrl_gym = pytest.importorskip("skyrl_gym")
skyrl = pytest.importorskip("attune_client.integrations.skyrl")

ENV_ID = "attune"


def prompt(spec: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Be gentle."}, {"role": "user", "content": spec}]


class CountingClient(AttuneClient):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int]] = []

    def create_episode(self, *args: Any, **kwargs: Any):
        self.calls.append(("create", kwargs.get("n", 1)))
        return super().create_episode(*args, **kwargs)

    def fork(self, episode_id: str, n: int = 1) -> list[str]:
        self.calls.append(("fork", n))
        return super().fork(episode_id, n)


@pytest.fixture
def counting_pool(server_url: str, monkeypatch: pytest.MonkeyPatch) -> CountingClient:
    """Route the adapter's pool for (server_url, group of 4) through a client that counts creates and forks."""
    client = CountingClient(server_url)
    monkeypatch.setitem(skyrl._POOLS, (server_url, None, 120.0, 4), GroupPool(client, 4))
    yield client
    client.close()


def make_env(server_url: str, **extras: Any):
    skyrl.register_env(ENV_ID)
    config = {"base_url": server_url, "group_size": 4}
    return skyrl_gym.make(ENV_ID, env_config=config, extras=extras)


def play(env, prompt) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    history, _ = env.init(prompt)
    chat = [(m["role"], m["content"]) for m in history[1:]]
    outputs = []
    while True:
        reply = empathic(chat[-1][1], chat[:-1])
        output = env.step(reply)
        outputs.append(output)
        chat += [("assistant", reply), *((m["role"], m["content"]) for m in output["observations"])]
        if output["done"]:
            return history, outputs


def test_a_group_of_envs_is_one_episode_and_its_forks(server_url, counting_pool) -> None:
    envs = [make_env(server_url, max_turns=9) for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as threads:
        histories = list(threads.map(lambda env: env.init(prompt("attune:seed=11,max_turns=3"))[0], envs))
    assert counting_pool.calls == [("create", 1), ("fork", 3)]
    assert len({env.opening.episode_id for env in envs}) == 4
    assert {env.opening.info.max_turns for env in envs} == {3}  # the prompt's max_turns beats the extras'
    assert all(h == histories[0] for h in histories)
    assert histories[0][0] == {"role": "system", "content": "Be gentle."} and histories[0][1]["role"] == "user"


def test_an_episode_pays_final_emotion_over_100_at_the_end(server_url, counting_pool) -> None:
    env = make_env(server_url, max_turns=3)
    history, outputs = play(env, prompt("attune:seed=12"))  # max_turns from the extras, as SkyRL sets it
    view = counting_pool.get_episode(env.opening.episode_id)
    assert view.max_turns == 3
    assert [o["done"] for o in outputs] == [False] * (len(outputs) - 1) + [True]
    assert all(o["observations"] for o in outputs[:-1]) and outputs[-1]["observations"] == []
    assert [o["reward"] for o in outputs[:-1]] == [0.0] * (len(outputs) - 1)
    assert outputs[-1]["reward"] == pytest.approx(view.emotion / 100)
    assert [o["metadata"]["emotion"] for o in outputs] == view.emotions[1:]
    assert history[1]["content"] == view.transcript[0].content
    metrics = env.get_metrics()
    assert metrics["final_emotion"] == view.emotion and metrics["turns"] == len(outputs) == env.turns
    assert history[0] == {"role": "system", "content": "Be gentle."}
    assert metrics["reward"] == pytest.approx(view.emotion / 100)


def test_dense_mode_and_the_default_system_prompt(server_url) -> None:
    skyrl.register_env(ENV_ID)
    config = {"base_url": server_url, "group_size": 1, "reward_mode": "dense", "system_prompt": "Listen."}
    env = skyrl_gym.make(ENV_ID, env_config=config, extras={"max_turns": 2})
    history, outputs = play(env, [{"role": "user", "content": "attune:seed=13"}])
    assert history[0] == {"role": "system", "content": "Listen."} and env.max_turns == 2
    emotions = [env.opening.info.emotion, *(o["metadata"]["emotion"] for o in outputs)]
    assert sum(o["reward"] for o in outputs) == pytest.approx((emotions[-1] - emotions[0]) / 100)


def test_step_before_init_is_refused(server_url) -> None:
    with pytest.raises(RuntimeError, match="before init"):
        make_env(server_url).step("hello")
