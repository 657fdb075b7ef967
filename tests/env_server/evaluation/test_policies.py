"""Policy specs: built-ins, ``module:function`` callables (sync and async) and OpenAI-compatible endpoints."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from attune_client.policies import empathic
from env_server.evaluation.policies import (
    SYSTEM_PROMPT,
    CallablePolicy,
    OpenAIPolicy,
    PolicyError,
    PolicySpecError,
    load_policies,
    load_policy,
)

HISTORY = [("user", "My boss yelled at me."), ("assistant", "That sounds awful. What happened?")]


def shouting(observation: str, history: list[tuple[str, str]]) -> str:
    return observation.upper()


async def async_echo(observation: str, history: list[tuple[str, str]]) -> str:
    await asyncio.sleep(0)
    return f"You said: {observation}"


def blank(observation: str, history: list[tuple[str, str]]) -> str:
    return "   "


def broken(observation: str, history: list[tuple[str, str]]) -> str:
    raise ZeroDivisionError("oops")


def reply(policy, observation: str = "I can't sleep.", history=HISTORY, seed: int = 3) -> str:
    return asyncio.run(policy.reply(observation, list(history), seed))


@pytest.mark.parametrize(("spec", "name"), [("builtin:empathic", "empathic"), ("empathic", "empathic")])
def test_builtin_specs_are_named_without_the_prefix(spec: str, name: str) -> None:
    policy = load_policy(spec)
    assert policy.name == name
    assert reply(policy) == empathic("I can't sleep.", HISTORY)


def test_module_function_specs_import_sync_and_async_callables() -> None:
    assert reply(load_policy(f"{__name__}:shouting")) == "I CAN'T SLEEP."
    policy = load_policy(f"{__name__}:async_echo")
    assert policy.name == f"{__name__}:async_echo"
    assert reply(policy) == "You said: I can't sleep."


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("builtin:kind", "unknown built-in policy 'kind'"),
        ("nosuch", "unknown built-in policy 'nosuch'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        (f"{__name__}:missing", "has no attribute 'missing'"),
        (f"{__name__}:HISTORY", "is not callable"),
        ("openai:gpt-4o", "expected openai:MODEL@BASE_URL"),
        ("openai:gpt-4o@localhost:8000", "expected openai:MODEL@BASE_URL"),
        (":f", "expected builtin:NAME"),
    ],
)
def test_bad_specs_name_the_problem(spec: str, message: str) -> None:
    with pytest.raises(PolicySpecError, match=message):
        load_policy(spec)


def test_policy_lists_refuse_duplicates_and_emptiness() -> None:
    assert [p.name for p in load_policies("builtin:empathic, dismissive")] == ["empathic", "dismissive"]
    with pytest.raises(PolicySpecError, match="more than once: empathic"):
        load_policies("builtin:empathic,empathic")
    with pytest.raises(PolicySpecError, match="no policies"):
        load_policies(" , ")


@pytest.mark.parametrize(("function", "message"), [(blank, "non-blank string"), (broken, "raised ZeroDivisionError")])
def test_a_failing_callable_is_a_policy_error(function, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        reply(CallablePolicy("bad", function))


def test_a_slow_sync_callable_moves_to_worker_threads() -> None:
    threads: list[str] = []

    def slow(observation: str, history: list[tuple[str, str]]) -> str:
        threads.append(threading.current_thread().name)
        time.sleep(0.02)
        return "ok"

    policy = CallablePolicy("slow", slow)

    async def twice() -> None:
        await policy.reply("a", [], 0)
        await policy.reply("b", [], 0)

    asyncio.run(twice())
    assert threads[0] == threading.main_thread().name
    assert threads[1] != threading.main_thread().name


def test_openai_policy_sends_the_dialogue_as_chat_messages() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": " I hear you. "}}]})

    policy = OpenAIPolicy(
        "openai:m@http://llm:9000/v1",
        "m",
        "http://llm:9000/v1",
        api_key="k" * 20,
        transport=httpx.MockTransport(handler),
    )
    assert reply(policy, seed=11) == "I hear you."
    request = seen[0]
    assert str(request.url) == "http://llm:9000/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer " + "k" * 20
    body = json.loads(request.content)
    assert body["model"] == "m"
    assert body["temperature"] == 0.7
    assert body["seed"] == 11
    assert body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "My boss yelled at me."},
        {"role": "assistant", "content": "That sounds awful. What happened?"},
        {"role": "user", "content": "I can't sleep."},
    ]
    assert SYSTEM_PROMPT.startswith("You are a supportive listener")


@pytest.mark.parametrize(
    "response",
    [httpx.Response(500, text="boom"), httpx.Response(200, json={"choices": []}), httpx.Response(200, text="not json")],
)
def test_openai_failures_are_policy_errors(response: httpx.Response) -> None:
    policy = OpenAIPolicy("o", "m", "http://llm:9000", transport=httpx.MockTransport(lambda request: response))
    with pytest.raises(PolicyError, match="http://llm:9000/v1/chat/completions failed"):
        reply(policy)


def test_openai_spec_parses_model_and_url() -> None:
    policy = load_policy("openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8001")
    assert isinstance(policy, OpenAIPolicy)
    assert policy.name == "openai:Qwen/Qwen2.5-7B-Instruct@http://127.0.0.1:8001"
    assert policy.model == "Qwen/Qwen2.5-7B-Instruct"
    assert policy.url == "http://127.0.0.1:8001/v1/chat/completions"
    asyncio.run(policy.aclose())
