"""The simulator protocol: what every backend (heuristic, transformers, OpenAI-compatible) provides.

A backend answers three questions about a dialogue turn, each given a :class:`TurnContext`:
how does the supporter's latest reply land (:meth:`Simulator.appraise`), what does the person say
next (:meth:`Simulator.reply`), and, for personas without a written opening, how do they start
(:meth:`Simulator.opening`). Backends hold no episode state: everything they need is in the context,
so a retried or forked turn gives the same answer for the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from attune_client.wire import Role
from env_server.personas.schema import Persona

__all__ = ["Appraisal", "Simulator", "Turn", "TurnContext"]


@dataclass(frozen=True)
class Turn:
    """One message of the dialogue as the simulator sees it."""

    role: Role
    content: str


@dataclass(frozen=True)
class TurnContext:
    """Everything a backend may read to simulate one turn.

    ``history`` ends with the supporter's latest reply when appraising, and with it too when replying
    (the reply answers it). ``seed`` is derived from the episode seed and the turn number, so sampling is
    reproducible per turn and identical across forks.
    """

    persona: Persona
    history: tuple[Turn, ...]
    emotion: int
    turn: int
    seed: int
    thoughts: str = ""
    """Inner thoughts from this turn's appraisal (empty when appraising)."""
    delta: int = 0
    """Emotion change from this turn's appraisal (0 when appraising)."""
    emotion_before: int | None = None
    """When replying: the emotion the appraisal started from (``emotion`` is then the one it left)."""

    @property
    def last_reply(self) -> str:
        """The supporter's latest message, or '' before the first one."""
        for message in reversed(self.history):
            if message.role is Role.assistant:
                return message.content
        return ""

    @property
    def last_user_message(self) -> str:
        """What the person said last."""
        for message in reversed(self.history):
            if message.role is Role.user:
                return message.content
        return ""


@dataclass(frozen=True)
class Appraisal:
    """How a supporter reply landed: inner thoughts and an emotion change.

    ``delta`` is already clamped to [-10, 10]. ``fallback`` is True when the backend could not read a
    change from its model output and used the heuristic appraiser instead (counted and logged).
    ``signals`` names what the appraiser noticed (e.g. ``{"advice": 1, "question": 1}``), for inspection.
    """

    thoughts: str
    delta: int
    fallback: bool = False
    signals: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Simulator(Protocol):
    """A sentient-agent backend. Implementations must be safe to call concurrently."""

    name: str

    async def appraise(self, context: TurnContext) -> Appraisal:
        """Judge how the supporter's latest reply (``context.last_reply``) lands."""
        ...

    async def reply(self, context: TurnContext) -> str:
        """What the person says next, in character, given ``context.thoughts`` and ``context.emotion``."""
        ...

    async def opening(self, context: TurnContext) -> str:
        """The person's first message, for personas without a written ``opening``."""
        ...

    async def aclose(self) -> None:
        """Release model resources."""
        ...
