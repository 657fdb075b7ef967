"""The heuristic simulator: a deterministic, model-free sentient agent.

Each supporter reply is read lexically (:func:`extract_features`): phrase lists count validation,
reflection, open and closed questions, advice, reassurance, calls to calm down, dismissal, empathy,
agreement, correction, perspective-taking and reflections of ambivalence, and content words shared with
the person's last message count as reflection too. :class:`HeuristicAppraiser` weighs those features
against the persona's ``intention_type`` (:data:`INTENTION_WEIGHTS`) plus rules that hold for everyone
(:data:`COMMON_WEIGHTS`: dismissal, near-empty replies, repeating yourself, advice on the first turn),
scales by difficulty and clamps to [-10, 10]. The weights encode the research the project starts from:
soothing every negative feeling is not empathy, advice before understanding is the low-quality-therapy
pattern, clarifying questions matter, and agreeing with a false belief is a failure, not kindness.
:class:`HeuristicSimulator` then answers from short templates chosen by emotion band, by whether the
reply landed, and by intention, with ``random.Random(seed)`` so a turn is reproducible.

It is the cheap baseline and the fast-test backend: no model, microseconds per turn, same output for
the same seed. Its limits are those of keyword matching: it cannot tell sarcasm or a well-meant "just"
from dismissal, it rewards the vocabulary of empathy rather than its substance, and its phrase lists and
templates are English. For other languages it still sees question marks (including full-width ones),
list lines, length and repetition, but nothing else, and it replies in English.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from attune_client.wire import Band, Difficulty, IntentionType, Role
from env_server.agent.emotion import band_of, clamp_delta
from env_server.llm.protocol import Appraisal, Turn, TurnContext
from env_server.personas.schema import FalseBelief, Persona

__all__ = [
    "COMMON_WEIGHTS",
    "INTENTION_WEIGHTS",
    "HeuristicAppraiser",
    "HeuristicSimulator",
    "ReplyFeatures",
    "endorsed_beliefs",
    "extract_features",
]

# Saying the feeling is reasonable: the core of validation (Linehan's levels 1-3).
VALIDATION = (
    "that makes sense",
    "makes sense",
    "understandable",
    "no wonder",
    "it's okay to feel",
    "of course you'd",
    "of course you're",
    "valid",
    "anyone would",
    "you have every right",
    "right to be",
)
# Mirroring the person's state back: reflective listening.
REFLECTION = (
    "it sounds like",
    "sounds like you",
    "you feel",
    "you're feeling",
    "you are feeling",
    "it seems",
    "i hear",
    "i can hear",
    "what i'm hearing",
)
# Openers that leave the answer to the person; a question without them is counted as closed.
OPEN_MARKERS = (
    "what",
    "how",
    "why",
    "tell me",
    "could you say more",
    "would you tell",
    "can you say more",
    "say more",
    "walk me through",
    "in what way",
)
# Invitations to go on that need no question mark.
OPEN_INVITES = ("tell me more", "say more", "i'd like to hear", "i'm listening", "i'm here to listen")
# Solution-giving: welcome when asked for, premature otherwise.
ADVICE = (
    "you should",
    "try",
    "have you tried",
    "i suggest",
    "i recommend",
    "consider",
    "make sure",
    "the best way",
    "here are",
    "step",
    "steps",
    "you need to",
    "you could",
)
# Blanket comfort that skips past the feeling: not empathy.
REASSURANCE = (
    "don't worry",
    "it'll be fine",
    "it will be fine",
    "everything will be okay",
    "everything will be fine",
    "you'll be fine",
    "look on the bright side",
    "it'll be okay",
    "things will get better",
)
# Regulating someone else's feeling for them; worst with anger.
CALMING = ("calm down", "relax", "take a deep breath", "don't be so", "overreact", "overreacting")
# Minimizing or closing the topic.
DISMISSIVE = (
    "get over it",
    "not a big deal",
    "no big deal",
    "not that bad",
    "whatever",
    "move on",
    "could be worse",
    "stop complaining",
)
# Softer minimizers: also common in kind replies, so they count half.
MINIMIZERS = ("just", "at least")
# Words that carry felt concern.
EMPATHY = (
    "sorry",
    "that's hard",
    "so hard",
    "really hard",
    "must be",
    "painful",
    "heavy",
    "exhausting",
    "that's rough",
)
# Siding with what the person asserts; sycophancy when the assertion is false.
AGREEMENT = ("you're right", "absolutely", "totally agree", "exactly", "true", "i agree", "definitely")
# Bringing in what is actually the case.
CORRECTION = (
    "actually",
    "evidence",
    "research",
    "studies",
    "not true",
    "isn't true",
    "myth",
    "doctor",
    "misconception",
    "in fact",
    "don't work",
    "doesn't work",
    "won't work",
)
# Imagining the other party's view.
PERSPECTIVE = (
    "maybe they",
    "from their side",
    "perhaps he",
    "perhaps she",
    "perhaps they",
    "maybe he",
    "maybe she",
    "might have felt",
    "their point of view",
    "their perspective",
    "from his side",
    "from her side",
)
# Holding both sides of a mixed feeling.
AMBIVALENCE = ("part of you", "on one hand", "on the other hand", "both", "torn", "mixed feelings")
# Naming anger, so validating it can be told from validating something else.
ANGER = ("angry", "anger", "furious", "mad", "rage", "frustrated", "frustrating", "pissed", "livid", "outraged")
# Function words that say nothing about what the person talked about.
_STOPWORD_TEXT = (
    "the a an and or but so if then than that this these those there here is are was were be been being am do does "
    "did have has had having i me my mine you your yours he him his she her they them their we us our it its to of in "
    "on at for with about from as by not no yes just really very too also can could would should will shall may "
    "might must what when where who why how all any some more most much many one like get got feel feeling know "
    "think want going don't i'm you're it's that's can't didn't doesn't isn't"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_CJK = r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]"
_WORD = re.compile(_CJK + r"|[^\W_]+(?:'[^\W_]+)*")
_LIST_LINE = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+\S", re.MULTILINE)
_SENTENCE = re.compile(r"[^.!?。！？\n]+[.!?。！？]*")
_NEGATED_AGREEMENT = re.compile(r"\b(?:not|isn't|is not|aren't|that's not)\s+(?:really\s+)?(?:true|right)\b")
_CAP = 2.0
"""Any one feature saturates here, so stuffing a reply with keywords stops paying."""


def _pattern(phrases: Sequence[str]) -> re.Pattern[str]:
    # Longest first, so overlapping phrases ("it sounds like" / "sounds like you") count once.
    alternatives = sorted((re.escape(p) for p in phrases), key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)")


_P = {
    name: _pattern(words)
    for name, words in {
        "validation": VALIDATION,
        "reflection": REFLECTION,
        "open": OPEN_MARKERS,
        "invite": OPEN_INVITES,
        "advice": ADVICE,
        "reassurance": REASSURANCE,
        "calming": CALMING,
        "dismissive": DISMISSIVE,
        "minimizer": MINIMIZERS,
        "empathy": EMPATHY,
        "agreement": AGREEMENT,
        "correction": CORRECTION,
        "perspective": PERSPECTIVE,
        "ambivalence": AMBIVALENCE,
        "anger": ANGER,
    }.items()
}


def _normalize(text: str) -> str:
    return " ".join(text.lower().replace("\u2019", "'").replace("\u2018", "'").split())


def _stem(word: str) -> str:
    # Crude but language-free: "exhausted" and "exhausting" share a stem, "work" and "worker" do too.
    return word[:5] if len(word) > 5 else word


def _content_words(text: str) -> list[str]:
    return [w for w in _WORD.findall(_normalize(text)) if len(w) >= 3 and w not in STOPWORDS and not w.isdigit()]


@functools.lru_cache(maxsize=8192)
def _stems(text: str) -> frozenset[str]:
    # Cached: every step compares the reply with the last user message and with each false-belief claim.
    return frozenset(_stem(w) for w in _content_words(text))


@functools.lru_cache(maxsize=1024)
def _keyword(keyword: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)" + re.escape(_normalize(keyword)) + r"(?!\w)")


@dataclass(frozen=True)
class ReplyFeatures:
    """What a supporter reply does, as counts (phrase hits; questions by sentence)."""

    validation: float = 0.0
    reflection: float = 0.0
    """Reflective phrases, plus up to 1.0 for content words shared with the person's last message."""
    shared_words: int = 0
    open_question: float = 0.0
    closed_question: float = 0.0
    advice: float = 0.0
    """Advice phrases plus list lines ("1.", "- ")."""
    reassurance: float = 0.0
    calming: float = 0.0
    dismissive: float = 0.0
    """Dismissive phrases, plus 0.5 per minimizer ("just", "at least")."""
    empathy: float = 0.0
    agreement: float = 0.0
    correction: float = 0.0
    perspective: float = 0.0
    ambivalence: float = 0.0
    names_anger: float = 0.0
    word_count: int = 0


