"""Builds the configured episode store."""

from __future__ import annotations

from env_server.sessions.memory import MemoryStore
from env_server.sessions.protocol import EpisodeStore
from env_server.settings import Settings

__all__ = ["build_store"]


def build_store(settings: Settings) -> EpisodeStore:
    """``memory`` (the embedded default) or a Redis store for a ``redis://`` URL."""
    if settings.store == "memory":
        return MemoryStore(ttl_s=settings.episode_ttl_s)
    from env_server.sessions.redis import RedisStore

    return RedisStore(settings.store, ttl_s=settings.episode_ttl_s, lease_s=settings.step_lease_s)
