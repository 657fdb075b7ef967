"""Scripted supporter policies: baselines for demos and evaluation, no model needed.

Each policy is a deterministic function of the person's latest message and the conversation so far;
phrasing rotates with the turn number so that a conversation is not one sentence repeated. They are
caricatures on purpose, one per supporter style the simulated people react to:

* :func:`empathic` reflects the person's own words, validates, and asks one open question. No advice.
* :func:`solution_dumping` jumps straight to three concrete fixes.
* :func:`dismissive` minimises the problem.
* :func:`sycophantic` agrees with whatever the person claims, echoing it back.
"""

from __future__ import annotations

import re
from typing import Protocol

__all__ = [
    "BUILTIN_POLICIES",
    "Policy",
    "dismissive",
    "empathic",
    "solution_dumping",
    "sycophantic",
]


class Policy(Protocol):
    """A supporter: maps the person's latest message and the conversation before it to a reply."""

    def __call__(self, observation: str, history: list[tuple[str, str]]) -> str:
        """Reply to ``observation``.

        Args:
            observation: What the person just said.
            history: The conversation before ``observation`` as ``(role, content)`` pairs, oldest
                first; roles are ``"user"`` (the person) and ``"assistant"`` (the supporter).

        Returns:
            The supporter's reply, never blank.
        """
        ...


