"""In-process episode store: the embedded default. Episodes are lost when the process exits."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from env_server.agent.episode import EpisodeRecord
from env_server.errors import EpisodeBusy, EpisodeNotFound

__all__ = ["MemoryStore"]


class MemoryStore:
    """Episodes as JSON strings in a dict.

    Stored serialized, not as objects, so no caller can mutate a stored episode by accident and the
    memory store behaves exactly like the Redis one.
    """

    def __init__(self) -> None:
        self._episodes: dict[str, str] = {}
        self._leased: set[str] = set()

    async def create(self, record: EpisodeRecord) -> None:
        self._episodes[record.episode_id] = record.model_dump_json()

    async def get(self, episode_id: str) -> EpisodeRecord:
        try:
            return EpisodeRecord.model_validate_json(self._episodes[episode_id])
        except KeyError:
            raise EpisodeNotFound(episode_id) from None

    async def save(self, record: EpisodeRecord) -> None:
        if record.episode_id not in self._episodes:
            raise EpisodeNotFound(record.episode_id)
        self._episodes[record.episode_id] = record.model_dump_json()

    async def delete(self, episode_id: str) -> None:
        if self._episodes.pop(episode_id, None) is None:
            raise EpisodeNotFound(episode_id)

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
        return len(self._episodes)

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        self._episodes.clear()
