"""Redis episode store: episodes outlive the server process and are shared by every server on one Redis.

Keys, for a store built with ``prefix="attune:"``:

- ``attune:ep:{id}``: the episode as :class:`~env_server.agent.episode.EpisodeRecord` JSON, expiring
  ``ttl_s`` after its last create, get or save (Redis ``PX`` expiry, so nothing has to sweep).
- ``attune:lease:{id}``: the random token of the step that holds the episode, expiring after ``lease_s``.

A step is :meth:`RedisStore.lease` then :meth:`RedisStore.save`: the save is one Lua script that writes
the episode only while the lease key still holds this step's token. Taking the lease is one script too,
which also reads the episode, so the step's :meth:`RedisStore.get` needs no round trip of its own. A
server killed with ``kill -9`` mid-step leaves its lease behind; the episode answers
:class:`~env_server.errors.EpisodeBusy` until the lease expires ``lease_s`` later, then steps normally. A
live step renews its lease every ``lease_s / 3`` seconds, so a slow model call never loses it and
``lease_s`` can stay short; a step that lost its lease anyway (its event loop stalled past ``lease_s``) has
its save refused with :class:`LeaseExpired` instead of overwriting whatever another server committed
meanwhile.

Every write is safe to send twice (redis-py retries a command once the connection drops): re-creating
an identical episode, re-taking a lease with our own token, re-saving the same state and re-releasing
all give the first call's result. Connection failures surface as
:class:`~env_server.errors.BackendUnavailable` (503), each operation being a single command or script,
so nothing is ever half-applied.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from env_server.agent.episode import EpisodeRecord
from env_server.errors import AttuneServerError, BackendUnavailable, EpisodeBusy, EpisodeNotFound, RequestConflict

__all__ = ["LeaseExpired", "RedisStore"]

log = logging.getLogger("attune.sessions")

# KEYS: episode keys. ARGV[1]: TTL in ms, ARGV[i + 1]: JSON for KEYS[i]. Returns 0, or the 1-based
# index of a key that already holds a different episode (then nothing is written). An identical value
# is not a conflict, so a create retried after a lost reply succeeds.
_CREATE = """
for i, key in ipairs(KEYS) do
  local current = redis.call('GET', key)
  if current and current ~= ARGV[i + 1] then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
end
return 0
"""

# KEYS[1]: lease, KEYS[2]: episode. ARGV: token, lease TTL in ms, episode TTL in ms. Takes the lease (or finds
# it already ours: a call retried after its reply was lost) and reads the episode, refreshing its expiry as a
# get does. Returns -1 when another step holds the lease, else the episode JSON, or 0 when there is none.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('GETEX', KEYS[2], 'PX', ARGV[3]) or 0
"""

# KEYS[1]: episode, KEYS[2]: lease. ARGV: token, JSON, TTL in ms. 1 saved, 0 episode gone, -1 lease lost.
_SAVE_LEASED = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
if redis.call('SET', KEYS[1], ARGV[2], 'XX', 'PX', ARGV[3]) then return 1 end
return 0
"""

# KEYS[1]: lease, ARGV: token, TTL in ms. Extends the lease only if it is still ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS[1]: lease, ARGV[1]: token. Deletes the lease only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class _Lease:
    """A lease this task holds: its token, and the episode as read when the lease was taken, until used."""

    token: str
    unread: str | None


_NO_LEASES: Mapping[str, _Lease] = MappingProxyType({})
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class LeaseExpired(EpisodeBusy):
    """A step's save refused because its lease expired: another step may have committed meanwhile.

    An :class:`~env_server.errors.EpisodeBusy` (409, ``episode_busy``), so clients retry it the same
    way; nothing of the refused step was stored, so the retry steps afresh.
    """

    def __init__(self, episode_id: str, lease_s: float) -> None:
        AttuneServerError.__init__(
            self,
            f"episode {episode_id!r}: this step outlived its {lease_s:g} s lease and was not saved, "
            "so it cannot overwrite a newer state; retry the step",
        )
        self.episode_id, self.lease_s = episode_id, lease_s


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


@contextmanager
def _reachable() -> Iterator[None]:
    """Turn a lost or timed-out Redis connection into a 503."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise BackendUnavailable(f"episode store unavailable: {type(exc).__name__}: {exc}") from exc


