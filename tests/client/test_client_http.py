"""AttuneClient and AsyncAttuneClient against a MockTransport fake server."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from attune_client import (
    AsyncAttuneClient,
    AttuneClient,
    AuthenticationError,
    BackendUnavailableError,
    CreateEpisodeResponse,
    EpisodeFinishedError,
    EpisodeInternals,
    EpisodeNotFoundError,
    EpisodeView,
    PermissionDeniedError,
    PersonaNotFoundError,
    PersonaPublic,
    RewardMode,
    ServerError,
    StepResponse,
    TransportError,
)
from attune_client import http as http_module
from tests.support.sleeps import patch_sleep

if TYPE_CHECKING:
    from tests.client.conftest import FakeServer


def make_client(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> AttuneClient:
    kwargs.setdefault("backoff", 0.0)
    return AttuneClient("http://attune.test", transport=httpx.MockTransport(handler), **kwargs)


def step_request_ids(server: FakeServer) -> list[str]:
    return [b["request_id"] for b in server.bodies("POST", "/step")]


def test_create_episode_body_omits_unset_fields(client: AttuneClient, server: FakeServer) -> None:
    created = client.create_episode()
    assert isinstance(created, CreateEpisodeResponse)
    assert server.bodies("POST") == [{}]
    assert created.info.turn == 0 and created.episode_id in server.episodes


def test_create_episode_body_carries_options(client: AttuneClient, server: FakeServer) -> None:
    created = client.create_episode(persona_id="mei-family", seed=7, max_turns=3, reward_mode=RewardMode.dense)
    assert server.bodies("POST") == [
        {"persona_id": "mei-family", "seed": 7, "options": {"max_turns": 3, "reward_mode": "dense"}}
    ]
    assert created.info.persona_id == "mei-family" and created.info.max_turns == 3


def test_create_episode_group_has_n_identical_episodes(client: AttuneClient, server: FakeServer) -> None:
    created = client.create_episode(seed=3, n=4)
    assert server.bodies("POST") == [{"seed": 3, "n": 4}]
    ids = created.episode_ids
    assert len(ids) == len(set(ids)) == 4 and ids[0] == created.episode_id
    views = [client.get_episode(episode_id) for episode_id in ids]
    assert {view.transcript[0].content for view in views} == {created.observation}
    assert {view.model_dump_json(exclude={"episode_id"}) for view in views} == {
        views[0].model_dump_json(exclude={"episode_id"})
    }


def test_create_episode_group_of_one_omits_n(client: AttuneClient, server: FakeServer) -> None:
    created = client.create_episode(seed=3, n=1)
    assert server.bodies("POST") == [{"seed": 3}]
    assert created.episode_ids == [created.episode_id]


def test_numpy_seed_is_sent_as_int(client: AttuneClient, server: FakeServer) -> None:
    np = pytest.importorskip("numpy")
    client.create_episode(seed=np.int64(5), reward_mode="terminal")
    assert server.bodies("POST") == [{"seed": 5, "options": {"reward_mode": "terminal"}}]


def test_step_sends_action_and_fresh_request_id(client: AttuneClient, server: FakeServer) -> None:
    episode_id = client.create_episode(seed=1).episode_id
    result = client.step(episode_id, "How are you feeling?")
    client.step(episode_id, "Tell me more?")
    assert isinstance(result, StepResponse) and result.info.turn == 1
    bodies = server.bodies("POST", "/step")
    assert [b["action"] for b in bodies] == ["How are you feeling?", "Tell me more?"]
    ids = step_request_ids(server)
    assert len(set(ids)) == 2 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_step_uses_given_request_id_and_replays(client: AttuneClient, server: FakeServer) -> None:
    episode_id = client.create_episode(seed=1).episode_id
    first = client.step(episode_id, "Hello?", request_id="abc")
    again = client.step(episode_id, "Hello?", request_id="abc")
    assert first == again and server.episodes[episode_id].turn == 1
    assert step_request_ids(server) == ["abc", "abc"]


@pytest.mark.parametrize(
    "failure",
    [503, httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("dropped")],
    ids=["503", "ConnectError", "ReadTimeout", "RemoteProtocolError"],
)
def test_step_retry_reuses_request_id(client: AttuneClient, server: FakeServer, failure: int | Exception) -> None:
    episode_id = client.create_episode(seed=1).episode_id
    server.fail_next(failure, failure)
    result = client.step(episode_id, "What happened?")
    assert result.info.turn == 1
    ids = step_request_ids(server)
    assert len(ids) == 3 and len(set(ids)) == 1


def test_retries_are_exhausted_then_typed_errors(client: AttuneClient, server: FakeServer) -> None:
    episode_id = client.create_episode(seed=1).episode_id
    server.fail_next(503, 503, 503, 503)
    with pytest.raises(BackendUnavailableError, match="busy"):
        client.step(episode_id, "Hi?")
    assert len(step_request_ids(server)) == 4  # the first try and 3 retries

    server.fail_next(*[httpx.ConnectError("refused")] * 4)
    with pytest.raises(TransportError, match="after 4 attempts: ConnectError") as info:
        client.get_episode(episode_id)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert info.value.status_code is None and info.value.code is None


def test_retries_zero_disables_retry(server: FakeServer) -> None:
    client = make_client(server, retries=0)
    server.fail_next(503)
    with pytest.raises(BackendUnavailableError):
        client.list_personas()
    assert len(server.requests) == 1


def test_create_episode_retries_only_unsent_errors(client: AttuneClient, server: FakeServer) -> None:
    server.fail_next(httpx.ConnectError("refused"), 503)
    assert client.create_episode(seed=3).info.turn == 0
    assert len(server.requests) == 3

    # A read timeout may mean the episode was created; repeating would create a second one.
    server.requests.clear()
    server.fail_next(httpx.ReadTimeout("slow"))
    with pytest.raises(TransportError, match="ReadTimeout"):
        client.create_episode(seed=3)
    assert len(server.requests) == 1


def test_fork_copies_the_state_and_steps_stay_independent(client: AttuneClient, server: FakeServer) -> None:
    original = client.create_episode(seed=5).episode_id
    client.step(original, "What happened today?")
    forks = client.fork(original, n=2)
    assert server.bodies("POST", "/fork") == [{"n": 2}]
    assert server.requests[-1].url.path == f"/v1/episodes/{original}/fork"
    assert len(set(forks)) == 2 and original not in forks
    before = client.get_episode(original)
    for fork_id in forks:
        view = client.get_episode(fork_id)
        assert view.episode_id == fork_id and view.turn == 1
        assert view.transcript == before.transcript and view.emotions == before.emotions

    client.step(forks[0], "And then?")
    client.step(forks[0], "How did that feel?")
    assert client.get_episode(forks[0]).turn == 3
    assert client.get_episode(forks[1]).transcript == before.transcript
    assert client.get_episode(original) == before

    client.step(original, "Tell me more?")
    assert client.get_episode(forks[1]).turn == 1
    assert len(client.fork(forks[1])) == 1 and server.bodies("POST", "/fork")[-1] == {"n": 1}


def test_fork_of_unknown_episode(client: AttuneClient, server: FakeServer) -> None:
    with pytest.raises(EpisodeNotFoundError, match="'nope' does not exist"):
        client.fork("nope", 3)
    assert len(server.requests) == 1


def test_fork_retries_only_unsent_errors(client: AttuneClient, server: FakeServer) -> None:
    episode_id = client.create_episode(seed=3).episode_id
    server.requests.clear()
    server.fail_next(httpx.ConnectError("refused"), 503)
    assert len(client.fork(episode_id, 2)) == 2
    assert len(server.requests) == 3

    # A read timeout may mean the copies were made; repeating would make more.
    server.requests.clear()
    server.fail_next(httpx.ReadTimeout("slow"))
    with pytest.raises(TransportError, match="ReadTimeout"):
        client.fork(episode_id, 2)
    assert len(server.requests) == 1


def test_get_internals_needs_an_admin_key(server_factory: type[FakeServer]) -> None:
    server = server_factory(api_key="user-key", admin_key="admin-key")
    user = make_client(server, api_key="user-key")
    episode_id = user.create_episode(seed=6).episode_id
    user.step(episode_id, "What's weighing on you?")
    with pytest.raises(PermissionDeniedError, match="admin key") as info:
        user.get_internals(episode_id)
    assert info.value.status_code == 403 and info.value.code.value == "forbidden"
    assert server.requests[-1].url.raw_path == f"/v1/episodes/{episode_id}?view=internals".encode()
    with pytest.raises(PermissionDeniedError):  # refused before the episode is even looked up
        user.get_internals("nope")

    admin = make_client(server, api_key="admin-key")
    internals = admin.get_internals(episode_id)
    assert isinstance(internals, EpisodeInternals)
    assert internals.seed == 6 and internals.hidden_intention.endswith("offers advice.")
    assert [a.turn for a in internals.appraisals] == [1] and internals.appraisals[0].delta == 6
    public = user.get_episode(episode_id)
    assert EpisodeView.model_validate(internals.model_dump(include=set(EpisodeView.model_fields))) == public
    with pytest.raises(EpisodeNotFoundError):
        admin.get_internals("nope")


def test_get_internals_is_open_on_a_server_without_keys(client: AttuneClient) -> None:
    episode_id = client.create_episode(seed=1).episode_id
    assert client.get_internals(episode_id).appraisals == []


def test_backoff_is_exponential_and_honours_retry_after(monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> None:
    sleeps: list[float] = []
    patch_sleep(monkeypatch, http_module, "time", sleeps.append)
    client = make_client(server, backoff=0.5)
    server.fail_next(httpx.ConnectError("refused"), 503, 503)
    client.list_personas()
    assert sleeps == [0.5, 1.0, 2.0]

    sleeps.clear()
    responses = iter([httpx.Response(503, headers={"Retry-After": "3"}), httpx.Response(200, json={"personas": []})])
    assert make_client(lambda request: next(responses), backoff=0.5).list_personas() == []
    assert sleeps == [3.0]


def test_not_found_raises_with_message(client: AttuneClient) -> None:
    with pytest.raises(EpisodeNotFoundError, match="'nope' does not exist") as info:
        client.step("nope", "hello")
    assert info.value.status_code == 404 and info.value.code.value == "episode_not_found"
    with pytest.raises(PersonaNotFoundError):
        client.get_persona("nobody")


def test_finished_episode_raises(client: AttuneClient) -> None:
    episode_id = client.create_episode(seed=1, max_turns=1).episode_id
    assert client.step(episode_id, "Hi?").truncated
    with pytest.raises(EpisodeFinishedError):
        client.step(episode_id, "Still there?")


def test_ids_are_quoted_into_the_path(client: AttuneClient, server: FakeServer) -> None:
    with pytest.raises(EpisodeNotFoundError):
        client.get_episode("a/b?c")
    assert server.requests[-1].url.raw_path == b"/v1/episodes/a%2Fb%3Fc"
    with pytest.raises(ValueError, match="non-empty"):
        client.get_episode("")


def test_base_url_path_prefix_is_kept(server: FakeServer) -> None:
    client = AttuneClient("http://attune.test/attune", transport=httpx.MockTransport(server))
    client.healthz()
    assert server.requests[-1].url.path == "/attune/healthz"


def test_auth_header_sent_only_with_api_key(server_factory: type[FakeServer]) -> None:
    server = server_factory(api_key="s3cret")
    with pytest.raises(AuthenticationError, match="API key"):
        make_client(server).list_personas()
    assert "authorization" not in server.requests[-1].headers
    personas = make_client(server, api_key="s3cret").list_personas()
    assert server.requests[-1].headers["authorization"] == "Bearer s3cret"
    assert [p.id for p in personas] == ["riley-burnout", "mei-family"]


def test_episode_lifecycle(client: AttuneClient, server: FakeServer) -> None:
    episode_id = client.create_episode(seed=2).episode_id
    client.step(episode_id, "That sounds hard. What happened?")
    view = client.get_episode(episode_id)
    assert isinstance(view, EpisodeView)
    assert view.turn == 1 and [m.role.value for m in view.transcript] == ["user", "assistant", "user"]
    assert client.delete_episode(episode_id) is None
    assert episode_id not in server.episodes
    with pytest.raises(EpisodeNotFoundError):
        client.delete_episode(episode_id)


def test_get_persona(client: AttuneClient) -> None:
    persona = client.get_persona("mei-family")
    assert isinstance(persona, PersonaPublic) and persona.language == "zh"


def test_malformed_success_body_is_server_error() -> None:
    client = make_client(lambda request: httpx.Response(200, json={"personas": [{"id": 1}]}))
    with pytest.raises(ServerError, match="cannot read") as info:
        client.list_personas()
    assert info.value.status_code == 200


def test_health_probes_never_raise_and_never_retry(server: FakeServer) -> None:
    client = make_client(server)
    assert client.healthz() is True and client.readyz() is True
    server.fail_next(503)
    assert client.readyz() is False
    server.fail_next(httpx.ConnectError("refused"))
    assert client.healthz() is False
    assert len(server.requests) == 4


def test_step_rejects_non_str_action(client: AttuneClient, server: FakeServer) -> None:
    with pytest.raises(TypeError, match="action must be a str"):
        client.step("e", 42)  # type: ignore[arg-type]
    assert server.requests == []


@pytest.mark.parametrize(("retries", "backoff"), [(-1, 0.5), (3, -0.1)])
def test_invalid_retry_settings(retries: int, backoff: float) -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        AttuneClient(retries=retries, backoff=backoff)


def test_deepcopy_shares_the_client(client: AttuneClient) -> None:
    # Gymnasium deep-copies env spec kwargs (env.spec.make()), which may hold a client.
    assert copy.deepcopy({"client": client})["client"] is client


def test_close_is_idempotent_and_context_manager_closes(server: FakeServer) -> None:
    client = make_client(server)
    with client as entered:
        assert entered is client
    client.close()
    assert client._http.is_closed
    assert "attune.test" in repr(client)


def test_async_client_mirrors_sync(server: FakeServer, async_client_factory: Callable[..., AsyncAttuneClient]) -> None:
    async def scenario() -> None:
        async with async_client_factory() as client:
            created = await client.create_episode(seed=4, max_turns=4)
            server.fail_next(503, httpx.ConnectError("refused"))
            result = await client.step(created.episode_id, "What's on your mind?")
            assert result.info.turn == 1
            ids = step_request_ids(server)
            assert len(ids) == 3 and len(set(ids)) == 1

            view = await client.get_episode(created.episode_id)
            assert view.turn == 1
            assert [p.id for p in await client.list_personas()] == ["riley-burnout", "mei-family"]
            assert (await client.get_persona("riley-burnout")).name == "Riley"
            assert await client.healthz() and await client.readyz()
            await client.delete_episode(created.episode_id)
            with pytest.raises(EpisodeNotFoundError, match="does not exist"):
                await client.step(created.episode_id, "Hello?")
        assert client._http.is_closed
        await client.aclose()

    asyncio.run(scenario())


def test_async_client_groups_forks_and_internals(
    server_factory: type[FakeServer],
) -> None:
    server = server_factory(api_key="user-key", admin_key="admin-key")

    def make(key: str) -> AsyncAttuneClient:
        return AsyncAttuneClient("http://attune.test", api_key=key, transport=httpx.MockTransport(server), backoff=0)

    async def scenario() -> None:
        async with make("user-key") as user, make("admin-key") as admin:
            created = await user.create_episode(seed=8, n=3)
            assert len(set(created.episode_ids)) == 3 and created.episode_ids[0] == created.episode_id
            first, second, _ = created.episode_ids
            await user.step(first, "What happened?")
            server.fail_next(httpx.ConnectError("refused"))
            forks = await user.fork(first, n=2)
            assert len(set(forks)) == 2 and server.bodies("POST", "/fork") == [{"n": 2}] * 2  # first try and retry
            await user.step(forks[0], "Go on?")
            turns = [(await user.get_episode(i)).turn for i in (first, second, *forks)]
            assert turns == [1, 0, 2, 1]
            assert (await user.get_episode(forks[1])).transcript == (await user.get_episode(first)).transcript

            with pytest.raises(EpisodeNotFoundError):
                await user.fork("nope")
            with pytest.raises(PermissionDeniedError, match="admin key"):
                await user.get_internals(first)
            internals = await admin.get_internals(forks[0])
            assert internals.seed == 8 and [a.turn for a in internals.appraisals] == [1, 2]

    asyncio.run(scenario())


def test_async_client_errors_and_auth(server_factory: type[FakeServer]) -> None:
    server = server_factory(api_key="k")

    async def scenario() -> None:
        client = AsyncAttuneClient("http://attune.test", transport=httpx.MockTransport(server), backoff=0.0)
        with pytest.raises(AuthenticationError):
            await client.list_personas()
        authed = AsyncAttuneClient("http://attune.test", api_key="k", transport=httpx.MockTransport(server))
        assert len(await authed.list_personas()) == 2
        assert server.requests[-1].headers["authorization"] == "Bearer k"
        server.fail_next(*[httpx.ConnectError("refused")] * 2)
        no_retry = AsyncAttuneClient("http://attune.test", api_key="k", retries=1, backoff=0.0,
                                     transport=httpx.MockTransport(server))  # fmt: skip
        with pytest.raises(TransportError, match="after 2 attempts"):
            await no_retry.list_personas()
        for c in (client, authed, no_retry):
            await c.aclose()

    asyncio.run(scenario())


def test_async_backoff_uses_asyncio_sleep(monkeypatch: pytest.MonkeyPatch, server: FakeServer) -> None:
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    patch_sleep(monkeypatch, http_module, "asyncio", fake_sleep)
    assert asyncio.sleep is not fake_sleep  # only the client module sees it, not the session server's thread

    async def scenario() -> None:
        client = AsyncAttuneClient("http://attune.test", transport=httpx.MockTransport(server), backoff=0.25)
        server.fail_next(503, 503)
        await client.list_personas()
        await client.aclose()

    asyncio.run(scenario())
    assert sleeps == [0.25, 0.5]


def test_request_bodies_are_json(client: AttuneClient, server: FakeServer) -> None:
    client.create_episode(seed=9)
    request = server.requests[-1]
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"seed": 9}
    assert request.headers["user-agent"].startswith("attune-client")
