"""One contract for every episode store: the memory and the Redis store pass the same tests.

The Redis cases (marker ``redis``) use the real Redis at 127.0.0.1:6379, each test under its own key
prefix, deleted afterwards, so suites sharing that Redis never meet. A Redis that is down fails them:
they never skip. Time-to-live runs on a fake clock for the memory store and on real sleeps for Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from attune_client.wire import Message, RewardMode, RewardSpec, Role
from env_server.agent.episode import EpisodeRecord, advance
from env_server.errors import BackendUnavailable, EpisodeBusy, EpisodeNotFound, RequestConflict
from env_server.llm.protocol import Appraisal
from env_server.sessions.memory import MemoryStore
from env_server.sessions.protocol import EpisodeStore
from env_server.sessions.redis import LeaseExpired, RedisStore
from tests.support.personas import minimal_persona

pytestmark = pytest.mark.asyncio

REDIS_URL = "redis://127.0.0.1:6379/0"
PERSONA = minimal_persona()


def make_record(episode_id: str | None = None, emotion: int = 40) -> EpisodeRecord:
    return EpisodeRecord(
        episode_id=episode_id or uuid.uuid4().hex,
        persona_id="p1",
        seed=7,
        max_turns=6,
        reward=RewardSpec(mode=RewardMode.dense),
        emotion=emotion,
        transcript=[Message(role=Role.user, content="I had a rough week.", emotion=emotion)],
        emotions=[emotion],
        owner="fingerprint",
    )


def stepped(record: EpisodeRecord, action: str = "What happened?") -> EpisodeRecord:
    """The record after one supporter turn: a new state with a transcript, an appraisal and a step."""
    appraisal = Appraisal(thoughts="They asked.", delta=5, signals={"question": 1.0})
    return advance(record, PERSONA, action, appraisal, "Work, mostly.", uuid.uuid4().hex)[0]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """Builds stores of one kind (Redis ones share a key prefix) and lets time pass for them."""

    name: str
    make: Callable[..., EpisodeStore]
    """``make(ttl_s=3600, lease_s=600, namespace="")``: a new store; Redis stores share ``prefix``."""
    elapse: Callable[[float], Awaitable[None]]
    prefix: str = ""
    raw: aioredis.Redis | None = None


@asynccontextmanager
async def memory_backend() -> AsyncIterator[Backend]:
    clock = FakeClock()

    def make(ttl_s: float = 3600, lease_s: float = 600, namespace: str = "") -> EpisodeStore:
        return MemoryStore(ttl_s=ttl_s, clock=clock)

    async def elapse(seconds: float) -> None:
        clock.now += seconds

    yield Backend("memory", make, elapse)


@asynccontextmanager
async def redis_backend() -> AsyncIterator[Backend]:
    raw = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    await raw.ping()  # Redis down: this test errors out, it does not skip
    prefix, stores = f"attune-test-{uuid.uuid4().hex}:", []

    def make(ttl_s: float = 3600, lease_s: float = 600, namespace: str = "") -> EpisodeStore:
        stores.append(RedisStore(REDIS_URL, ttl_s=ttl_s, prefix=prefix + namespace, lease_s=lease_s))
        return stores[-1]

    try:
        yield Backend("redis", make, asyncio.sleep, prefix, raw)
    finally:
        for store in stores:
            await store.aclose()
        keys = [key async for key in raw.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


BACKENDS = {"memory": memory_backend, "redis": redis_backend}


@pytest_asyncio.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async with BACKENDS[request.param]() as built:
        yield built


@pytest_asyncio.fixture
async def store(backend: Backend) -> EpisodeStore:
    return backend.make()


@pytest_asyncio.fixture
async def redis() -> AsyncIterator[Backend]:
    async with redis_backend() as built:
        yield built


async def test_store_satisfies_the_protocol(store: EpisodeStore) -> None:
    assert isinstance(store, EpisodeStore)


async def test_create_then_get_returns_an_equal_record(store: EpisodeStore) -> None:
    record = stepped(make_record())
    await store.create(record)
    assert await store.get(record.episode_id) == record


async def test_get_of_an_unknown_episode_is_not_found(store: EpisodeStore) -> None:
    with pytest.raises(EpisodeNotFound, match="'nope'"):
        await store.get("nope")


async def test_save_replaces_the_episode(store: EpisodeStore) -> None:
    record = make_record()
    await store.create(record)
    await store.save(updated := stepped(record))
    assert await store.get(record.episode_id) == updated


async def test_save_of_an_unknown_episode_is_not_found_and_creates_nothing(store: EpisodeStore) -> None:
    record = make_record()
    with pytest.raises(EpisodeNotFound):
        await store.save(record)
    with pytest.raises(EpisodeNotFound):
        await store.get(record.episode_id)


async def test_deleted_episode_is_not_found(store: EpisodeStore) -> None:
    record = make_record()
    await store.create(record)
    await store.delete(record.episode_id)
    with pytest.raises(EpisodeNotFound):
        await store.get(record.episode_id)
    with pytest.raises(EpisodeNotFound):
        await store.delete(record.episode_id)


async def test_delete_of_an_unknown_episode_is_not_found(store: EpisodeStore) -> None:
    with pytest.raises(EpisodeNotFound, match="'nope'"):
        await store.delete("nope")


async def test_create_many_stores_every_record(store: EpisodeStore) -> None:
    records = [make_record(emotion=30 + i) for i in range(5)]
    await store.create_many(records)
    await store.create_many([])
    assert [await store.get(r.episode_id) for r in records] == records
    assert await store.count() == 5


async def test_creating_the_same_record_twice_is_harmless(store: EpisodeStore) -> None:
    # What a create retried after a lost reply does.
    record = make_record()
    await store.create(record)
    await store.create(record)
    assert await store.get(record.episode_id) == record
    assert await store.count() == 1


async def test_count_follows_creates_and_deletes(store: EpisodeStore) -> None:
    assert await store.count() == 0
    records = [make_record() for _ in range(3)]
    for record in records:
        await store.create(record)
    await store.delete(records[0].episode_id)
    assert await store.count() == 2


async def test_ping_answers_true(store: EpisodeStore) -> None:
    assert await store.ping() is True


async def test_concurrent_lease_is_busy_until_the_first_is_released(store: EpisodeStore) -> None:
    record = make_record()
    await store.create(record)
    entered, leave = asyncio.Event(), asyncio.Event()

    async def first_step() -> None:
        async with store.lease(record.episode_id):
            entered.set()
            await leave.wait()

    task = asyncio.create_task(first_step())
    await entered.wait()
    with pytest.raises(EpisodeBusy, match=record.episode_id):
        async with store.lease(record.episode_id):
            pytest.fail("two steps held one episode")
    leave.set()
    await task
    async with store.lease(record.episode_id):
        pass


async def test_lease_is_released_when_the_step_raises(store: EpisodeStore) -> None:
    class StepFailed(Exception):
        pass

    with pytest.raises(StepFailed):
        async with store.lease("e1"):
            raise StepFailed
    async with store.lease("e1"):
        pass


async def test_leases_on_different_episodes_are_independent(store: EpisodeStore) -> None:
    async with store.lease("e1"), store.lease("e2"):
        with pytest.raises(EpisodeBusy):
            async with store.lease("e1"):
                pass


async def test_save_inside_the_lease_commits_the_step(store: EpisodeStore) -> None:
    record = make_record()
    await store.create(record)
    async with store.lease(record.episode_id):
        updated = stepped(await store.get(record.episode_id))
        await store.save(updated)
    assert await store.get(record.episode_id) == updated


async def test_unused_episode_expires_while_use_refreshes_it(backend: Backend) -> None:
    store = backend.make(ttl_s=1)
    unused, read, saved = make_record(), make_record(), make_record()
    await store.create_many([unused, read, saved])
    await backend.elapse(0.7)
    await store.get(read.episode_id)
    await store.save(saved := stepped(saved))
    await backend.elapse(0.7)  # 1.4 s after create, 0.7 s after the last use
    assert await store.get(read.episode_id) == read
    assert await store.get(saved.episode_id) == saved
    with pytest.raises(EpisodeNotFound):
        await store.get(unused.episode_id)
    with pytest.raises(EpisodeNotFound):
        await store.save(unused)
    assert await store.count() == 2


@pytest.mark.redis
async def test_keys_and_their_expiry_follow_the_documented_layout(redis: Backend) -> None:
    store, raw = redis.make(ttl_s=60, lease_s=5), redis.raw
    record = make_record()
    await store.create(record)
    assert await raw.get(f"{redis.prefix}ep:{record.episode_id}") == record.model_dump_json()
    assert 0 < await raw.pttl(f"{redis.prefix}ep:{record.episode_id}") <= 60_000
    async with store.lease(record.episode_id):
        assert await raw.get(f"{redis.prefix}lease:{record.episode_id}")
        assert 0 < await raw.pttl(f"{redis.prefix}lease:{record.episode_id}") <= 5_000
    assert not await raw.exists(f"{redis.prefix}lease:{record.episode_id}")


@pytest.mark.redis
async def test_two_servers_see_each_others_writes(redis: Backend) -> None:
    first, second = redis.make(), redis.make()
    record = make_record()
    await first.create(record)
    assert await second.get(record.episode_id) == record
    await second.save(updated := stepped(record))
    assert await first.get(record.episode_id) == updated
    assert await first.count() == await second.count() == 1
    await first.delete(record.episode_id)
    with pytest.raises(EpisodeNotFound):
        await second.get(record.episode_id)


@pytest.mark.redis
async def test_lease_held_by_one_server_makes_the_other_busy(redis: Backend) -> None:
    first, second = redis.make(), redis.make()
    async with first.lease("e1"):
        with pytest.raises(EpisodeBusy):
            async with second.lease("e1"):
                pass
    async with second.lease("e1"):
        pass


@pytest.mark.redis
async def test_step_that_outlived_its_lease_cannot_overwrite_the_newer_state(redis: Backend) -> None:
    slow, fast = redis.make(lease_s=0.2), redis.make()
    record = make_record()
    await slow.create(record)
    async with AsyncExitStack() as fast_step:
        async with slow.lease(record.episode_id):
            stale = stepped(await slow.get(record.episode_id), "stale")
            time.sleep(0.4)  # the slow server's event loop stalls past its lease: no renewal; another takes over
            await fast_step.enter_async_context(fast.lease(record.episode_id))
            await fast.save(newer := stepped(await fast.get(record.episode_id), "newer"))
            with pytest.raises(LeaseExpired, match="lease") as refused:
                await slow.save(stale)
            assert isinstance(refused.value, EpisodeBusy) and refused.value.status_code == 409
        # Leaving its block, the slow step must not release the lease the fast one holds.
        with pytest.raises(EpisodeBusy):
            async with slow.lease(record.episode_id):
                pass
    assert await slow.get(record.episode_id) == newer


@pytest.mark.redis
async def test_a_live_slow_step_keeps_renewing_its_lease(redis: Backend) -> None:
    store, other = redis.make(lease_s=0.3), redis.make(lease_s=0.3)
    record = make_record()
    await store.create(record)
    async with store.lease(record.episode_id):
        await asyncio.sleep(1.0)  # a slow model call: more than three lease lengths
        with pytest.raises(EpisodeBusy):
            async with other.lease(record.episode_id):
                pass
        await store.save(newer := stepped(record))
    assert await store.get(record.episode_id) == newer
    async with other.lease(record.episode_id):  # released on exit, not left to expire
        pass


@pytest.mark.redis
async def test_expired_lease_refuses_the_save_even_when_nobody_took_over(redis: Backend) -> None:
    store = redis.make(lease_s=0.2)
    record = make_record()
    await store.create(record)
    async with store.lease(record.episode_id):
        time.sleep(0.4)  # a stalled event loop cannot renew the lease
        with pytest.raises(LeaseExpired):
            await store.save(stepped(record))
    assert await store.get(record.episode_id) == record


@pytest.mark.redis
async def test_overrunning_step_and_its_successor_in_one_process_keep_separate_leases(redis: Backend) -> None:
    store = redis.make(lease_s=0.2)
    record = make_record()
    await store.create(record)
    overran, successor_done = asyncio.Event(), asyncio.Event()

    async def successor() -> EpisodeRecord:
        await overran.wait()
        async with store.lease(record.episode_id):
            await store.save(newer := stepped(record, "newer"))
        successor_done.set()
        return newer

    task = asyncio.create_task(successor())
    async with store.lease(record.episode_id):
        time.sleep(0.4)  # stalled: the lease lapses without renewal
        overran.set()
        await successor_done.wait()
        with pytest.raises(LeaseExpired):
            await store.save(stepped(record, "stale"))
    assert await store.get(record.episode_id) == await task


@pytest.mark.redis
async def test_duplicate_id_never_overwrites_and_create_many_is_all_or_none(redis: Backend) -> None:
    store = redis.make()
    existing = make_record()
    await store.create(existing)
    with pytest.raises(RequestConflict, match="already exists"):
        await store.create(stepped(existing))
    fresh = make_record()
    with pytest.raises(RequestConflict, match=existing.episode_id):
        await store.create_many([fresh, stepped(existing)])
    with pytest.raises(RequestConflict, match="repeat"):
        await store.create_many([fresh, fresh])
    assert await store.get(existing.episode_id) == existing
    with pytest.raises(EpisodeNotFound):
        await store.get(fresh.episode_id)


@pytest.mark.redis
async def test_count_sees_only_its_own_prefix_even_with_glob_characters(redis: Backend) -> None:
    globby, plain = redis.make(namespace="[a]*:"), redis.make(namespace="a:")
    await globby.create(make_record())
    await plain.create_many([make_record(), make_record()])
    assert (await globby.count(), await plain.count()) == (1, 2)


async def _step(store: EpisodeStore, record: EpisodeRecord) -> None:
    async with store.lease(record.episode_id):
        pass


UNREACHABLE_CALLS = {
    "create": lambda store, record: store.create(record),
    "create_many": lambda store, record: store.create_many([record]),
    "get": lambda store, record: store.get(record.episode_id),
    "save": lambda store, record: store.save(record),
    "delete": lambda store, record: store.delete(record.episode_id),
    "lease": _step,
    "count": lambda store, record: store.count(),
}


@pytest.mark.parametrize("call", UNREACHABLE_CALLS.values(), ids=UNREACHABLE_CALLS.keys())
async def test_unreachable_redis_is_backend_unavailable(call) -> None:
    store = RedisStore("redis://127.0.0.1:1", timeout_s=1)
    try:
        assert await store.ping() is False
        with pytest.raises(BackendUnavailable, match="episode store unavailable") as raised:
            await call(store, make_record())
        assert raised.value.status_code == 503
    finally:
        await store.aclose()
