"""A sentient agent on top of any chat language model.

:class:`ChatSimulator` turns the simulator protocol into prompts (see :mod:`env_server.llm.prompts`) for a
:class:`ChatModel`. The appraisal scores each feeling choice ("much worse" ... "much better") by
likelihood in one forward pass, calibrated against the same prompt with the reply blanked out, takes the
best, and then generates the inner thoughts that explain it ("That reply made me feel worse, because ...").
The reply is then written in the same chat, after the thoughts (see :mod:`env_server.llm.prompts`), so a
model with a prefix cache computes little beyond the new turn. A model that cannot score (a remote API)
picks the choice under constrained decoding when its server supports that (``choose``); otherwise it writes
its thoughts freely and the feeling they name is parsed.
When nothing usable comes back, the heuristic appraiser decides the change instead; that fallback is
counted and logged, never a silent 0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Protocol

from attune_client.wire import Role
from env_server.llm.heuristic import HeuristicAppraiser, HeuristicSimulator
from env_server.llm.prompts import (
    FEELING_CHOICES,
    FEELING_PREFIX,
    NO_REPLY,
    appraisal_messages,
    appraisal_system_messages,
    delta_for_choice,
    opening_messages,
    reply_messages,
)
from env_server.llm.protocol import Appraisal, Turn, TurnContext
from env_server.personas.schema import Persona

__all__ = ["ChatModel", "ChatSimulator", "clean_reply", "parse_feeling"]

log = logging.getLogger("attune.llm")


class ChatModel(Protocol):
    """What the chat simulator needs from a language model."""

    name: str

    async def generate(
        self,
        messages: list[dict[str, str]],
        *,
        max_new_tokens: int,
        seed: int,
        prefix: str = "",
        remember: bool = False,
    ) -> str:
        """The assistant's completion of a chat, its turn already begun with ``prefix``.

        ``remember`` hints that later prompts will extend this one (and its completion): a model with a prefix
        cache keeps its states. Results never depend on it.
        """
        ...

    async def score(
        self, messages: list[dict[str, str]], prefix: str, choices: list[str], *, remember: bool = False
    ) -> list[float] | None:
        """Mean log-likelihood of each choice after the chat's assistant turn began with ``prefix``;
        None when the model cannot score. ``remember`` as for :meth:`generate`."""
        ...

    async def aclose(self) -> None:
        """Release resources."""
        ...


_SPEAKER = re.compile(r"^\s*(?:[A-Z][\w .'-]{0,30}|Me|Supporter|Assistant|User)\s*:\s*")
_SENTENCE = re.compile(r"(?<=[.!?。！？])\s+")


def clean_reply(text: str, max_sentences: int = 3) -> str:
    """A generated line as the person would say it: one paragraph, no speaker tag or quotes, a few sentences."""
    text = text.strip().split("\n\n")[0].replace("\n", " ")
    text = _SPEAKER.sub("", text).strip().strip('"“”').strip()
    sentences = _SENTENCE.split(text)
    return " ".join(sentences[:max_sentences]).strip()


def parse_feeling(text: str) -> int | None:
    """The choice value named in free text ("... much better"), or None when none is named."""
    lowered = text.lower()
    # Longest labels first, so "a little worse" is not read as "worse".
    for label, value in sorted(FEELING_CHOICES, key=lambda item: -len(item[0])):
        if label.strip() in lowered:
            return value
    return None


def _without_reply(context: TurnContext) -> TurnContext:
    """The same turn with the supporter's last reply blanked out."""
    history = list(context.history)
    for index in range(len(history) - 1, -1, -1):
        if history[index].role is Role.assistant:
            history[index] = Turn(role=Role.assistant, content=NO_REPLY)
            break
    return replace(context, history=tuple(history))


