"""Fixtures shared by every test: the default persona catalog and a real heuristic server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from env_server.app import create_app
from env_server.embedded import serve_in_thread
from env_server.personas.loader import PersonaCatalog
from env_server.settings import BackendName, Settings, default_packs_path


@pytest.fixture(scope="session")
def catalog() -> PersonaCatalog:
    """The default pack, as the server loads it."""
    return PersonaCatalog.load([default_packs_path()])


@pytest.fixture(scope="session")
def heuristic_settings() -> Settings:
    return Settings(backend=BackendName.heuristic, max_turns=6)


@pytest.fixture(scope="session")
def server_url(heuristic_settings: Settings) -> Iterator[str]:
    """A real uvicorn serving the heuristic backend and the default pack on a free loopback port."""
    with serve_in_thread(create_app(heuristic_settings)) as url:
        yield url
