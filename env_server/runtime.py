"""What a running server holds: settings, personas, store, and the simulator once it has loaded.

The simulator (a model, in production) loads in a background thread after start-up, so ``/healthz``
answers at once and ``/readyz`` turns ready when the model is loaded, has primed the personas' prompts (see
``ChatSimulator.prime``) and the store is reachable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from env_server.errors import BackendUnavailable
from env_server.llm.factory import build_simulator
from env_server.llm.heuristic import HeuristicSimulator
from env_server.llm.protocol import Simulator
from env_server.metrics import Metrics
from env_server.personas.loader import PersonaCatalog
from env_server.service import EpisodeService
from env_server.sessions.protocol import EpisodeStore
from env_server.settings import Settings

__all__ = ["Runtime"]

log = logging.getLogger("attune.runtime")


@dataclass
class Runtime:
    """Long-lived server state, created by the app's lifespan."""

    settings: Settings
    catalog: PersonaCatalog
    store: EpisodeStore
    metrics: Metrics = field(default_factory=Metrics)
    simulator: Simulator | None = None
    load_error: str | None = None
    _service: EpisodeService | None = field(default=None, repr=False)

    async def load(self, simulator: Simulator | None = None) -> None:
        """Build the simulator (off the event loop) unless one is given; record a failure instead of raising."""
        try:
            self.simulator = simulator or await asyncio.to_thread(build_simulator, self.settings)
        except Exception as exc:  # a bad model path must not kill /healthz; /readyz reports it
            log.exception("simulator failed to load")
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        await self._prime()
        self.metrics.count_tokens_with(
            lambda: getattr(self.simulator, "generated_tokens", 0),
            lambda: getattr(self.simulator, "prompt_tokens", (0, 0)),
        )
        self._service = EpisodeService(
            self.settings, self.catalog, self.simulator, self.store, HeuristicSimulator(), self.metrics
        )
        log.info("ready: %s simulator, %d personas", self.simulator.name, len(self.catalog))

    async def _prime(self) -> None:
        """Let the simulator compute the personas' shared prompts before serving, where it can; a failure only
        costs speed, so it is logged, not raised."""
        prime = getattr(self.simulator, "prime", None)
        if prime is None:
            return
        started = time.perf_counter()
        try:
            tokens = await asyncio.to_thread(prime, list(self.catalog))
        except Exception:
            log.exception("priming the personas' prompts failed; serving without")
            return
        if tokens:
            log.info(
                "primed %d tokens of %d personas' prompts in %.1f s",
                tokens,
                len(self.catalog),
                time.perf_counter() - started,
            )

    @property
    def service(self) -> EpisodeService:
        """The episode service, or a 503 while the simulator is loading or failed to."""
        if self._service is None:
            if self.load_error:
                raise BackendUnavailable(f"simulator failed to load: {self.load_error}")
            raise BackendUnavailable("simulator is still loading; poll /readyz")
        return self._service

    async def aclose(self) -> None:
        """Release the simulator and the store."""
        if self.simulator is not None:
            await self.simulator.aclose()
        await self.store.aclose()
