"""In-process episode store: the embedded default. Episodes are lost when the process exits."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from env_server.agent.episode import EpisodeRecord
from env_server.errors import EpisodeBusy, EpisodeNotFound

__all__ = ["MemoryStore"]


class MemoryStore:
    """Episodes as JSON strings in a dict, each with an expiry time.

    Stored serialized, not as objects, so no caller can mutate a stored episode by accident and the
    memory store behaves exactly like the Redis one.
    """

    def __init__(self, ttl_s: float = 3600, clock=time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._episodes: dict[str, tuple[str, float]] = {}
        self._leased: set[str] = set()

    def _put(self, record: EpisodeRecord) -> None:
        self._episodes[record.episode_id] = (record.model_dump_json(), self._clock() + self.ttl_s)

    def _live(self, episode_id: str) -> str:
        entry = self._episodes.get(episode_id)
        if entry is None or entry[1] <= self._clock():
            self._episodes.pop(episode_id, None)
            raise EpisodeNotFound(episode_id)
        self._episodes[episode_id] = (entry[0], self._clock() + self.ttl_s)
        return entry[0]

    async def create(self, record: EpisodeRecord) -> None:
        self._put(record)

    async def create_many(self, records: list[EpisodeRecord]) -> None:
        for record in records:
            self._put(record)

    async def get(self, episode_id: str) -> EpisodeRecord:
        return EpisodeRecord.model_validate_json(self._live(episode_id))

    async def save(self, record: EpisodeRecord) -> None:
        self._live(record.episode_id)
        self._put(record)

    async def delete(self, episode_id: str) -> None:
        self._live(episode_id)
        del self._episodes[episode_id]

    @asynccontextmanager
    async def lease(self, episode_id: str) -> AsyncIterator[None]:
        # One event loop owns this dict, so check-and-add needs no lock.
        if episode_id in self._leased:
            raise EpisodeBusy(episode_id)
        self._leased.add(episode_id)
        try:
            yield
        finally:
            self._leased.discard(episode_id)

    async def count(self) -> int:
        now = self._clock()
        expired = [key for key, (_, deadline) in self._episodes.items() if deadline <= now]
        for key in expired:
            del self._episodes[key]
        return len(self._episodes)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._episodes.clear()
