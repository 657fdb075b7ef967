"""The server an evaluation talks to when no ``--url`` is given: ``attune serve`` as a child process."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from env_server.launcher import ServerStartError, spawned_server

__all__ = ["ServerStartError", "spawn_server"]


@contextmanager
def spawn_server(env: Mapping[str, str], ready_timeout: float = 600.0) -> Iterator[str]:
    """Yield the URL of a ready child server configured by ``env`` (``ATTUNE_*`` variables), quiet by default."""
    with spawned_server({"ATTUNE_LOG_LEVEL": "warning", **env}, ready_timeout) as server:
        yield server.url