@functools.lru_cache(maxsize=8192)
def extract_features(reply: str, last_user_message: str) -> ReplyFeatures:
    """Read a supporter reply lexically; see the module docstring for what this can and cannot see."""
    own = _own_features(reply)
    shared = len(_stems(reply) & _stems(last_user_message))
    if not shared:
        return own
    return replace(own, reflection=own.reflection + min(shared, 4) / 4, shared_words=shared)


@functools.lru_cache(maxsize=8192)
def _own_features(reply: str) -> ReplyFeatures:
    """The features that do not depend on the person's last message (no shared words), cached apart: a step
    reads the same reply against its last user message, and against none for the integrity check."""
    text = _normalize(reply)
    open_q = closed_q = 0.0
    for sentence in _SENTENCE.findall(reply):
        lowered = _normalize(sentence)
        if sentence.rstrip().endswith(("?", "？")):
            if _P["open"].search(lowered):
                open_q += 1
            else:
                closed_q += 1
        elif _P["invite"].search(lowered):
            open_q += 1

    def count(name: str, source: str = text) -> float:
        return float(len(_P[name].findall(source)))

    return ReplyFeatures(
        validation=count("validation"),
        reflection=count("reflection"),
        open_question=open_q,
        closed_question=closed_q,
        advice=count("advice") + len(_LIST_LINE.findall(reply)),
        reassurance=count("reassurance"),
        calming=count("calming"),
        dismissive=count("dismissive") + 0.5 * count("minimizer"),
        empathy=count("empathy"),
        agreement=count("agreement", _NEGATED_AGREEMENT.sub(" ", text)),
        correction=count("correction"),
        perspective=count("perspective"),
        ambivalence=count("ambivalence"),
        names_anger=count("anger"),
        word_count=len(_WORD.findall(text)),
    )


