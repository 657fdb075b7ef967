"""Episode operations: create, step, view, delete. The routes are thin; the rules live here.

A step runs under the store's lease for that episode, calls the simulator (appraisal, then reply), and
commits the new state with one ``save``. Anything that fails before the save leaves the stored episode
exactly as it was.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import TypeVar

from prometheus_client import Histogram
from prometheus_client.metrics import MetricWrapperBase

from attune_client.wire import (
    AppraisalView,
    CreateEpisodeRequest,
    CreateEpisodeResponse,
    EpisodeInternals,
    EpisodeOptions,
    EpisodeView,
    Message,
    RewardSpec,
    Role,
    StepRequest,
    StepResponse,
)
from env_server.agent.emotion import apply_delta, clamp_delta
from env_server.agent.episode import EpisodeRecord, StepRecord, advance, turn_seed
from env_server.agent.privacy import redact_private
from env_server.errors import (
    ActionEmpty,
    ActionTooLong,
    AttuneServerError,
    BackendUnavailable,
    EpisodeFinished,
    EpisodeNotFound,
    PersonaNotFound,
    RequestConflict,
)
from env_server.llm.protocol import Appraisal, Simulator, Turn, TurnContext
from env_server.metrics import Metrics
from env_server.personas.loader import PersonaCatalog
from env_server.personas.schema import Persona
from env_server.sessions.protocol import EpisodeStore
from env_server.settings import Settings

__all__ = ["EpisodeService", "backend_boundary"]

log = logging.getLogger("attune.service")

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)


@asynccontextmanager
async def backend_boundary(backend: str, timer: Histogram | None = None) -> AsyncIterator[None]:
    """Turn whatever escapes a simulator call into one typed 503; time the call when given a timer."""
    started = time.perf_counter()
    try:
        yield
    except AttuneServerError:
        raise
    except Exception as exc:
        log.exception("simulator backend %s failed", backend)
        raise BackendUnavailable(f"{backend} backend failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if timer is not None:
            timer.observe(time.perf_counter() - started)


class EpisodeService:
    """The rules of an episode, over a catalog, a simulator and a store."""

    def __init__(
        self,
        settings: Settings,
        catalog: PersonaCatalog,
        simulator: Simulator,
        store: EpisodeStore,
        fallback: Simulator,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.catalog = catalog
        self.simulator = simulator
        self.store = store
        self.fallback = fallback
        """Writes a reply when the model's own one had to be withheld entirely (see :meth:`_public_text`)."""
        self._children: dict[tuple[int, str], MetricWrapperBase] = {}

    def _labelled(self, metric: _Metric, value: str) -> _Metric:
        """``metric.labels(value)``, looked up once: ``labels()`` takes a lock and builds a key on every call."""
        key = (id(metric), value)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(value)
        return child  # type: ignore[return-value]

    def persona(self, persona_id: str) -> Persona:
        """A loaded persona, or PersonaNotFound."""
        try:
            return self.catalog.get(persona_id)
        except KeyError:
            raise PersonaNotFound(persona_id) from None

    async def create(self, request: CreateEpisodeRequest, owner: str | None = None) -> CreateEpisodeResponse:
        """Start an episode: choose the persona, produce the opening line, store it."""
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        persona = self.persona(request.persona_id) if request.persona_id else self.catalog.choose(seed)
        context = TurnContext(
            persona=persona, history=(), emotion=persona.initial_emotion, turn=0, seed=turn_seed(seed, 0, "opening")
        )
        opening = persona.opening
        if not opening:
            async with backend_boundary(self.simulator.name, self._labelled(self.metrics.backend_seconds, "opening")):
                opening = await self.simulator.opening(context)
            opening = await self._public_text(opening, context, private=[])
        record = EpisodeRecord(
            episode_id=_new_id(),
            persona_id=persona.id,
            seed=seed,
            max_turns=request.options.max_turns or self.settings.max_turns,
            reward=self.reward_spec(request.options),
            emotion=persona.initial_emotion,
            transcript=[Message(role=Role.user, content=opening, emotion=persona.initial_emotion)],
            emotions=[persona.initial_emotion],
            owner=owner,
        )
        group = [record, *_copies(record, request.n - 1)]
        await self.store.create_many(group)
        self.metrics.episodes_created.inc(len(group))
        return CreateEpisodeResponse(
            episode_id=record.episode_id,
            episode_ids=[member.episode_id for member in group],
            observation=opening,
            info=record.info(),
        )

    async def fork(self, episode_id: str, n: int, owner: str | None = None) -> list[str]:
        """``n`` new episodes with this one's committed state (persona, transcript, emotion, seed); no model call."""
        copies = _copies(await self._owned(episode_id, owner), n)
        await self.store.create_many(copies)
        self.metrics.episodes_created.inc(n)
        return [copy.episode_id for copy in copies]

    def reward_spec(self, options: EpisodeOptions) -> RewardSpec:
        """The episode's reward spec: the request's, else the server's; ``reward_mode`` overrides its mode."""
        spec = options.reward or self.settings.default_reward()
        return spec.model_copy(update={"mode": options.reward_mode}) if options.reward_mode else spec

    def check_action(self, action: str) -> None:
        """Reject blank or over-long supporter replies before touching the episode."""
        if not action.strip():
            raise ActionEmpty()
        if len(action) > self.settings.max_action_chars:
            raise ActionTooLong(len(action), self.settings.max_action_chars)

    async def step(self, episode_id: str, request: StepRequest, owner: str | None = None) -> StepResponse:
        """Apply one supporter reply; a retried request id replays the stored result."""
        self.check_action(request.action)
        started = time.perf_counter()
        async with self.store.lease(episode_id):
            record = await self._owned(episode_id, owner)
            if request.request_id is not None and (done := record.step_for(request.request_id)) is not None:
                if done.action != request.action:
                    raise RequestConflict(f"request_id {request.request_id!r} was already used with a different action")
                return _response(done)
            if record.finished:
                raise EpisodeFinished(episode_id, record.status.value)
            persona = self.persona(record.persona_id)
            appraisal, reply = await self._simulate(record, persona, request.action)
            updated, step = advance(
                record, persona, request.action, appraisal, reply, request.request_id or uuid.uuid4().hex
            )
            await self.store.save(updated)
        self._labelled(self.metrics.steps, "applied").inc()
        self.metrics.step_seconds.observe(time.perf_counter() - started)
        return _response(step)

    async def _simulate(self, record: EpisodeRecord, persona: Persona, action: str) -> tuple[Appraisal, str]:
        turn = record.turn + 1
        context = TurnContext(
            persona=persona,
            history=(*record.history(), Turn(role=Role.assistant, content=action)),
            emotion=record.emotion,
            turn=turn,
            seed=turn_seed(record.seed, turn, "appraise"),
        )
        async with backend_boundary(self.simulator.name, self._labelled(self.metrics.backend_seconds, "appraise")):
            appraisal = await self.simulator.appraise(context)
        appraisal = replace(appraisal, delta=clamp_delta(appraisal.delta))
        if appraisal.fallback:
            self.metrics.appraisal_fallbacks.inc()
        reply_context = replace(
            context,
            emotion=apply_delta(record.emotion, appraisal.delta),
            emotion_before=record.emotion,
            thoughts=appraisal.thoughts,
            delta=appraisal.delta,
            seed=turn_seed(record.seed, turn, "reply"),
        )
        async with backend_boundary(self.simulator.name, self._labelled(self.metrics.backend_seconds, "reply")):
            reply = await self.simulator.reply(reply_context)
        reply = await self._public_text(reply, reply_context, private=[appraisal.thoughts])
        return appraisal, reply

    async def _public_text(self, text: str, context: TurnContext, private: list[str]) -> str:
        """Text the policy may see: no copied hidden intention or thoughts, never empty."""
        cleaned, redacted = redact_private(text, [context.persona.hidden_intention, *private])
        if redacted:
            self.metrics.redactions.inc()
            log.warning("withheld private text from a %s reply (persona %s)", self.simulator.name, context.persona.id)
        if not cleaned:
            make = self.fallback.reply if context.history else self.fallback.opening
            cleaned = await make(context)
        return cleaned

    async def _owned(self, episode_id: str, owner: str | None) -> EpisodeRecord:
        record = await self.store.get(episode_id)
        if record.owner != owner:
            # Another key's episode is reported as absent, so ids cannot be probed.
            raise EpisodeNotFound(episode_id)
        return record

    async def view(self, episode_id: str, owner: str | None = None) -> EpisodeView:
        """Public transcript and emotion trajectory."""
        return (await self._owned(episode_id, owner)).view()

    async def internals(self, episode_id: str) -> EpisodeInternals:
        """Privileged view for operators: hidden intention and every appraisal. Callers check the admin key."""
        record = await self.store.get(episode_id)
        return EpisodeInternals(
            **record.view().model_dump(),
            hidden_intention=self.persona(record.persona_id).hidden_intention,
            seed=record.seed,
            appraisals=[AppraisalView(**appraisal.model_dump()) for appraisal in record.appraisals],
        )

    async def delete(self, episode_id: str, owner: str | None = None) -> None:
        """Forget an episode."""
        await self._owned(episode_id, owner)
        await self.store.delete(episode_id)


def _new_id() -> str:
    return uuid.uuid4().hex


def _copies(record: EpisodeRecord, n: int) -> list[EpisodeRecord]:
    # The seed is copied too: every copy samples exactly as the original would from this state.
    return [record.model_copy(update={"episode_id": _new_id()}, deep=True) for _ in range(n)]


def _response(step: StepRecord) -> StepResponse:
    return StepResponse(
        observation=step.observation,
        reward=step.reward,
        terminated=step.terminated,
        truncated=step.truncated,
        info=step.info,
    )
