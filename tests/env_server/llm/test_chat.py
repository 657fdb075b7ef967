"""ChatSimulator's parsing and fallback, over a scripted chat model (the real model's tests are marked slow)."""

from __future__ import annotations

import asyncio

import pytest

from attune_client.wire import Role
from env_server.llm.chat import ChatSimulator, clean_reply, parse_feeling
from env_server.llm.prompts import appraisal_messages, reply_messages
from env_server.llm.protocol import Turn, TurnContext


class ScriptedModel:
    """A chat model that answers from a script: stands in for a remote API that cannot score."""

    name = "scripted"

    def __init__(self, text: str, scores: list[float] | None = None) -> None:
        self.text, self.scores, self.calls, self.prompts = text, scores, [], []

    async def generate(self, messages, *, max_new_tokens: int, seed: int, prefix: str = "", remember=False) -> str:
        self.calls.append(("generate", prefix))
        self.prompts.append(messages)
        return self.text

    async def score(self, messages, prefix, choices, *, remember=False):
        self.calls.append(("score", messages[-1]["content"]))
        self.prompts.append(messages)
        return self.scores

    async def aclose(self) -> None:
        return None


def context(catalog, action: str) -> TurnContext:
    persona = next(p for p in catalog if p.intention_type.value == "vent")
    return TurnContext(
        persona=persona,
        history=(Turn(Role.user, "It's been a week."), Turn(Role.assistant, action)),
        emotion=40,
        turn=1,
        seed=3,
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("I feel a little worse now.", -2),
        ("Honestly that made me feel MUCH BETTER", 8),
        ("worse, if anything", -5),
        ("no idea", None),
    ],
)
def test_parse_feeling_reads_the_longest_label(text: str, value: int | None) -> None:
    assert parse_feeling(text) == value


def test_clean_reply_strips_speaker_tags_quotes_and_extra_paragraphs() -> None:
    assert clean_reply('Maya: "Fine. Whatever. Really. Sure."\n\nSupporter: ok') == "Fine. Whatever. Really."


def test_unparseable_output_falls_back_to_heuristic_and_is_counted(catalog) -> None:
    simulator = ChatSimulator(ScriptedModel("hmm, the weather is nice"))
    appraisal = asyncio.run(simulator.appraise(context(catalog, "Just get over it, it's not a big deal.")))
    assert appraisal.fallback and simulator.fallbacks == 1
    assert appraisal.delta < 0  # the heuristic's judgement of a dismissive reply, not a silent 0


def test_parsed_feeling_is_used_when_the_model_cannot_score(catalog) -> None:
    simulator = ChatSimulator(ScriptedModel("That made me feel much better, honestly."))
    appraisal = asyncio.run(simulator.appraise(context(catalog, "That sounds exhausting.")))
    assert not appraisal.fallback and appraisal.delta > 0 and simulator.fallbacks == 0


def test_scores_are_calibrated_against_a_blank_reply(catalog) -> None:
    # The same raw scores with and without the reply: every calibrated score is 0, the first choice wins.
    model = ScriptedModel("it was fine", scores=[-1.0, -2.0, -3.0, -0.5, -3.0, -2.0, -1.0])
    appraisal = asyncio.run(ChatSimulator(model).appraise(context(catalog, "What happened?")))
    assert [kind for kind, _ in model.calls] == ["score", "score", "generate"]
    assert "(says nothing)" in model.calls[1][1] and "(says nothing)" not in model.calls[0][1]
    assert appraisal.thoughts.startswith("That reply made me feel much worse, because")


def long_context(catalog, messages: int) -> TurnContext:
    persona = next(p for p in catalog if p.intention_type.value == "vent")
    roles = [Role.user, Role.assistant]
    history = tuple(Turn(roles[i % 2], f"message number {i}.") for i in range(messages))
    return TurnContext(persona=persona, history=history, emotion=40, turn=messages // 2, seed=3)


def test_transcript_window_shows_only_the_last_messages_and_says_how_many_are_left_out(catalog) -> None:
    whole = appraisal_messages(long_context(catalog, 12))[-1]["content"]
    windowed = appraisal_messages(long_context(catalog, 12), window=4)[-1]["content"]
    assert "message number 0." in whole and "earlier messages" not in whole
    assert "(... 8 earlier messages)" in windowed
    assert "message number 7." not in windowed
    assert all(f"message number {i}." in windowed for i in range(8, 12))
    # A window wider than the dialogue shows all of it, as 0 does.
    assert appraisal_messages(long_context(catalog, 12), window=50)[-1]["content"] == whole


def test_simulator_prompts_follow_its_transcript_window(catalog) -> None:
    model = ScriptedModel("it was fine", scores=[-1.0, -2.0, -3.0, -0.5, -3.0, -2.0, -1.0])
    simulator = ChatSimulator(model, transcript_window=2)
    context_ = long_context(catalog, 10)
    asyncio.run(simulator.appraise(context_))
    asyncio.run(simulator.reply(context_))
    # score, blank-reply score, thoughts, line: every prompt shows the last two messages only.
    assert len(model.prompts) == 4
    users = [next(m["content"] for m in messages if m["role"] == "user") for messages in model.prompts]
    assert all("(... 8 earlier messages)" in text and "message number 7." not in text for text in users)
    assert "message number 9." in users[0] and "(says nothing)" in users[1]
    assert model.prompts[-1] == reply_messages(context_, window=2)