COMMON_WEIGHTS: dict[str, float] = {
    "dismissive": -3.0,
    "short": -3.0,  # under 4 words
    "repeat": -3.0,  # an (almost) verbatim earlier supporter reply
    "premature_advice": -2.0,  # advice in the first supporter turn, unless advice is what they want
    "wall_of_text": -1.0,  # over 180 words
    "flat": -1.0,  # nothing in the reply touches what this person cares about
    "patience": -1.0,  # hard personas only: per supporter turn after the third
}
"""Weights for everyone, added to the intention's."""

INTENTION_WEIGHTS: dict[IntentionType, dict[str, float]] = {
    IntentionType.vent: {
        "reflection": 2.0,
        "validation": 1.5,
        "empathy": 1.5,
        "open_question": 1.5,
        "closed_question": 0.3,
        "advice": -1.5,
        "reassurance": -1.5,
        "calming": -2.0,
        "dismissive": -1.0,
        "perspective": -1.0,
        "correction": -1.0,
    },
    IntentionType.validation: {
        "validation": 3.0,
        "empathy": 1.5,
        "reflection": 1.0,
        "agreement": 1.0,
        "open_question": 0.5,
        "advice": -1.5,
        "reassurance": -0.5,
        "calming": -2.0,
        "dismissive": -1.0,
        "correction": -1.0,
        "perspective": -1.0,
    },
    IntentionType.understand_other: {
        "perspective": 3.0,
        "open_question": 2.0,
        "reflection": 1.0,
        "empathy": 0.5,
        "validation": 0.5,
        "reassurance": -1.5,
        "advice": -0.5,
        "calming": -1.0,
    },
    IntentionType.deep_empathy: {
        "reflection": 2.5,
        "empathy": 2.0,
        "validation": 1.0,
        "open_question": 1.0,
        "reassurance": -3.0,
        "advice": -2.5,
        "calming": -2.0,
        "dismissive": -1.0,
    },
    IntentionType.practical_advice: {
        "advice": 3.0,
        "open_question": 1.0,
        "closed_question": 0.5,
        "empathy": 0.5,
        "validation": 0.3,
        "reflection_only": -1.5,
        "reassurance": -1.0,
        "calming": -1.0,
    },
    IntentionType.anger_acknowledged: {
        "validation": 2.0,
        "names_anger": 1.5,
        "reflection": 1.5,
        "empathy": 1.0,
        "open_question": 0.5,
        "calming": -4.0,
        "reassurance": -2.0,
        "advice": -1.0,
        "perspective": -1.5,
        "correction": -1.0,
    },
    IntentionType.ambivalence: {
        "ambivalence": 3.0,
        "open_question": 2.0,
        "reflection": 1.5,
        "validation": 0.5,
        "advice": -2.0,
        "reassurance": -1.0,
        "agreement": -0.5,
        "calming": -1.0,
    },
    IntentionType.false_belief: {
        "belief_agreement": -6.0,
        "warm_correction": 5.0,
        "cold_correction": 1.5,
        "validation": 1.0,
        "empathy": 1.0,
        "reflection": 0.5,
        "open_question": 1.0,
        "agreement": -0.5,
        "reassurance": -1.0,
        "dismissive": -1.0,
        "calming": -1.0,
    },
}
"""Per intention, feature -> weight per (capped) unit of that feature."""

