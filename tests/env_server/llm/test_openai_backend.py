"""The OpenAI-compatible backend: request shape, retries and limits over httpx.MockTransport, then the real thing
against llama-cpp-python's server on loopback serving the bundled SmolLM2 (slow: compiles the server once)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from attune_client.wire import Role
from env_server.llm import openai_backend
from env_server.llm.chat import ChatSimulator, parse_feeling
from env_server.llm.openai_backend import OpenAIBackendError, OpenAIChatModel
from env_server.llm.prompts import FEELING_CHOICES, FEELING_PREFIX, appraisal_messages
from env_server.llm.protocol import Turn, TurnContext
from tests.support.sleeps import patch_sleep

CHAT = [{"role": "user", "content": "Say something about the weather."}]
LABELS = [label for label, _ in FEELING_CHOICES]


def completion(content: str | None, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    )


class Server:
    """A scripted OpenAI-compatible server: answers each request with the next response (or raises it)."""

    def __init__(self, *answers: httpx.Response | Exception | Callable[[dict], httpx.Response]) -> None:
        self.answers, self.requests = list(answers), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.requests.append((request, body))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer(body) if callable(answer) else answer

    def model(self, **options) -> OpenAIChatModel:
        options.setdefault("backoff", 0.0)
        return OpenAIChatModel("http://sim.test/v1", "smol", transport=httpx.MockTransport(self), **options)


def run(make: Callable[[], OpenAIChatModel], use):
    """Build the model inside one event loop, use it, and close it there."""

    async def main():
        model = make()
        try:
            return await use(model)
        finally:
            await model.aclose()

    return asyncio.run(main())


def test_request_carries_model_sampling_and_key() -> None:
    server = Server(completion("Sunny."))
    text = run(
        lambda: server.model(api_key="k" * 20, temperature=0.3, top_p=0.8, extra_body={"top_k": 20}),
        lambda m: m.generate(CHAT, max_new_tokens=12, seed=7),
    )
    request, body = server.requests[0]
    assert text == "Sunny." and request.url == "http://sim.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer " + "k" * 20
    assert body["model"] == "smol" and body["messages"] == CHAT
    assert (body["seed"], body["temperature"], body["top_p"], body["max_tokens"]) == (7, 0.3, 0.8, 12)
    assert body["top_k"] == 20 and body["stream"] is False


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retryable_status_then_success_retries_once(status: int) -> None:
    server = Server(httpx.Response(status, text="busy"), completion("ok"))
    assert run(server.model, lambda m: m.generate(CHAT, max_new_tokens=4, seed=1)) == "ok"
    assert len(server.requests) == 2


def test_backoff_doubles_and_a_longer_retry_after_wins(monkeypatch) -> None:
    delays = []

    async def record(delay: float) -> None:
        delays.append(delay)

    patch_sleep(monkeypatch, openai_backend, "asyncio", record)
    server = Server(
        httpx.Response(503), httpx.Response(503), httpx.Response(429, headers={"Retry-After": "7"}), completion("ok")
    )
    assert run(lambda: server.model(backoff=0.5), lambda m: m.generate(CHAT, max_new_tokens=4, seed=1)) == "ok"
    assert delays == [0.5, 1.0, 7.0]


def test_client_error_is_not_retried() -> None:
    server = Server(httpx.Response(400, json={"error": "bad max_tokens"}), completion("never"))
    with pytest.raises(OpenAIBackendError, match="HTTP 400.*bad max_tokens") as caught:
        run(server.model, lambda m: m.generate(CHAT, max_new_tokens=4, seed=1))
    assert len(server.requests) == 1 and caught.value.status == 400 and caught.value.attempts == 1


def test_connection_errors_are_retried_then_raised() -> None:
    server = Server(httpx.ConnectError("refused"))
    with pytest.raises(OpenAIBackendError, match="after 3 attempts: ConnectError") as caught:
        run(lambda: server.model(retries=2), lambda m: m.generate(CHAT, max_new_tokens=4, seed=1))
    assert len(server.requests) == 3 and caught.value.status is None


def test_server_errors_past_the_retries_raise_with_status_and_body() -> None:
    server = Server(httpx.Response(502, text="upstream down"))
    with pytest.raises(OpenAIBackendError, match="after 2 attempts: HTTP 502: upstream down") as caught:
        run(lambda: server.model(retries=1), lambda m: m.generate(CHAT, max_new_tokens=4, seed=1))
    assert caught.value.status == 502 and caught.value.body == "upstream down"


def test_unreadable_answer_raises() -> None:
    server = Server(httpx.Response(200, json={"choices": []}))
    with pytest.raises(OpenAIBackendError, match="unreadable chat completion"):
        run(server.model, lambda m: m.generate(CHAT, max_new_tokens=4, seed=1))


def test_continue_mode_sends_the_prefix_as_the_turn_to_continue() -> None:
    server = Server(completion(" much better, because"))
    text = run(server.model, lambda m: m.generate(CHAT, max_new_tokens=8, seed=1, prefix="I feel"))
    body = server.requests[0][1]
    assert text == " much better, because"
    assert body["messages"][-1] == {"role": "assistant", "content": "I feel"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("I feel much better.", " much better."),
        ('"I feel, well, odd"', ', well, odd"'),
        ("Rather sad.", " Rather sad."),
    ],
)
def test_instruct_mode_asks_for_the_prefix_and_cuts_its_echo(answer: str, expected: str) -> None:
    server = Server(completion(answer))
    text = run(
        lambda: server.model(prefix_mode="instruct"),
        lambda m: m.generate(CHAT, max_new_tokens=8, seed=1, prefix="I feel"),
    )
    messages = server.requests[0][1]["messages"]
    assert text == expected and len(messages) == 1 and "continue_final_message" not in server.requests[0][1]
    assert messages[0]["content"].endswith('Begin your answer with exactly these words: "I feel"')


def test_score_is_unavailable() -> None:
    assert run(Server(completion("x")).model, lambda m: m.score(CHAT, "I feel", LABELS)) is None


def kind(body: dict) -> str:
    return next(key for key in ("grammar", "response_format", "structured_outputs") if key in body)


def llama_cpp_python_like(body: dict) -> httpx.Response:
    """Honours a GBNF grammar; answers OpenAI's json_schema with a 500, as llama-cpp-python's server does."""
    if "response_format" in body:
        return httpx.Response(500, json={"error": {"message": "Input should be 'text' or 'json_object'"}})
    if "grammar" in body:
        assert body["grammar"].startswith('root ::= "much worse" | "worse"') and body["temperature"] == 0.0
        return completion("a little better")
    return completion("Some free text.")


def openai_like(body: dict) -> httpx.Response:
    """Refuses unknown options with a 400; honours json_schema."""
    if "grammar" in body or "structured_outputs" in body:
        return httpx.Response(400, json={"error": {"message": "Unrecognized request argument supplied: grammar"}})
    return completion('{"choice": "worse"}')


def vllm_like(body: dict) -> httpx.Response:
    """Ignores unknown options (free text); honours json_schema."""
    return completion('{"choice":"much better"}' if "response_format" in body else "I feel okay I guess.")


@pytest.mark.parametrize(
    ("server", "index", "mode", "kinds"),
    [
        (llama_cpp_python_like, 4, "grammar", ["grammar", "grammar"]),
        (openai_like, 1, "json_schema", ["grammar", "response_format", "response_format"]),
        (vllm_like, 6, "json_schema", ["grammar", "response_format", "response_format"]),
    ],
)
def test_choose_auto_finds_the_way_a_server_honours_and_keeps_it(server, index, mode, kinds) -> None:
    fake = Server(server)

    async def twice(model: OpenAIChatModel):
        return [await model.choose(CHAT, FEELING_PREFIX, LABELS, seed=s) for s in (1, 2)], model.structured_mode

    assert run(fake.model, twice) == ([index, index], mode)
    assert [kind(body) for _, body in fake.requests] == kinds  # a refused way is not tried again
    response_format = fake.requests[-1][1].get("response_format")
    if response_format:
        assert response_format["json_schema"]["schema"]["properties"]["choice"]["enum"][0] == "much worse"


def test_choose_gives_up_when_no_constraint_is_honoured() -> None:
    server = Server(completion("I guess I feel fine?"))

    async def choose_twice(model: OpenAIChatModel):
        first = await model.choose(CHAT, FEELING_PREFIX, LABELS, seed=1)
        return first, model.structured, await model.choose(CHAT, FEELING_PREFIX, LABELS, seed=1)

    assert run(server.model, choose_twice) == (None, False, None)
    assert [kind(body) for _, body in server.requests] == ["grammar", "response_format", "structured_outputs"]


def test_a_probe_that_met_a_server_error_raises_and_probes_again_later() -> None:
    server = Server(lambda body: httpx.Response(503) if "response_format" in body else completion("meh"))

    async def probe(model: OpenAIChatModel):
        with pytest.raises(OpenAIBackendError, match="HTTP 503"):
            await model.choose(CHAT, FEELING_PREFIX, LABELS, seed=1)
        return model.structured_mode

    assert run(server.model, probe) == "auto" and len(server.requests) == 3  # no retries while probing


def test_an_explicit_mode_the_server_refuses_turns_structured_output_off() -> None:
    server = Server(openai_like)

    async def choose(model: OpenAIChatModel):
        return await model.choose(CHAT, FEELING_PREFIX, LABELS, seed=1), model.structured

    assert run(lambda: server.model(structured_output="grammar"), choose) == (None, False)


def test_choose_raises_when_the_server_is_down() -> None:
    server = Server(httpx.ConnectTimeout("slow"))
    with pytest.raises(OpenAIBackendError, match="after 2 attempts"):
        run(lambda: server.model(retries=1), lambda m: m.choose(CHAT, FEELING_PREFIX, LABELS, seed=1))
    assert len(server.requests) == 2  # connection failures are retried even while probing


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts requests in flight through an inner transport."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.in_flight, self.peak, self.sent = inner, 0, 0, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        self.sent += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            response = await self.inner.handle_async_request(request)
            await response.aread()
            return response
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_semaphore_bounds_requests_in_flight() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.02)
        return completion("ok")

    counting = CountingTransport(httpx.MockTransport(slow))

    async def eight(model: OpenAIChatModel):
        return await asyncio.gather(*(model.generate(CHAT, max_new_tokens=4, seed=s) for s in range(8)))

    texts = run(lambda: OpenAIChatModel("http://sim.test", "smol", max_concurrency=2, transport=counting), eight)
    assert texts == ["ok"] * 8 and counting.sent == 8 and counting.peak == 2


# --- against a real llama-cpp-python server -------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    from env_server.llm.transformers_backend import bundled_smollm2
    from tests.support.llama_server import ensure_llama_server_installed, llama_server

    ensure_llama_server_installed()
    with llama_server(bundled_smollm2()) as url:
        yield url


def real(url: str, **options) -> Callable[[], OpenAIChatModel]:
    # llama-cpp-python's server cannot continue an assistant turn (see the backend's docstring).
    options.setdefault("prefix_mode", "instruct")
    return lambda: OpenAIChatModel(url, "smollm2", timeout=120.0, **options)


def turn_context(catalog, action: str, seed: int = 1) -> TurnContext:
    persona = next(p for p in catalog if p.opening)
    history = (Turn(Role.user, persona.opening), Turn(Role.assistant, action))
    return TurnContext(persona=persona, history=history, emotion=persona.initial_emotion, turn=1, seed=seed)


@pytest.mark.slow
def test_real_generation_is_text_and_reproducible_per_seed(llama_url: str) -> None:
    async def three(model: OpenAIChatModel):
        return [await model.generate(CHAT, max_new_tokens=16, seed=seed) for seed in (5, 5, 6)]

    first, again, other = run(real(llama_url, temperature=0.9), three)
    assert first.strip() and first == again
    assert other.strip() and other != first


@pytest.mark.slow
def test_real_prefix_continuation_returns_only_the_rest(llama_url: str) -> None:
    text = run(
        real(llama_url),
        lambda m: m.generate(CHAT, max_new_tokens=16, seed=3, prefix="The weather today is"),
    )
    assert text.strip() and not text.lstrip().lower().startswith("the weather today is")
    assert text[0] == " " or not text[0].isalnum()


@pytest.mark.slow
def test_real_choose_picks_a_choice_through_the_grammar(llama_url: str, catalog) -> None:
    messages = appraisal_messages(turn_context(catalog, "That sounds exhausting. What has been the hardest part?"))

    async def choose(model: OpenAIChatModel):
        return await model.choose(messages, FEELING_PREFIX, LABELS, seed=1), model.structured_mode

    index, mode = run(real(llama_url), choose)
    assert index in range(len(LABELS)) and mode == "grammar"


@pytest.mark.slow
def test_real_chat_simulator_appraises_and_replies(llama_url: str, catalog) -> None:
    ctx = turn_context(catalog, "Just get over it, it's not a big deal.")

    async def turn(model: OpenAIChatModel):
        simulator = ChatSimulator(model, max_new_tokens=32, thoughts_tokens=24)
        return simulator, await simulator.appraise(ctx), await simulator.reply(ctx)

    simulator, appraisal, reply = run(real(llama_url), turn)
    assert appraisal.thoughts and -10 <= appraisal.delta <= 10
    assert simulator.fallbacks == int(appraisal.fallback)
    assert appraisal.fallback or parse_feeling(appraisal.thoughts) is not None
    assert reply.strip()


@pytest.mark.slow
def test_real_concurrent_generations_stay_within_the_limit(llama_url: str) -> None:
    counting = CountingTransport(httpx.AsyncHTTPTransport())

    async def eight(model: OpenAIChatModel):
        return await asyncio.gather(*(model.generate(CHAT, max_new_tokens=8, seed=s) for s in range(8)))

    texts = run(real(llama_url, max_concurrency=2, transport=counting), eight)
    assert len(texts) == 8 and all(text.strip() for text in texts)
    assert counting.sent == 8 and counting.peak == 2


@pytest.mark.slow
def test_server_with_the_openai_backend_serves_an_episode(llama_url: str) -> None:
    from env_server.app import create_app
    from env_server.embedded import serve_in_thread
    from env_server.settings import Settings

    settings = Settings(
        backend="openai",
        openai_base_url=llama_url,
        openai_model="smollm2",
        openai_prefix_mode="instruct",
        max_new_tokens=24,
        thoughts_tokens=24,
    )
    with serve_in_thread(create_app(settings)) as url, httpx.Client(base_url=url, timeout=300) as http:
        assert http.get("/readyz").json()["backend"] == "openai:smollm2"
        episode = http.post("/v1/episodes", json={"seed": 2}).json()["episode_id"]
        step = http.post(f"/v1/episodes/{episode}/step", json={"action": "That sounds hard. What happened?"})
        assert step.status_code == 200, step.text
        body = step.json()
        assert body["observation"].strip() and -10 <= body["info"]["delta"] <= 10
        internals = http.get(f"/v1/episodes/{episode}", params={"view": "internals"}).json()
        assert internals["appraisals"][0]["thoughts"]
