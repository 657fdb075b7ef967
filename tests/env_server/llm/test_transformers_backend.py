"""The transformers backend with the real bundled SmolLM2-135M-Instruct GGUF (slow: loads the model)."""

from __future__ import annotations

import asyncio
import math

import pytest

from attune_client.wire import Role
from env_server.llm.chat import ChatSimulator
from env_server.llm.prompts import FEELING_CHOICES
from env_server.llm.protocol import Turn, TurnContext

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    from env_server.llm.transformers_backend import TransformersChatModel

    return TransformersChatModel(device="cpu", temperature=0.7)


def context(catalog, action: str, seed: int = 1) -> TurnContext:
    persona = next(p for p in catalog if p.opening)
    history = (Turn(Role.user, persona.opening), Turn(Role.assistant, action))
    return TurnContext(persona=persona, history=history, emotion=persona.initial_emotion, turn=1, seed=seed)


def test_generation_is_reproducible_per_seed(model) -> None:
    messages = [{"role": "user", "content": "Say something about the weather."}]
    before = model.generated_tokens
    first = asyncio.run(model.generate(messages, max_new_tokens=12, seed=5))
    again = asyncio.run(model.generate(messages, max_new_tokens=12, seed=5))
    assert first and first == again
    assert 2 <= model.generated_tokens - before <= 24  # counted for the metrics, at most 12 per call


def test_scoring_returns_a_finite_loglikelihood_per_choice(model) -> None:
    labels = [label for label, _ in FEELING_CHOICES]
    scores = asyncio.run(model.score([{"role": "user", "content": "How do you feel?"}], "I feel", labels))
    assert len(scores) == len(labels) and all(math.isfinite(s) and s < 0 for s in scores)
    assert len(set(scores)) > 1


def test_chat_simulator_appraises_and_replies_with_the_real_model(model, catalog) -> None:
    simulator = ChatSimulator(model, max_new_tokens=32, thoughts_tokens=24)
    ctx = context(catalog, "That sounds exhausting. What has been the hardest part?")
    appraisal = asyncio.run(simulator.appraise(ctx))
    assert appraisal.thoughts and -10 <= appraisal.delta <= 10
    assert not appraisal.fallback and set(appraisal.signals) == {label.strip() for label, _ in FEELING_CHOICES}
    reply = asyncio.run(simulator.reply(ctx))
    assert isinstance(reply, str) and reply.strip()