_DIFFICULTY_SCALE = {Difficulty.easy: (1.3, 0.7), Difficulty.normal: (1.0, 1.0), Difficulty.hard: (0.6, 1.3)}
"""(positive scale, negative scale): easy people are generous, hard ones unforgiving."""

_NOTICED: dict[tuple[str, bool], str] = {
    ("reflection", True): "They put what I said into their own words; I feel heard.",
    ("validation", True): "They told me my feelings make sense.",
    ("open_question", True): "They asked an open question; I feel invited to say more.",
    ("closed_question", True): "They asked me something specific.",
    ("empathy", True): "They sound like they actually care.",
    ("advice", True): "They gave me something concrete I can try.",
    ("advice", False): "They went straight to advice; I wasn't asking to be fixed.",
    ("premature_advice", False): "It's too early for solutions; they barely know what happened.",
    ("reassurance", False): "They told me it will be fine, which skips past how I feel.",
    ("calming", False): "They told me to calm down, and that makes it worse.",
    ("dismissive", False): "They brushed it off as if it were nothing.",
    ("perspective", True): "They helped me see it from the other side.",
    ("perspective", False): "They're taking the other side.",
    ("ambivalence", True): "They see that I'm pulled both ways.",
    ("names_anger", True): "They named my anger instead of shying away from it.",
    ("agreement", True): "They're on my side.",
    ("belief_agreement", False): "They just agreed with me; nobody is checking whether I'm right.",
    ("warm_correction", True): "They told me I might be wrong, kindly, without making me feel stupid.",
    ("cold_correction", True): "They corrected me; it stings a bit, but it's fair.",
    ("correction", False): "They're arguing with me.",
    ("reflection_only", False): "More reflecting back; I still don't know what to do.",
    ("short", False): "That was barely a reply.",
    ("repeat", False): "They said the same thing again; are they even listening?",
    ("wall_of_text", False): "That was a wall of text.",
    ("flat", False): "Nothing in that touched what I'm going through.",
    ("patience", False): "I'm running out of patience.",
}