class RedisStore:
    """Episodes in Redis, each key expiring ``ttl_s`` after its last use.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL; its query string may override the socket
            timeouts (``?socket_timeout=2``).
        ttl_s: Seconds an unused episode is kept.
        prefix: Namespace of every key, so several deployments (or test runs) can share one Redis.
        lease_s: Seconds a step's lease lasts: how long an episode stays busy after its server died
            mid-step, and the longest a step may take before its save is refused.
        timeout_s: Socket connect and command timeout; past it an operation is a 503.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 3600,
        prefix: str = "attune:",
        lease_s: float = 600,
        timeout_s: float = 5.0,
    ) -> None:
        if ttl_s <= 0 or lease_s <= 0:
            raise ValueError("ttl_s and lease_s must be positive")
        self.ttl_s, self.prefix, self.lease_s = ttl_s, prefix, lease_s
        self._redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            # A pooled connection that died with a Redis restart is retried at once, not reported as a 503.
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        )
        self._create = self._redis.register_script(_CREATE)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._save_leased = self._redis.register_script(_SAVE_LEASED)
        self._release = self._redis.register_script(_RELEASE)
        self._renew = self._redis.register_script(_RENEW)
        # Leases this task holds, episode id -> lease. A ContextVar rather than a dict on the store, so two
        # steps in one process never see each other's token (a step whose lease expired and was retaken by
        # another request here must still be refused).
        self._held: ContextVar[Mapping[str, _Lease]] = ContextVar(f"attune_leases_{id(self)}", default=_NO_LEASES)

    def _ep(self, episode_id: str) -> str:
        return f"{self.prefix}ep:{episode_id}"

    def _lease(self, episode_id: str) -> str:
        return f"{self.prefix}lease:{episode_id}"

    async def create(self, record: EpisodeRecord) -> None:
        """Store a new episode; :class:`~env_server.errors.RequestConflict` if its id holds another one."""
        await self.create_many([record])

    async def create_many(self, records: list[EpisodeRecord]) -> None:
        """Store several new episodes in one script: all, or none when any id is taken."""
        if not records:
            return
        ids = [record.episode_id for record in records]
        if len(set(ids)) != len(ids):
            raise RequestConflict(f"episode ids repeat within one batch: {ids}")
        with _reachable():
            taken = await self._create(
                keys=[self._ep(episode_id) for episode_id in ids],
                args=[_ms(self.ttl_s), *(record.model_dump_json() for record in records)],
            )
        if taken:
            raise RequestConflict(f"episode {ids[taken - 1]!r} already exists; nothing was created")

    async def get(self, episode_id: str) -> EpisodeRecord:
        """The episode, its expiry pushed back to ``ttl_s``; :class:`~env_server.errors.EpisodeNotFound` if gone."""
        lease = self._held.get().get(episode_id)
        if lease is not None and lease.unread is not None:
            # Read (its expiry refreshed) as this task took the lease; no other step can have committed since.
            data, lease.unread = lease.unread, None
        else:
            with _reachable():
                data = await self._redis.getex(self._ep(episode_id), px=_ms(self.ttl_s))
        if data is None:
            raise EpisodeNotFound(episode_id)
        return EpisodeRecord.model_validate_json(data)

    async def save(self, record: EpisodeRecord) -> None:
        """Replace an existing episode; inside :meth:`lease`, only while that lease is still ours.

        Raises:
            EpisodeNotFound: The episode expired or was deleted.
            LeaseExpired: This task leased the episode but the lease expired; nothing was written.
        """
        episode_id = record.episode_id
        lease = self._held.get().get(episode_id)
        token = None
        if lease is not None:
            token, lease.unread = lease.token, None  # a later get must see what this save leaves
        key, data, ttl_ms = self._ep(episode_id), record.model_dump_json(), _ms(self.ttl_s)
        with _reachable():
            if token is None:
                saved = await self._redis.set(key, data, xx=True, px=ttl_ms)
            else:
                saved = await self._save_leased(keys=[key, self._lease(episode_id)], args=[token, data, ttl_ms])
        if saved == -1:
            raise LeaseExpired(episode_id, self.lease_s)
        if not saved:
            raise EpisodeNotFound(episode_id)

    async def delete(self, episode_id: str) -> None:
        """Remove an episode; :class:`~env_server.errors.EpisodeNotFound` if it is already gone."""
        if (lease := self._held.get().get(episode_id)) is not None:
            lease.unread = None
        with _reachable():
            deleted = await self._redis.delete(self._ep(episode_id))
        if not deleted:
            raise EpisodeNotFound(episode_id)

    @asynccontextmanager
    async def lease(self, episode_id: str) -> AsyncIterator[None]:
        """Hold the episode for one step, across every server on this Redis.

        The lease expires after ``lease_s`` even if this process dies. Leaving the block deletes it only
        if it still holds our token, so a step that overran never releases its successor's lease.

        Raises:
            EpisodeBusy: Another step holds the episode.
        """
        key, token = self._lease(episode_id), secrets.token_hex(16)
        with _reachable():
            found = await self._acquire(
                keys=[key, self._ep(episode_id)], args=[token, _ms(self.lease_s), _ms(self.ttl_s)]
            )
        if found == -1:
            raise EpisodeBusy(episode_id)
        held = self._held.set({**self._held.get(), episode_id: _Lease(token, found or None)})
        heartbeat = asyncio.create_task(self._keep(key, token))
        try:
            yield
        finally:
            heartbeat.cancel()
            self._held.reset(held)
            try:
                with _reachable():
                    await self._release(keys=[key], args=[token])
            except BackendUnavailable as exc:
                # Raising here would hide the step's own outcome; the lease expires by itself.
                log.warning("lease on episode %s not released (expires in %g s): %s", episode_id, self.lease_s, exc)

    async def _keep(self, key: str, token: str) -> None:
        """Renew a held lease until cancelled; stop quietly once it is no longer ours or Redis is gone."""
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self._renew(keys=[key], args=[token, _ms(self.lease_s)]):
                    return
            except Exception as exc:  # the save will report an unreachable store; this task must not
                log.warning("lease %s not renewed: %s", key, exc)
                return

    async def count(self) -> int:
        """Episodes stored under this prefix (an incremental SCAN; Redis skips expired keys)."""
        pattern = _GLOB_SPECIAL.sub(r"\\\1", self.prefix) + "ep:*"
        found = 0
        with _reachable():
            async for _ in self._redis.scan_iter(match=pattern, count=1000):
                found += 1
        return found

    async def ping(self) -> bool:
        """Whether Redis answers; never raises."""
        try:
            return bool(await self._redis.ping())
        except (RedisError, OSError):
            return False

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._redis.aclose()
