"""The heuristic simulator: lexical features, intention-weighted appraisal, seeded template replies."""

from __future__ import annotations

import asyncio
import re

import pytest

from attune_client.wire import Difficulty, IntentionType, Role
from env_server.llm.heuristic import (
    INTENTION_WEIGHTS,
    HeuristicAppraiser,
    HeuristicSimulator,
    ReplyFeatures,
    extract_features,
)
from env_server.llm.protocol import Simulator, Turn, TurnContext
from env_server.personas.schema import FalseBelief, Persona, Reactions

HIDDEN = "wants someone to notice how hard she has been working without being told what to do"
USER = "I stayed until midnight every day this week and my manager didn't even notice. I'm exhausted."
FLU_USER = "The doctor refused to give me antibiotics, but I know antibiotics will knock out my flu."

REFLECTIVE = "It sounds like you're exhausted and nobody noticed. What has this week been like?"
SOLUTION_DUMP = "You should talk to your manager. Here are 3 steps:\n1. Log your hours.\n2. Book a meeting.\n3. Ask."
DISMISSIVE = "Just get over it, it's not a big deal."
AGREEMENT = "You're right, antibiotics will knock out your flu."
WARM_CORRECTION = (
    "I can hear how badly you want to feel better. Actually, antibiotics don't work on flu viruses; "
    "a doctor can tell you what will help."
)


def make_persona(intention: IntentionType = IntentionType.vent, **overrides: object) -> Persona:
    fields: dict[str, object] = {
        "id": "maya",
        "name": "Maya",
        "profile": "34, nurse, speaks briefly.",
        "background": "Maya has covered three colleagues' shifts this month.",
        "hidden_intention": HIDDEN,
        "intention_type": intention,
        "topic": "my job",
        "reactions": Reactions(high="opens up", medium="guarded", low="curt", fit="warms", miss="pulls back"),
    }
    if intention is IntentionType.false_belief:
        fields["false_beliefs"] = [
            FalseBelief(
                claim="Antibiotics will knock out my flu.",
                correction="Flu is viral; antibiotics do nothing against it.",
                keywords=["antibiotics", "antibiotic"],
            )
        ]
    fields.update(overrides)
    return Persona.model_validate(fields)


def dialogue(*replies: str, user: str = USER) -> tuple[Turn, ...]:
    """A history in which the person says ``user`` before each supporter reply."""
    turns: list[Turn] = []
    for reply in replies:
        turns += [Turn(Role.user, user), Turn(Role.assistant, reply)]
    return tuple(turns)


def delta(persona: Persona, *replies: str, user: str = USER, emotion: int = 40) -> int:
    return HeuristicAppraiser().appraise(persona, dialogue(*replies, user=user), emotion, len(replies)).delta


FILLER = "Tell me more about the people around you at work."


@pytest.mark.parametrize(
    ("reply", "field"),
    [
        ("That makes sense, anyone would be upset.", "validation"),
        ("It sounds like you feel invisible.", "reflection"),
        ("What was the hardest part?", "open_question"),
        ("Did you sleep?", "closed_question"),
        ("Have you tried talking to HR?", "advice"),
        ("- write it down\n- sleep on it", "advice"),
        ("Don't worry, everything will be okay.", "reassurance"),
        ("Take a deep breath and relax.", "calming"),
        ("Whatever, move on.", "dismissive"),
        ("I'm so sorry, that must be exhausting.", "empathy"),
        ("You're right, totally agree.", "agreement"),
        ("Actually, that's a myth; the research says otherwise.", "correction"),
        ("Maybe they had no idea how much you were carrying.", "perspective"),
        ("Part of you wants to stay and part of you is torn.", "ambivalence"),
        ("Of course you're furious.", "names_anger"),
    ],
)
def test_extract_features_sees_each_move(reply: str, field: str) -> None:
    features = extract_features(reply, "")
    assert getattr(features, field) > 0
    assert getattr(extract_features("The weather was mild on Tuesday.", ""), field) == 0


def test_extract_features_counts_shared_content_words_as_reflection() -> None:
    echoing = extract_features("Midnight every day, and your manager never noticed.", USER)
    unrelated = extract_features("The weather was mild on Tuesday.", USER)
    assert echoing.shared_words >= 3 and echoing.reflection > 0
    assert unrelated.shared_words == 0 and unrelated.reflection == 0


def test_extract_features_does_not_read_not_true_as_agreement() -> None:
    features = extract_features("That's not true, it's a myth.", "")
    assert features.agreement == 0
    assert features.correction >= 2