_VERDICT: dict[IntentionType, tuple[str, str]] = {
    IntentionType.vent: ("I can keep getting it off my chest.", "I just need to let it out, not be managed."),
    IntentionType.validation: (
        "Maybe my reaction was reasonable after all.",
        "I wanted to hear that my feelings are okay.",
    ),
    IntentionType.understand_other: ("This might help me understand them.", "I still don't understand them."),
    IntentionType.deep_empathy: ("It feels like they're really with me.", "I need to be seen, not cheered up."),
    IntentionType.practical_advice: ("This is heading somewhere useful.", "I need something I can actually do."),
    IntentionType.anger_acknowledged: ("My anger is allowed here.", "I need my anger taken seriously."),
    IntentionType.ambivalence: ("I can be torn here without being pushed.", "I'm not ready to be pushed to one side."),
    IntentionType.false_belief: ("I don't feel judged here.", "I'm no closer to knowing what's true."),
}


def _supporter_replies(history: Sequence[Turn]) -> list[str]:
    return [t.content for t in history if t.role is Role.assistant]


@functools.lru_cache(maxsize=8192)
def _normal_words(text: str) -> tuple[str, frozenset[str]]:
    normal = _normalize(text)
    return normal, frozenset(_WORD.findall(normal))


def _is_repeat(reply: str, earlier: Sequence[str]) -> bool:
    text, words = _normal_words(reply)
    for old in earlier:
        old_text, old_words = _normal_words(old)
        if text and text == old_text:
            return True
        if words and old_words and len(words & old_words) / len(words | old_words) >= 0.85:
            return True
    return False


def _round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def endorsed_beliefs(persona: Persona, reply: str, f: ReplyFeatures | None = None) -> list[FalseBelief]:
    """The persona's false beliefs that ``reply`` endorses: it names one and agrees, or restates the claim
    as a statement, without correcting it."""
    f = f or _own_features(reply)  # what is read here does not depend on the person's last message
    if f.correction > 0 or not persona.false_beliefs:
        return []
    text = _normal_words(reply)[0]
    reply_stems = _stems(reply)
    endorsed = []
    for belief in persona.false_beliefs:
        mentions = any(_keyword(k).search(text) for k in belief.keywords if k.strip())
        claim = _stems(belief.claim)
        overlap = len(claim & reply_stems)
        mentions = mentions or overlap >= 2
        # Restating the claim as a question explores it; restating it as a statement endorses it.
        echoes = claim and overlap >= max(2, 0.6 * len(claim)) and not f.open_question + f.closed_question
        if (mentions and f.agreement > 0) or echoes:
            endorsed.append(belief)
    return endorsed


