"""Prompts that turn a persona and a dialogue into chat messages for a language-model backend.

Following SAGE, each turn the persona first writes private inner thoughts about the supporter's last reply
(an *appraisal* prompt; the feeling is rated first, see :data:`FEELING_CHOICES`), then, in the same chat, says
its next line. Only the opening line, before any reply, uses a separate *role-play* prompt in which the model
speaks as the persona.
"""

from __future__ import annotations

from dataclasses import replace

from attune_client.wire import Difficulty, Role
from env_server.agent.emotion import band_of
from env_server.llm.protocol import TurnContext
from env_server.personas.schema import Persona

__all__ = [
    "FEELING_CHOICES",
    "FEELING_PREFIX",
    "NO_REPLY",
    "appraisal_messages",
    "appraisal_system_messages",
    "delta_for_choice",
    "opening_messages",
    "reply_messages",
]

ChatMessages = list[dict[str, str]]

FEELING_PREFIX = "That reply made me feel"
"""Start of the persona's answer to the appraisal prompt; each choice below is scored as its continuation,
and the inner thoughts are generated after the chosen one ("... a little worse, because")."""

NO_REPLY = "(says nothing)"
"""Stands in for the supporter's reply in the content-free prompt that calibrates the choice scores."""

FEELING_CHOICES: tuple[tuple[str, int], ...] = (
    (" much worse", -8),
    (" worse", -5),
    (" a little worse", -2),
    (" the same", 0),
    (" a little better", 2),
    (" better", 5),
    (" much better", 8),
)
"""Choices the appraisal scores by likelihood, with the emotion change each stands for (normal difficulty)."""

_DIFFICULTY_RULE = {
    Difficulty.easy: "You are open and forgiving: a sincere reply easily makes you feel better.",
    Difficulty.normal: "You are fair: you feel better only when a reply really addresses what you want.",
    Difficulty.hard: (
        "You are guarded and hard to please: generic comfort or advice annoys you, and only a reply that "
        "truly understands you helps a little."
    ),
}
_SCALE = {Difficulty.easy: (1.25, 0.75), Difficulty.normal: (1.0, 1.0), Difficulty.hard: (0.6, 1.25)}
_MOOD = {"S": "completely understood", "A": "good, opening up", "B": "so-so, guarded", "C": "upset", "F": "fed up"}


def delta_for_choice(value: int, difficulty: Difficulty) -> int:
    """A choice's emotion change, scaled by difficulty: hard personas gain less and lose more."""
    gain, loss = _SCALE[difficulty]
    return round(value * (gain if value > 0 else loss))


def _persona_sheet(persona: Persona) -> str:
    goal = f"\nWhat you say you want: {persona.goal}" if persona.goal else ""
    return f"You are {persona.name}. {persona.profile}\nYour situation: {persona.background}{goal}"


def _transcript(context: TurnContext, window: int) -> str:
    """The dialogue as lines; only its last ``window`` messages when ``window`` is positive."""
    names = {Role.user: "Me", Role.assistant: "Supporter"}
    history = context.history
    omitted = max(0, len(history) - window) if window > 0 else 0
    lines = [f"{names[turn.role]}: {turn.content}" for turn in history[omitted:]]
    if omitted:
        lines.insert(0, f"(... {omitted} earlier messages)")
    return "\n".join(lines)


def _appraisal_system(persona: Persona) -> str:
    """Everything about the persona and both tasks of a turn; it never changes during an episode."""
    reactions = persona.reactions
    return (
        f"{_persona_sheet(persona)}\nWhat you really want (a secret): {persona.hidden_intention}\n"
        f"When a reply gives you that: {reactions.fit}\nWhen it misses: {reactions.miss}\n"
        f"{_DIFFICULTY_RULE[persona.difficulty]}\n"
        f"How you talk when your mood is high (70+): {reactions.high} Middling: {reactions.medium} "
        f"Low (under 40): {reactions.low}\n"
        "You are talking with a supporter. When shown the conversation, write your private inner thoughts about "
        "the supporter's last message, in the first person, in one or two sentences: how did it make you feel, "
        "and did it give you what you really want? When asked for your line, say what you answer the supporter: "
        "one to three short, natural, spoken sentences. Never say you are an AI, never give advice (you are the "
        "one who needs support), and never state your secret outright."
    )


def appraisal_system_messages(persona: Persona) -> ChatMessages:
    """The system message that every appraisal and reply prompt of ``persona`` begins with, in every episode."""
    return [{"role": "system", "content": _appraisal_system(persona)}]


def appraisal_messages(context: TurnContext, *, window: int = 0) -> ChatMessages:
    """Messages whose completion is the persona's inner thoughts about the supporter's last reply.

    What never changes in an episode (the persona and the tasks) is the system message and the dialogue follows
    in order, with the mood last, so the prompt of the next turn, this turn's reply prompt and the blank-reply
    baseline all begin with most of this prompt's tokens (the model's prefix cache then runs only what is new).
    A positive ``window`` shows only the dialogue's last ``window`` messages: long recorded dialogues would
    otherwise outgrow a small model's context (the cache then serves less, as the window slides).
    """
    transcript = _transcript(context, window)
    user = f"The conversation so far:\n{transcript}\n\n(Your mood before that last message: {context.emotion}/100.)"
    return [*appraisal_system_messages(context.persona), {"role": "user", "content": user}]


def _roleplay_system(context: TurnContext) -> str:
    persona = context.persona
    band = band_of(context.emotion).value
    reactions = persona.reactions
    reaction = reactions.high if context.emotion >= 70 else reactions.medium if context.emotion >= 40 else reactions.low
    return (
        f"{_persona_sheet(persona)}\nYou are talking to a supporter about {persona.topic or 'what is on your mind'}."
        f"\nYour mood: {context.emotion}/100 ({_MOOD[band]}). At this mood: {reaction}"
        f"\nSpeak as {persona.name} in one to three short, natural sentences. Never say you are an AI. "
        "Do not give advice; you are the one who needs support."
    )


def reply_messages(context: TurnContext, *, window: int = 0) -> ChatMessages:
    """Messages whose completion is the persona's next line.

    They continue the appraisal chat of this turn: the persona has just written its inner thoughts (the
    assistant turn) and is now asked to speak, at the mood the appraisal left it in. The appraisal part is
    rebuilt with the mood it was asked at (``emotion_before``), token for token, so the model's prefix cache
    serves all of it. ``window`` as for :func:`appraisal_messages`.
    """
    before = context.emotion if context.emotion_before is None else context.emotion_before
    band = band_of(context.emotion).value
    instruction = f"(Your mood now: {context.emotion}/100, {_MOOD[band]}.) Your line:"
    return [
        *appraisal_messages(replace(context, emotion=before), window=window),
        {"role": "assistant", "content": context.thoughts or f"{FEELING_PREFIX} the same."},
        {"role": "user", "content": instruction},
    ]


def opening_messages(context: TurnContext) -> ChatMessages:
    """Messages whose completion is the persona's first line of the conversation."""
    return [
        {"role": "system", "content": _roleplay_system(context)},
        {"role": "user", "content": "Hi, I'm here to listen. What's going on?"},
    ]
