"""The episode store protocol. Memory and Redis stores implement it and pass the same test suite."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol, runtime_checkable

from env_server.agent.episode import EpisodeRecord

__all__ = ["EpisodeStore"]


@runtime_checkable
class EpisodeStore(Protocol):
    """Where episodes live between requests.

    A step holds :meth:`lease` for its whole duration; a second step on the same episode meanwhile gets
    :class:`~env_server.errors.EpisodeBusy`. :meth:`save` is the step's single commit point. Every episode
    expires ``ttl_s`` seconds after its last use (create, get or save refresh it); an expired episode is
    :class:`~env_server.errors.EpisodeNotFound`.
    """

    async def create(self, record: EpisodeRecord) -> None:
        """Store a new episode."""
        ...

    async def create_many(self, records: list[EpisodeRecord]) -> None:
        """Store several new episodes at once (a fork or a GRPO group): all or none."""
        ...

    async def get(self, episode_id: str) -> EpisodeRecord:
        """The episode, or :class:`~env_server.errors.EpisodeNotFound`."""
        ...

    async def save(self, record: EpisodeRecord) -> None:
        """Replace an existing episode with its next state, atomically."""
        ...

    async def delete(self, episode_id: str) -> None:
        """Remove an episode, or :class:`~env_server.errors.EpisodeNotFound`."""
        ...

    def lease(self, episode_id: str) -> AbstractAsyncContextManager[None]:
        """Exclusive right to step an episode; raises EpisodeBusy when another step holds it."""
        ...

    async def count(self) -> int:
        """Episodes currently stored."""
        ...

    async def ping(self) -> bool:
        """Whether the store is reachable."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...