class ChatSimulator:
    """Simulator protocol over a :class:`ChatModel`."""

    def __init__(
        self, model: ChatModel, *, max_new_tokens: int = 64, thoughts_tokens: int = 40, transcript_window: int = 0
    ) -> None:
        self.model = model
        self.transcript_window = transcript_window
        """Most recent dialogue messages the prompts show; 0 shows the whole dialogue."""
        self.name = model.name
        self.max_new_tokens = max_new_tokens
        self.thoughts_tokens = thoughts_tokens
        self.heuristic = HeuristicSimulator()
        self.appraiser = HeuristicAppraiser()
        self.fallbacks = 0
        """Appraisals whose change came from the heuristic because the model gave nothing usable."""

    @property
    def generated_tokens(self) -> int:
        """Tokens the model generated so far (0 when the model does not count them)."""
        return getattr(self.model, "generated_tokens", 0)

    @property
    def prompt_tokens(self) -> tuple[int, int]:
        """Prompt tokens the model read so far: (served from its prefix cache, computed); (0, 0) without one."""
        cache = getattr(self.model, "prefix_cache", None)
        return (cache.hits, cache.misses) if cache is not None else (0, 0)

    def prime(self, personas: Iterable[Persona]) -> int:
        """Have the model compute, once, the system message that every prompt of each persona begins with, and keep
        it (a local model with a prefix cache: ``prime``); how many tokens it keeps. Blocks: call it off the event
        loop, before serving."""
        prime = getattr(self.model, "prime", None)
        return prime([appraisal_system_messages(persona) for persona in personas]) if prime is not None else 0

    async def appraise(self, context: TurnContext) -> Appraisal:
        messages = appraisal_messages(context, window=self.transcript_window)
        labels = [label for label, _ in FEELING_CHOICES]
        scores = await self.model.score(messages, FEELING_PREFIX, labels, remember=True)
        chosen: int | None = None
        signals: dict[str, float] = {}
        if scores is not None:
            # Contextual calibration: a small model prefers some labels whatever it reads, so each label's score
            # with the real reply is measured against its score when the supporter said nothing. Asked after the
            # real one, the blank-reply prompt finds all it shares with it (all but the last lines) cached.
            blank = appraisal_messages(_without_reply(context), window=self.transcript_window)
            baseline = await self.model.score(blank, FEELING_PREFIX, labels)
            calibrated = [score - base for score, base in zip(scores, baseline or [0.0] * len(scores), strict=True)]
            chosen = max(range(len(calibrated)), key=calibrated.__getitem__)
            signals = {name.strip(): round(score, 4) for name, score in zip(labels, calibrated, strict=True)}
        elif (choose := getattr(self.model, "choose", None)) is not None:
            # A remote server that constrains decoding picks the choice outright.
            chosen = await choose(messages, FEELING_PREFIX, labels, seed=context.seed)
        if chosen is not None:
            label, value = FEELING_CHOICES[chosen]
            lead = f"{FEELING_PREFIX}{label}, because"
            thoughts = clean_reply(
                lead
                + await self.model.generate(
                    messages, max_new_tokens=self.thoughts_tokens, seed=context.seed, prefix=lead, remember=True
                )
            )
        else:
            thoughts = clean_reply(
                await self.model.generate(messages, max_new_tokens=self.thoughts_tokens, seed=context.seed)
            )
            value = parse_feeling(thoughts)
        if value is None:
            self.fallbacks += 1
            log.warning("appraisal fallback #%d: no usable feeling in %r", self.fallbacks, thoughts[:80])
            heuristic = self.appraiser.appraise(context.persona, context.history, context.emotion, context.turn)
            return Appraisal(
                thoughts=thoughts or heuristic.thoughts, delta=heuristic.delta, fallback=True, signals=heuristic.signals
            )
        return Appraisal(thoughts=thoughts, delta=delta_for_choice(value, context.persona.difficulty), signals=signals)

    async def reply(self, context: TurnContext) -> str:
        text = clean_reply(
            await self.model.generate(
                reply_messages(context, window=self.transcript_window),
                max_new_tokens=self.max_new_tokens,
                seed=context.seed,
            )
        )
        return text or await self.heuristic.reply(context)

    async def opening(self, context: TurnContext) -> str:
        text = clean_reply(
            await self.model.generate(opening_messages(context), max_new_tokens=self.max_new_tokens, seed=context.seed)
        )
        return text or await self.heuristic.opening(context)

    async def aclose(self) -> None:
        await self.model.aclose()