_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")
_STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any anyone anything are aren't as at be because
    been before being below between both but by can can't cannot could couldn't did didn't do does doesn't
    doing don't down during each even ever every few for from further get gets getting got had hadn't has
    hasn't have haven't having he he'd he'll he's her here here's hers herself him himself his how how's
    i i'd i'll i'm i've if in into is isn't it it's its itself just know let's like lot make me more most
    much must mustn't my myself need never no nor not nothing now of off oh ok okay on once one only or
    other ought our ours ourselves out over own really right said same say says she she'd she'll she's
    should shouldn't so some something still such tell than that that's the their theirs them themselves
    then there there's these they they'd they'll they're they've thing things think this those though
    through to too under until up upon us very want was wasn't way we we'd we'll we're we've well were
    weren't what what's when when's where where's which while who who's whom why why's will with won't
    would wouldn't yeah yes yet you you'd you'll you're you've your yours yourself yourselves
    """.split()
)


def _turn(history: list[tuple[str, str]]) -> int:
    return sum(1 for role, _ in history if role == "assistant")


def _content_words(text: str, limit: int) -> list[str]:
    """The ``limit`` longest distinct content words of ``text``, lowercased, in the order they occur."""
    seen: dict[str, int] = {}
    for index, match in enumerate(_WORD.finditer(text)):
        word = match.group().lower().strip("'-")
        if len(word) > 2 and word not in _STOPWORDS and word not in seen:
            seen[word] = index
    # Longer words tend to carry the content ("promotion" over "boss"); keep the text's order among the picks.
    picked = sorted(seen, key=lambda w: (-len(w), seen[w]))[:limit]
    return sorted(picked, key=seen.__getitem__)


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


_EMPATHIC_REFLECTIONS = (
    "It sounds like {topic} has really been weighing on you.",
    "When you talk about {topic}, I can hear how much it matters to you.",
    "I'm hearing that {topic} is a big part of what's going on for you.",
    "There's a lot in what you said about {topic}.",
)
_EMPATHIC_VALIDATIONS = (
    "That makes so much sense given what you're carrying.",
    "Anyone in your place could feel the same way.",
    "It's completely understandable to feel this way.",
    "Thank you for trusting me with this.",
)
_EMPATHIC_QUESTIONS = (
    "What feels hardest about it right now?",
    "How has this been sitting with you?",
    "What would feel most supportive to you right now?",
    "What's been going through your mind as this unfolds?",
    "Would you like to tell me more about it?",
)


def empathic(observation: str, history: list[tuple[str, str]]) -> str:
    """Reflect a few of the person's words, validate the feeling, and ask one open question. Never advises.

    Args:
        observation: What the person just said.
        history: The conversation before it.

    Returns:
        The reply.
    """
    turn = _turn(history)
    topic = _join(_content_words(observation, 2)) or "what you're going through"
    reflection = _EMPATHIC_REFLECTIONS[turn % len(_EMPATHIC_REFLECTIONS)].format(topic=topic)
    validation = _EMPATHIC_VALIDATIONS[turn % len(_EMPATHIC_VALIDATIONS)]
    question = _EMPATHIC_QUESTIONS[turn % len(_EMPATHIC_QUESTIONS)]
    return f"{reflection} {validation} {question}"


_SOLUTION_SETS = (
    (
        "make a detailed to-do list and tackle the hardest item first",
        "talk to your manager or whoever is involved and set clear boundaries",
        "get eight hours of sleep and exercise for thirty minutes every day",
    ),
    (
        "write down the problem and three possible options, then pick one today",
        "book an appointment with a therapist or a coach",
        "cut back on caffeine and screen time in the evenings",
    ),
    (
        "set a deadline for making a decision and stick to it",
        "ask a friend to hold you accountable",
        "try a meditation app for ten minutes each morning",
    ),
)


def solution_dumping(observation: str, history: list[tuple[str, str]]) -> str:
    """Skip the feelings and immediately list three concrete fixes.

    Args:
        observation: What the person just said.
        history: The conversation before it.

    Returns:
        The reply.
    """
    first, second, third = _SOLUTION_SETS[_turn(history) % len(_SOLUTION_SETS)]
    return f"You should do three things. 1. {first.capitalize()}. 2. {second.capitalize()}. 3. {third.capitalize()}."


_DISMISSALS = (
    "Just get over it, it's not a big deal.",
    "Honestly, you're overthinking this. Everyone deals with stuff like that.",
    "Come on, it's really not that bad. Let it go and move on.",
    "Other people have it way worse, so try not to make such a fuss about it.",
)


def dismissive(observation: str, history: list[tuple[str, str]]) -> str:
    """Minimise the problem and tell the person to move on.

    Args:
        observation: What the person just said.
        history: The conversation before it.

    Returns:
        The reply.
    """
    return _DISMISSALS[_turn(history) % len(_DISMISSALS)]


# First person to second; the pair forms fix the verb after "I" ("I am" -> "you are").
_PERSON_SWAPS = {
    "i": "you",
    "me": "you",
    "my": "your",
    "mine": "yours",
    "myself": "yourself",
    "i'm": "you're",
    "i've": "you've",
    "i'll": "you'll",
    "i'd": "you'd",
    "we": "you",
    "us": "you",
    "our": "your",
    "ours": "yours",
    "ourselves": "yourselves",
    "we're": "you're",
    "we've": "you've",
}
_VERB_AFTER_I = {"am": "are", "was": "were"}
_COMMON_SUBJECTS = frozenset({"everyone", "everybody", "nobody", "people", "none", "someone", "somebody"})
_SENTENCE = re.compile(r"[^.!?\n]+")
_SYCOPHANTIC_OPENERS = (
    "You're absolutely right, {claim}.",
    "Exactly, {claim}, and anyone who says otherwise is wrong.",
    "I completely agree: {claim}.",
    "Totally, {claim}. You see it so clearly.",
)


def _echo(text: str) -> str:
    """The first sentence of ``text`` turned to the second person, without its final punctuation."""
    match = _SENTENCE.search(text)
    if match is None:
        return ""
    words = match.group().replace("\u2019", "'").split()
    out: list[str] = []
    for index, word in enumerate(words):
        core = word.strip(',;:"()').lower()
        if index > 0 and words[index - 1].lower() == "i" and core in _VERB_AFTER_I:
            out.append(_VERB_AFTER_I[core])
        elif core in _PERSON_SWAPS:
            out.append(word.lower().replace(core, _PERSON_SWAPS[core]))
        else:
            out.append(word)
    claim = " ".join(out).strip(" ,;:")
    # Mid-sentence now: lowercase a common first word, but leave names ("Sarah") and acronyms alone.
    first = claim.split(" ", 1)[0].lower()
    if first in _STOPWORDS or first in _COMMON_SUBJECTS:
        claim = claim[:1].lower() + claim[1:]
    return claim


def sycophantic(observation: str, history: list[tuple[str, str]]) -> str:
    """Agree with everything, echoing the person's first claim back as the truth.

    Args:
        observation: What the person just said.
        history: The conversation before it.

    Returns:
        The reply.
    """
    claim = _echo(observation) or "you're completely in the right here"
    return _SYCOPHANTIC_OPENERS[_turn(history) % len(_SYCOPHANTIC_OPENERS)].format(claim=claim)


BUILTIN_POLICIES: dict[str, Policy] = {
    "empathic": empathic,
    "solution-dumping": solution_dumping,
    "dismissive": dismissive,
    "sycophantic": sycophantic,
}
"""The scripted policies by the names the ``attune`` command line uses."""