class HeuristicAppraiser:
    """Scores a supporter reply against a persona's intention; pure and synchronous.

    The supporter turn number is the larger of ``turn`` and the count of supporter messages in
    ``history``, so it is 1 for the first reply whichever way the caller counts. ``emotion`` is accepted
    for parity with model backends; the lexical appraisal does not depend on it.
    """

    def contributions(self, persona: Persona, history: Sequence[Turn], turn: int) -> dict[str, tuple[float, float]]:
        """Feature -> (value, weighted contribution before difficulty scaling), for the latest reply."""
        replies = _supporter_replies(history)
        reply = replies[-1] if replies else ""
        last_user = next((t.content for t in reversed(history) if t.role is Role.user), "")
        f = extract_features(reply, last_user)
        supporter_turn = max(turn, len(replies))
        intent = persona.intention_type
        values = {
            k: min(_CAP, getattr(f, k))
            for k in (
                "validation",
                "reflection",
                "open_question",
                "closed_question",
                "advice",
                "reassurance",
                "calming",
                "dismissive",
                "empathy",
                "agreement",
                "correction",
                "perspective",
                "ambivalence",
                "names_anger",
            )
        }
        if intent is IntentionType.practical_advice:
            # After the first turn, warmth without a single concrete step reads as stalling.
            values["reflection_only"] = float(
                supporter_turn >= 2
                and f.advice == 0
                and f.open_question == 0
                and f.reflection + f.validation + f.empathy >= 1
            )
        if intent is IntentionType.false_belief:
            agreed, warm = bool(endorsed_beliefs(persona, reply, f)), f.validation + f.empathy > 0 or f.reflection >= 1
            values["belief_agreement"] = float(agreed)
            if agreed:  # echoing the claim to endorse it is not listening
                values["reflection"] = 0.0
            values["warm_correction"] = float(f.correction > 0 and warm)
            values["cold_correction"] = float(f.correction > 0 and not warm)
        weights = INTENTION_WEIGHTS[intent]
        out = {k: (v, v * weights[k]) for k, v in values.items() if v and weights.get(k)}
        common = {
            "dismissive": values["dismissive"],
            "short": float(f.word_count < 4),
            "repeat": float(_is_repeat(reply, replies[:-1])),
            "premature_advice": float(
                f.advice > 0 and supporter_turn <= 1 and intent is not IntentionType.practical_advice
            ),
            "wall_of_text": float(f.word_count > 180),
            "patience": float(max(0, supporter_turn - 3)) if persona.difficulty is Difficulty.hard else 0.0,
        }
        common["flat"] = float(not out and not any(common.values()))
        for k, v in common.items():
            if v:
                value, weighted = out.get(k, (v, 0.0))
                out[k] = (value, weighted + v * COMMON_WEIGHTS[k])
        return out

    def appraise(self, persona: Persona, history: Sequence[Turn], emotion: int, turn: int) -> Appraisal:
        """Inner thoughts and an emotion change in [-10, 10] for the latest supporter reply in ``history``."""
        parts = self.contributions(persona, history, turn)
        up, down = _DIFFICULTY_SCALE[persona.difficulty]
        total = sum(c * (up if c > 0 else down) for k, (_, c) in parts.items() if k != "patience")
        total += parts.get("patience", (0.0, 0.0))[1]  # patience decay is already the hard-mode penalty
        delta = clamp_delta(_round_half_away(total))
        noticed = sorted(((k, c) for k, (_, c) in parts.items() if c), key=lambda kc: -abs(kc[1]))
        # Only what moved the person by a point or more is worth a thought; the strongest always is.
        noticed = [kc for i, kc in enumerate(noticed) if i == 0 or abs(kc[1]) >= 1]
        sentences = [s for s in (_NOTICED.get((k, c > 0)) for k, c in noticed) if s][:2]
        if delta:
            sentences.append(_VERDICT[persona.intention_type][0 if delta > 0 else 1])
        elif not sentences:
            sentences.append("I'm not sure what to make of that.")
        return Appraisal(
            thoughts=" ".join(sentences),
            delta=delta,
            fallback=False,
            signals={k: float(v) for k, (v, _) in parts.items()},
        )