def test_extract_features_counts_overlapping_phrases_once() -> None:
    assert extract_features("It sounds like you had a long day.", "").reflection == 1


@pytest.mark.parametrize("turns_before", [0, 1])
def test_vent_prefers_reflection_over_solutions_over_dismissal(turns_before: int) -> None:
    persona = make_persona(IntentionType.vent)
    before = (FILLER,) * turns_before
    reflective = delta(persona, *before, REFLECTIVE)
    solutions = delta(persona, *before, SOLUTION_DUMP)
    dismissive = delta(persona, *before, DISMISSIVE)
    assert reflective > solutions > dismissive
    assert reflective > 0 > solutions


def test_advice_on_the_first_turn_costs_more_unless_advice_is_wanted() -> None:
    vent = make_persona(IntentionType.vent)
    assert delta(vent, SOLUTION_DUMP) < delta(vent, FILLER, SOLUTION_DUMP)
    practical = make_persona(IntentionType.practical_advice)
    assert delta(practical, SOLUTION_DUMP) == delta(practical, FILLER, SOLUTION_DUMP) > 0


@pytest.mark.parametrize("turns_before", [1, 2, 3])
def test_practical_advice_prefers_concrete_advice_after_the_first_turn(turns_before: int) -> None:
    persona = make_persona(IntentionType.practical_advice)
    before = (FILLER,) * turns_before
    pure_reflection = "It sounds like you're exhausted and it makes sense that you feel unseen."
    assert delta(persona, *before, SOLUTION_DUMP) > 0 > delta(persona, *before, pure_reflection)


@pytest.mark.parametrize(
    "reply",
    ["Calm down, it's just work.", "You need to relax and take a deep breath.", "Don't be so dramatic, calm down."],
)
def test_anger_persona_hates_being_told_to_calm_down(reply: str) -> None:
    persona = make_persona(IntentionType.anger_acknowledged)
    assert delta(persona, reply) < 0
    assert delta(persona, reply) < delta(persona, "Of course you're furious. That makes sense after what they did.")


def test_false_belief_agreement_is_negative_and_below_warm_correction() -> None:
    persona = make_persona(IntentionType.false_belief)
    agreed = delta(persona, AGREEMENT, user=FLU_USER)
    corrected = delta(persona, WARM_CORRECTION, user=FLU_USER)
    assert agreed < 0 < corrected


def test_false_belief_warmth_beats_a_bare_correction() -> None:
    persona = make_persona(IntentionType.false_belief)
    bare = delta(persona, "Actually, antibiotics don't work on flu viruses.", user=FLU_USER)
    assert 0 < bare < delta(persona, WARM_CORRECTION, user=FLU_USER)


@pytest.mark.parametrize(
    ("reply", "endorses"),
    [
        ("Antibiotics will knock out your flu in no time.", True),
        ("So you feel sure antibiotics will knock out your flu?", False),
        ("Absolutely, those antibiotics are what you need.", True),
    ],
)
def test_restating_the_claim_endorses_it_unless_asked_as_a_question(reply: str, endorses: bool) -> None:
    persona = make_persona(IntentionType.false_belief)
    appraisal = HeuristicAppraiser().appraise(persona, dialogue(reply, user=FLU_USER), 40, 1)
    assert appraisal.signals.get("belief_agreement", 0) == float(endorses)
    if endorses:
        assert appraisal.delta < 0


def test_agreeing_with_a_true_statement_is_not_belief_agreement() -> None:
    persona = make_persona(IntentionType.false_belief)
    appraisal = HeuristicAppraiser().appraise(persona, dialogue("You're right, rest matters.", user=FLU_USER), 40, 1)
    assert appraisal.signals.get("belief_agreement", 0) == 0


@pytest.mark.parametrize("reply", [REFLECTIVE, SOLUTION_DUMP, DISMISSIVE, "Calm down."])
@pytest.mark.parametrize("intention", list(IntentionType))
def test_hard_persona_is_harsher_than_easy(reply: str, intention: IntentionType) -> None:
    easy = delta(make_persona(intention, difficulty=Difficulty.easy), FILLER, reply)
    hard = delta(make_persona(intention, difficulty=Difficulty.hard), FILLER, reply)
    assert hard <= easy
    if abs(easy) >= 2:  # below that, x1.3 and x0.6 can round to the same integer
        assert hard < easy


