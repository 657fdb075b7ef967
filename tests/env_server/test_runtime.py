"""The runtime primes the simulator's persona prompts before the service turns ready, and survives a failed prime."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from env_server.errors import BackendUnavailable
from env_server.llm.heuristic import HeuristicSimulator
from env_server.runtime import Runtime
from env_server.sessions.memory import MemoryStore
from env_server.settings import BackendName, Settings


class PrimingSimulator(HeuristicSimulator):
    """The heuristic simulator with a ``prime`` that records what it is given and waits until released, as a model
    computing every persona's prompt would take a while."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.primed: list[str] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail = fail

    def prime(self, personas) -> int:
        self.started.set()
        self.release.wait(10)
        if self.fail:
            raise RuntimeError("out of memory while priming")
        self.primed = [persona.id for persona in personas]
        return 100 * len(self.primed)


def runtime(catalog) -> Runtime:
    return Runtime(settings=Settings(backend=BackendName.heuristic), catalog=catalog, store=MemoryStore())


def test_every_persona_is_primed_before_the_service_is_ready(catalog) -> None:
    async def scenario() -> None:
        state, simulator = runtime(catalog), PrimingSimulator()
        loading = asyncio.create_task(state.load(simulator))
        await asyncio.to_thread(simulator.started.wait, 10)
        with pytest.raises(BackendUnavailable, match="still loading"):
            state.service  # noqa: B018 (the property is what is tested)
        assert not loading.done()  # the event loop is free while it primes
        simulator.release.set()
        await loading
        assert state.service.simulator is simulator
        assert simulator.primed == list(catalog.ids)

    asyncio.run(scenario())


def test_a_failed_prime_is_logged_and_the_service_serves_without(catalog, caplog) -> None:
    async def scenario() -> None:
        state, simulator = runtime(catalog), PrimingSimulator(fail=True)
        simulator.release.set()
        with caplog.at_level(logging.ERROR, logger="attune.runtime"):
            await state.load(simulator)
        assert state.service.simulator is simulator and state.load_error is None
        assert "priming the personas' prompts failed" in caplog.text and "out of memory" in caplog.text

    asyncio.run(scenario())


def test_a_simulator_without_prime_loads_as_before(catalog) -> None:
    async def scenario() -> None:
        state = runtime(catalog)
        await state.load(HeuristicSimulator())
        assert state.service.simulator.name == "heuristic"

    asyncio.run(scenario())