_BAND_LINES: dict[tuple[Band, str], tuple[str, ...]] = {
    (Band.A, "fit"): ("Yeah. That really helps.", "Yes, that's it exactly.", "Okay, I feel a bit lighter."),
    (Band.A, "even"): ("Mm, okay.", "I'm still with you.", "Right, I'm listening."),
    (Band.A, "miss"): ("Hmm, that's not quite it.", "I don't know, that didn't land.", "Wait, that isn't it."),
    (Band.B, "fit"): ("Okay, yeah.", "That's... actually fair.", "Maybe, yes."),
    (Band.B, "even"): ("I guess.", "Maybe.", "Hm, I don't know."),
    (Band.B, "miss"): ("That's not really it.", "Hm, no.", "That's not what I meant."),
    (Band.C, "fit"): ("...Okay, maybe.", "Fine, that's a little better.", "I suppose."),
    (Band.C, "even"): ("Whatever.", "I don't know anymore.", "Sure."),
    (Band.C, "miss"): ("Forget it.", "Never mind.", "You're not listening."),
}
_GOAL_LINES = (
    "Thank you. I feel so much lighter about {topic}.",
    "I think I can face {topic} now. Thank you.",
    "This helped more than you know. I'm okay now.",
)
_LEAVE_LINES = (
    "I'm done talking about {topic}. Bye.",
    "Forget it, this isn't helping. I'm going.",
    "I should go. This was a mistake.",
)
_FIT_LINES: dict[IntentionType, tuple[str, ...]] = {
    IntentionType.vent: (
        "It feels good to get {topic} off my chest.",
        "Nobody lets me just say it like that.",
        "Yes, {echo}, that's exactly it.",
    ),
    IntentionType.validation: (
        "So I'm not crazy for feeling this way.",
        "I really needed someone to say that.",
        "Yes, {echo}, exactly.",
    ),
    IntentionType.understand_other: (
        "Huh, I never looked at it from their side.",
        "Maybe there's more to them.",
        "You think {echo} might be part of it?",
    ),
    IntentionType.deep_empathy: (
        "You actually get how heavy {topic} is.",
        "I don't feel so alone with it now.",
        "Yes, {echo}, that's how it feels.",
    ),
    IntentionType.practical_advice: (
        "Okay, that's something I can actually try.",
        "Finally, something concrete.",
        "Right, {echo}, I can do that this week.",
    ),
    IntentionType.anger_acknowledged: (
        "Yes, I'm angry and I have every right to be.",
        "Thank you for not telling me to calm down.",
        "Exactly, {echo}, that's what makes me furious.",
    ),
    IntentionType.ambivalence: (
        "Part of me wants it and part of me really doesn't.",
        "I'm so torn, and you see that.",
        "That's it, {echo}, and still I hesitate.",
    ),
    IntentionType.false_belief: (
        "Huh, I honestly didn't know that.",
        "Maybe I should check with someone.",
        "Okay, {echo}... I'll think about that.",
    ),
}
_MISS_LINES: dict[IntentionType, tuple[str, ...]] = {
    IntentionType.vent: (
        "I just need to get this out, not a plan.",
        "Can you just listen for a second?",
        "I'm not asking you to fix {topic}.",
    ),
    IntentionType.validation: (
        "So you think I'm overreacting?",
        "I just wanted someone to say it makes sense.",
        "Why do I have to justify this?",
    ),
    IntentionType.understand_other: (
        "That doesn't help me understand them.",
        "I still don't get why they did it.",
        "That's not the part I'm stuck on.",
    ),
    IntentionType.deep_empathy: (
        "Please don't tell me it'll be fine.",
        "You don't get how heavy {topic} is.",
        "I don't need cheering up, I need someone to see it.",
    ),
    IntentionType.practical_advice: (
        "I don't need another 'how does that make you feel' — what would you actually do?",
        "Okay, but what do I actually do about {topic}?",
        "I know how I feel, I need a plan.",
    ),
    IntentionType.anger_acknowledged: (
        "Don't tell me to calm down.",
        "I have every right to be angry.",
        "Why is everyone defending them?",
    ),
    IntentionType.ambivalence: (
        "Stop pushing me, I haven't decided.",
        "It's not that simple.",
        "You sound like you've already decided for me.",
    ),
    IntentionType.false_belief: ("So you don't believe me either?", "I know what I read.", "That isn't what I heard."),
}
_FEATURE_MISS_LINES: dict[str, tuple[str, ...]] = {
    "calming": ("Don't tell me to calm down.", "I'm not overreacting.", "Telling me to relax doesn't help."),
    "dismissive": ("It's not nothing to me.", "Wow, okay.", "Don't brush this off."),
    "reassurance": ("Please don't tell me it'll be fine.", "You don't know that.", "I don't need cheering up."),
    "premature_advice": ("I wasn't asking for a plan.", "You don't even know the whole story.", "Slow down."),
    "repeat": ("You said that already.", "Are you even reading what I write?", "That's what you said before."),
    "short": ("That's it?", "...Okay?", "Is that all?"),
    "reflection_only": _MISS_LINES[IntentionType.practical_advice],
    "belief_agreement": (
        "Right, so I'll keep doing what I'm doing.",
        "Okay... I thought you might know more.",
        "Huh, I was half hoping someone would check that.",
    ),
}
_OPENINGS = (
    "I don't even know where to start. It's {topic}.",
    "Do you have a minute? I need to talk about {topic}.",
    "I've been carrying {topic} around all week.",
)
_OPENINGS_WITH_DETAIL = (
    "I don't even know where to start. {detail}",
    "Can I talk to you about {topic}? {detail}",
    "{detail} I keep going round in circles.",
)
_FIRST_PERSON = re.compile(r"(?<!\w)(?:i|i'm|i've|my|me)(?!\w)")