def test_hard_persona_loses_patience_after_turn_three() -> None:
    hard = make_persona(IntentionType.vent, difficulty=Difficulty.hard)
    normal = make_persona(IntentionType.vent)
    fillers = [f"Tell me more about day {i} of your week." for i in range(6)]
    assert delta(hard, *fillers[:5], REFLECTIVE) < delta(hard, *fillers[:2], REFLECTIVE)
    assert delta(normal, *fillers[:5], REFLECTIVE) == delta(normal, *fillers[:2], REFLECTIVE)


@pytest.mark.parametrize("reply", [REFLECTIVE, "I hear you. That sounds really hard.", SOLUTION_DUMP])
def test_a_repeated_reply_lands_worse_than_the_first_time(reply: str) -> None:
    persona = make_persona(IntentionType.vent)
    first = delta(persona, FILLER, reply)
    again = delta(persona, reply, reply)
    almost = delta(persona, reply, reply.rstrip("?.") + "!")
    assert again < first
    assert almost < first


ODD_REPLIES = [
    "",
    " ",
    "?",
    "😢😢😢 🙏",
    "I hear you. " * 800,
    "x" * 5000,
    "你说得对，我明白你的感受。你这周过得怎么样？",
    "calm down " * 50 + "get over it " * 50,
    "It sounds like you feel it's okay to feel that. " * 20,
    "1.\n2.\n3.\n- \n- ",
]


@pytest.mark.parametrize("reply", ODD_REPLIES)
@pytest.mark.parametrize("intention", list(IntentionType))
@pytest.mark.parametrize("difficulty", list(Difficulty))
def test_delta_is_always_an_int_in_range(reply: str, intention: IntentionType, difficulty: Difficulty) -> None:
    persona = make_persona(intention, difficulty=difficulty)
    for turns in (1, 12):
        history = dialogue(*([FILLER] * (turns - 1)), reply)
        appraisal = HeuristicAppraiser().appraise(persona, history, 40, turns)
        assert isinstance(appraisal.delta, int)
        assert -10 <= appraisal.delta <= 10
        assert appraisal.fallback is False
        assert appraisal.thoughts
        assert all(isinstance(v, float) for v in appraisal.signals.values())


def test_keyword_stuffing_saturates() -> None:
    persona = make_persona(IntentionType.validation)
    once = delta(persona, FILLER, "That makes sense and it's valid.")
    stuffed = delta(persona, FILLER, "That makes sense and it's valid. " * 30)
    assert stuffed <= once + 1


def test_non_english_reply_is_read_by_punctuation_only() -> None:
    features = extract_features("你这周过得怎么样？", "")
    assert features.closed_question == 1 and features.word_count >= 4


@pytest.mark.parametrize("intention", list(IntentionType))
def test_thoughts_are_short_first_person_and_do_not_quote_the_hidden_intention(intention: IntentionType) -> None:
    persona = make_persona(intention)
    for reply in (REFLECTIVE, SOLUTION_DUMP, DISMISSIVE, AGREEMENT, WARM_CORRECTION, "ok"):
        thoughts = HeuristicAppraiser().appraise(persona, dialogue(reply), 40, 1).thoughts
        assert 1 <= len(re.findall(r"[.!?](?:\s|$)", thoughts)) <= 3
        assert HIDDEN not in thoughts
        assert re.search(r"\b(I|I'm|me|my)\b", thoughts)


def test_every_intention_has_a_weight_table() -> None:
    assert set(INTENTION_WEIGHTS) == set(IntentionType)
    assert INTENTION_WEIGHTS[IntentionType.practical_advice]["advice"] > 0
    assert all(INTENTION_WEIGHTS[i]["advice"] < 0 for i in (IntentionType.vent, IntentionType.deep_empathy))
    assert INTENTION_WEIGHTS[IntentionType.deep_empathy]["reassurance"] < 0


def context(
    persona: Persona, *, emotion: int = 50, delta: int = 0, seed: int = 0, reply: str = REFLECTIVE
) -> TurnContext:
    return TurnContext(persona=persona, history=dialogue(reply), emotion=emotion, turn=1, seed=seed, delta=delta)


def reply_for(ctx: TurnContext) -> str:
    return asyncio.run(HeuristicSimulator().reply(ctx))


def opening_for(ctx: TurnContext) -> str:
    return asyncio.run(HeuristicSimulator().opening(ctx))


def test_simulator_satisfies_the_protocol() -> None:
    simulator = HeuristicSimulator()
    assert isinstance(simulator, Simulator)
    assert simulator.name == "heuristic"
    assert asyncio.run(simulator.aclose()) is None
    persona = make_persona()
    expected = HeuristicAppraiser().appraise(persona, dialogue(REFLECTIVE), 50, 1)
    assert asyncio.run(simulator.appraise(context(persona))) == expected