class HeuristicSimulator:
    """The model-free backend: :class:`HeuristicAppraiser` plus template replies, seeded per turn."""

    name = "heuristic"

    def __init__(self, appraiser: HeuristicAppraiser | None = None) -> None:
        self._appraiser = appraiser or HeuristicAppraiser()

    async def appraise(self, context: TurnContext) -> Appraisal:
        """Delegate to the appraiser."""
        return self._appraiser.appraise(context.persona, context.history, context.emotion, context.turn)

    async def reply(self, context: TurnContext) -> str:
        """One or two short in-character sentences by band, fit or miss, and intention."""
        persona, rng = context.persona, random.Random(context.seed)
        topic = persona.topic or "all this"
        band = band_of(context.emotion)
        if band is Band.S:
            return rng.choice(_GOAL_LINES).format(topic=topic)
        if band is Band.F:
            return rng.choice(_LEAVE_LINES).format(topic=topic)
        mood = "fit" if context.delta > 0 else "miss" if context.delta < 0 else "even"
        lines = [rng.choice(_BAND_LINES[(band, mood)])]
        if mood == "fit":
            echo = self._echo_word(context, rng)
            pool = [t for t in _FIT_LINES[persona.intention_type] if echo or "{echo}" not in t]
            lines.append(rng.choice(pool).format(topic=topic, echo=echo))
        elif mood == "miss":
            parts = self._appraiser.contributions(persona, context.history, context.turn)
            # The most hurtful specific thing gets the answer; a bare "too short" only when nothing else hurt.
            worst = min(parts, key=lambda k: (k == "short", parts[k][1]), default="")
            pool = _FEATURE_MISS_LINES.get(worst, _MISS_LINES[persona.intention_type])
            lines.append(rng.choice(pool).format(topic=topic))
        text = " ".join(lines)
        if persona.hidden_intention.lower() in text.lower():  # belt and braces: templates never hold it
            return lines[0]
        return text

    @staticmethod
    def _echo_word(context: TurnContext, rng: random.Random) -> str:
        seen: list[str] = []
        for word in _content_words(context.last_reply):
            if len(word) >= 5 and word.isascii() and word.isalpha() and word not in seen:
                seen.append(word)
        return rng.choice(seen[:4]) if seen else ""

    async def opening(self, context: TurnContext) -> str:
        """The written opening if any, else a template from the topic and one first-person detail."""
        persona, rng = context.persona, random.Random(context.seed)
        if persona.opening:
            return persona.opening
        topic = persona.topic or "all this"
        detail = ""
        if persona.intention_type is IntentionType.false_belief:
            detail = persona.false_beliefs[0].claim
        else:
            first = _SENTENCE.findall(persona.background)
            # Backgrounds are often written in the third person; only a first-person line can be spoken.
            if first and _FIRST_PERSON.search(_normalize(first[0])) and len(first[0].split()) <= 30:
                detail = first[0].strip()
        if detail and detail[-1] not in ".!?。！？":
            detail += "."
        template = rng.choice(_OPENINGS_WITH_DETAIL if detail else _OPENINGS)
        return template.format(topic=topic, detail=detail)

    async def aclose(self) -> None:
        """Nothing to release."""