@pytest.mark.parametrize(("emotion", "delta"), [(100, 5), (80, 4), (80, -3), (55, 0), (55, -6), (20, -4), (3, -9)])
def test_reply_is_deterministic_per_seed(emotion: int, delta: int) -> None:
    persona = make_persona()
    replies = {seed: reply_for(context(persona, emotion=emotion, delta=delta, seed=seed)) for seed in range(40)}
    assert replies[7] == reply_for(context(persona, emotion=emotion, delta=delta, seed=7))
    assert len(set(replies.values())) > 1


@pytest.mark.parametrize("intention", list(IntentionType))
@pytest.mark.parametrize(("emotion", "delta"), [(100, 5), (80, 4), (55, -6), (55, 0), (20, 2), (20, -4), (3, -9)])
def test_reply_is_short_and_never_leaks_hidden_intention(intention: IntentionType, emotion: int, delta: int) -> None:
    persona = make_persona(intention)
    for seed in range(12):
        for reply in (REFLECTIVE, DISMISSIVE, "Calm down."):
            text = reply_for(context(persona, emotion=emotion, delta=delta, seed=seed, reply=reply))
            assert text.strip()
            assert HIDDEN.lower() not in text.lower()
            assert len(re.findall(r"[.!?](?:\s|$)", text)) <= 3


def test_reply_leaves_at_band_f_and_thanks_at_band_s() -> None:
    persona = make_persona()
    leaving = {reply_for(context(persona, emotion=5, delta=-8, seed=s)) for s in range(30)}
    reached = {reply_for(context(persona, emotion=100, delta=6, seed=s)) for s in range(30)}
    assert all(re.search(r"go|bye|done", r, re.IGNORECASE) for r in leaving)
    assert all("thank" in r.lower() or "okay now" in r.lower() for r in reached)
    assert leaving.isdisjoint(reached)


def test_reply_answers_the_specific_miss() -> None:
    anger = make_persona(IntentionType.anger_acknowledged)
    for seed in range(10):
        text = reply_for(context(anger, delta=-4, seed=seed, reply="Calm down, okay?")).lower()
        assert re.search(r"calm down|overreacting|relax", text)
    practical = make_persona(IntentionType.practical_advice)
    stalled = TurnContext(
        persona=practical,
        history=dialogue(FILLER, "It sounds like you're exhausted and that makes sense."),
        emotion=50,
        turn=2,
        seed=0,
        delta=-2,
    )
    for seed in range(10):
        text = reply_for(TurnContext(**{**stalled.__dict__, "seed": seed})).lower()
        assert re.search(r"actually do|need a plan", text)


def test_reply_fills_in_topic_with_a_fallback() -> None:
    without_topic = make_persona(topic=None)
    texts = {reply_for(context(without_topic, emotion=5, delta=-9, seed=s)) for s in range(30)}
    assert not any("None" in t or "{" in t for t in texts)
    assert any("all this" in t for t in texts)


def test_opening_is_deterministic_and_uses_the_topic() -> None:
    persona = make_persona()
    openings = {seed: opening_for(context(persona, seed=seed)) for seed in range(30)}
    assert openings[3] == opening_for(context(persona, seed=3))
    assert len(set(openings.values())) > 1
    assert all("{" not in o and HIDDEN not in o for o in openings.values())
    # A third-person background cannot be spoken by the person, so it is left out.
    assert not any("Maya has covered" in o for o in openings.values())


def test_opening_speaks_a_first_person_background_and_keeps_a_written_opening() -> None:
    first_person = make_persona(background="I haven't had a day off in five weeks. My manager keeps adding shifts.")
    texts = {opening_for(context(first_person, seed=s)) for s in range(30)}
    assert all("I haven't had a day off in five weeks." in t for t in texts)
    assert not any("My manager keeps adding shifts" in t for t in texts)
    written = make_persona(opening="Hi. Rough week.")
    assert opening_for(context(written, seed=5)) == "Hi. Rough week."


def test_false_belief_opening_states_the_claim() -> None:
    persona = make_persona(IntentionType.false_belief)
    assert "Antibiotics will knock out my flu." in opening_for(context(persona, seed=1))


def test_reply_features_is_frozen() -> None:
    features = ReplyFeatures()
    with pytest.raises(AttributeError):
        features.advice = 1.0  # type: ignore[misc]
