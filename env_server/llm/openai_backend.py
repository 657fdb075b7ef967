"""A chat model behind an OpenAI-compatible server: vLLM, SGLang, llama.cpp's server or a hosted API.

One pooled :class:`httpx.AsyncClient` sends ``POST {base_url}/v1/chat/completions``; a semaphore bounds the
requests in flight, and connection errors, timeouts, 429 and 5xx are retried with exponential backoff
(other 4xx are the caller's mistake and fail at once). What still fails raises :class:`OpenAIBackendError`,
which the service turns into a 503 with the episode unchanged.

A remote API cannot score arbitrary continuations, so :meth:`OpenAIChatModel.score` returns None and the
chat simulator parses the feeling its free-text thoughts name. Where the server constrains decoding,
:meth:`OpenAIChatModel.choose` picks one of the feeling choices outright.

How ``prefix`` (the start of the assistant's turn) reaches the server, ``prefix_mode``:

- ``"continue"``: the prefix is a trailing assistant message, with vLLM's and SGLang's
  ``continue_final_message: true, add_generation_prompt: false``; llama.cpp's C++ ``llama-server``
  continues a trailing assistant message by itself and ignores the extra fields.
- ``"instruct"``: for servers that cannot continue a turn: llama-cpp-python's server (0.3.x) drops the extra
  fields, closes the trailing assistant message and starts a new turn; hosted APIs do not continue either.
  The last user message asks the model to begin with the prefix, and an echoed prefix is cut from the answer.

Either way :meth:`~OpenAIChatModel.generate` returns only what comes after the prefix, as the local backend does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, Literal

import httpx

__all__ = ["OpenAIBackendError", "OpenAIChatModel", "PrefixMode", "StructuredMode"]

log = logging.getLogger("attune.llm")

PrefixMode = Literal["continue", "instruct"]
StructuredMode = Literal["auto", "json_schema", "grammar", "choice", "none"]

_PROBE_ORDER: tuple[StructuredMode, ...] = ("grammar", "json_schema", "choice")
"""The order ``"auto"`` tries. A GBNF ``grammar`` first: both llama.cpp servers take it, and the others refuse it
(OpenAI: 400) or ignore it (vLLM, SGLang: free text), which the probe sees. OpenAI's json_schema next (OpenAI,
vLLM, SGLang, llama-server), which llama-cpp-python's server answers with a 500 (it validates ``response_format``
and reports validation errors as 500). vLLM >= 0.10.2's choice list last."""


class OpenAIBackendError(RuntimeError):
    """A chat completion that failed for good: retries spent, a 4xx, or an unreadable answer.

    Attributes:
        status: The last HTTP status, or None when no response came (connection error, timeout).
        body: The start of the last response body, or the transport error's text.
        attempts: Requests sent.
    """

    def __init__(self, message: str, *, status: int | None = None, body: str = "", attempts: int = 1) -> None:
        super().__init__(message)
        self.status, self.body, self.attempts = status, body, attempts


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError):
        return None


def _with_instruction(messages: list[dict[str, str]], instruction: str) -> list[dict[str, str]]:
    """The chat with ``instruction`` added to its last message when that is the user's (some chat templates refuse
    two user messages in a row), else as a new user message."""
    out = [dict(message) for message in messages]
    if out and out[-1]["role"] == "user":
        out[-1]["content"] = f"{out[-1]['content']}\n\n{instruction}"
    else:
        out.append({"role": "user", "content": instruction})
    return out


def _strip_echo(text: str, prefix: str) -> str:
    """What follows ``prefix`` in an answer that was asked to begin with it: the prefix is cut when the model
    repeated it, and a space keeps the answer from running into the prefix's last word."""
    lead, body = prefix.strip(), text.lstrip().lstrip("\"'“")
    rest = body[len(lead) :] if lead and body.lower().startswith(lead.lower()) else text.lstrip()
    return " " + rest if rest[:1].isalnum() and not prefix[-1:].isspace() else rest


class OpenAIChatModel:
    """ChatModel over an OpenAI-compatible chat completions endpoint. Create once; share across episodes.

    Args:
        base_url: Server root, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted too).
        model: Model name sent with each request.
        api_key: Bearer key, when the server wants one.
        max_concurrency: Requests in flight at once; also the size of the connection pool.
        timeout: Seconds allowed to each phase of a request (connect, write, wait for the answer).
        retries: Further attempts after a retryable failure (so ``retries + 1`` requests at most).
        backoff: Seconds before the first retry; doubles after each (a 429's Retry-After wins when longer).
        temperature: Sampling temperature of :meth:`generate`; 0 is greedy.
        top_p: Nucleus sampling mass of :meth:`generate`.
        extra_body: Fields merged into every request body (server-specific sampling options).
        transport: httpx transport to send through (tests pass a mock).
        prefix_mode: How a ``prefix`` reaches the server; see the module docstring.
        structured_output: How :meth:`choose` constrains decoding: ``"json_schema"`` (OpenAI ``response_format``),
            ``"grammar"`` (llama.cpp GBNF), ``"choice"`` (vLLM ``structured_outputs``), ``"none"``, or ``"auto"``:
            try them in turn on first use (grammar, json_schema, choice) and keep the first the server honours;
            an explicit mode the server refuses (4xx) turns structured output off.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        max_concurrency: int = 16,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        temperature: float = 0.7,
        top_p: float = 0.9,
        extra_body: dict[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        prefix_mode: PrefixMode = "continue",
        structured_output: StructuredMode = "auto",
    ) -> None:
        if max_concurrency < 1 or retries < 0:
            raise ValueError("max_concurrency must be >= 1 and retries >= 0")
        root = base_url.rstrip("/")
        root = root[: -len("/v1")] if root.endswith("/v1") else root
        self.name = f"openai:{model}"
        self.model = model
        self.retries, self.backoff = retries, backoff
        self.temperature, self.top_p = temperature, top_p
        self.extra_body = dict(extra_body or {})
        self.prefix_mode: PrefixMode = prefix_mode
        self.structured_mode: StructuredMode = structured_output
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._client = httpx.AsyncClient(
            base_url=root,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
            transport=transport,
        )

    @property
    def structured(self) -> bool:
        """Whether :meth:`choose` may constrain decoding (False once ``"auto"`` found no way the server honours)."""
        return self.structured_mode != "none"

    async def _complete(self, body: dict[str, Any], *, retry_status: bool = True) -> str:
        """The first choice's message content, after retries; raises :class:`OpenAIBackendError`.

        ``retry_status=False`` retries only failures without an answer (connection errors, timeouts)."""
        url = "/v1/chat/completions"
        attempt = 0
        while True:
            attempt += 1
            async with self._semaphore:
                try:
                    response = await self._client.post(url, json=body)
                except httpx.TransportError as exc:
                    response, failure = None, f"{type(exc).__name__}: {exc}"
            if response is not None:
                if response.is_success:
                    return self._content(response, attempt)
                failure = f"HTTP {response.status_code}: {response.text[:300]}"
                if not (retry_status and _retryable(response.status_code)):
                    raise OpenAIBackendError(
                        f"POST {url} failed: {failure}",
                        status=response.status_code,
                        body=response.text[:300],
                        attempts=attempt,
                    )
            if attempt > self.retries:
                raise OpenAIBackendError(
                    f"POST {url} failed after {attempt} attempts: {failure}",
                    status=None if response is None else response.status_code,
                    body=failure if response is None else response.text[:300],
                    attempts=attempt,
                )
            delay = self.backoff * 2 ** (attempt - 1)
            hint = _retry_after(response) if response is not None else None
            delay = min(max(delay, hint or 0.0), 60.0)
            log.warning("retrying %s in %.2fs (attempt %d): %s", url, delay, attempt, failure)
            await asyncio.sleep(delay)

    @staticmethod
    def _content(response: httpx.Response, attempts: int) -> str:
        try:
            return response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise OpenAIBackendError(
                f"unreadable chat completion: {type(exc).__name__}: {exc}",
                status=response.status_code,
                body=response.text[:300],
                attempts=attempts,
            ) from exc

    def _body(self, messages: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
        return {"model": self.model, "messages": messages, "stream": False, **self.extra_body, **fields}

    async def generate(
        self,
        messages: list[dict[str, str]],
        *,
        max_new_tokens: int,
        seed: int,
        prefix: str = "",
        remember: bool = False,
    ) -> str:
        """The assistant's completion of a chat, its turn already begun with ``prefix`` (which is not returned).

        ``remember`` is ignored: a server with prefix caching (vLLM, SGLang, llama.cpp) keeps what it sees.
        """
        sampling = {"max_tokens": max_new_tokens, "seed": seed, "temperature": self.temperature, "top_p": self.top_p}
        if not prefix:
            return await self._complete(self._body(messages, **sampling))
        if self.prefix_mode == "continue":
            chat = [*messages, {"role": "assistant", "content": prefix}]
            body = self._body(chat, continue_final_message=True, add_generation_prompt=False, **sampling)
            return await self._complete(body)
        chat = _with_instruction(messages, f'Begin your answer with exactly these words: "{prefix.strip()}"')
        return _strip_echo(await self._complete(self._body(chat, **sampling)), prefix)

    async def score(
        self, messages: list[dict[str, str]], prefix: str, choices: list[str], *, remember: bool = False
    ) -> list[float] | None:
        """None: a remote API cannot score given continuations (use :meth:`choose`)."""
        return None

    async def choose(
        self, messages: list[dict[str, str]], prefix: str, choices: Sequence[str], *, seed: int
    ) -> int | None:
        """The index of the choice the model picks to finish ``prefix``, decoding constrained to the choices (greedy).

        Returns None when the server does not constrain decoding (``structured`` is then False) or answers
        with none of the choices. Choices are compared without surrounding spaces and case.
        """
        labels = [choice.strip() for choice in choices]
        instruction = (
            f'Finish the sentence "{prefix.strip()} ..." with exactly one of these: {", ".join(labels)}. '
            "Answer with that choice only."
        )
        chat = _with_instruction(messages, instruction)
        if self.structured_mode == "none":
            return None
        if self.structured_mode != "auto":
            return await self._choose(self.structured_mode, chat, labels, seed, probing=False)
        refusal: OpenAIBackendError | None = None
        for mode in _PROBE_ORDER:
            try:
                index = await self._choose(mode, chat, labels, seed, probing=True)
            except OpenAIBackendError as exc:
                if exc.status is None:
                    raise  # no answer at all: the server is down, which says nothing about the mode
                # Some servers report an unknown option as a 500, so a probe takes any error status as a refusal.
                log.info("%s: server refused %s structured output: %s", self.name, mode, exc)
                refusal = exc if _retryable(exc.status) else refusal
                continue
            if index is not None:
                log.info("%s: structured output through %s", self.name, mode)
                self.structured_mode = mode
                return index
        if refusal is not None:
            raise refusal  # perhaps a passing overload rather than a refusal: probe again next time
        log.warning("%s: no structured output honoured; appraisals will parse free text", self.name)
        self.structured_mode = "none"
        return None

    async def _choose(
        self, mode: StructuredMode, chat: list[dict[str, str]], labels: list[str], seed: int, *, probing: bool
    ) -> int | None:
        body = self._body(chat, **self._constraint(mode, labels), seed=seed)
        try:
            text = await self._complete(body, retry_status=not probing)
        except OpenAIBackendError as exc:
            if probing or exc.status is None or _retryable(exc.status):
                raise
            log.warning("%s: server refused %s structured output, now off: %s", self.name, mode, exc)
            self.structured_mode = "none"
            return None
        index = self._pick(mode, text, labels)
        if index is None:
            log.info("%s: %s structured output ignored by the server: %r", self.name, mode, text[:80])
        return index

    @staticmethod
    def _constraint(mode: StructuredMode, labels: list[str]) -> dict[str, Any]:
        fields: dict[str, Any] = {"temperature": 0.0, "max_tokens": 48}
        if mode == "grammar":
            fields["grammar"] = "root ::= " + " | ".join(json.dumps(label) for label in labels)
        elif mode == "choice":
            fields["structured_outputs"] = {"choice": labels}
        else:
            schema = {
                "type": "object",
                "properties": {"choice": {"type": "string", "enum": labels}},
                "required": ["choice"],
                "additionalProperties": False,
            }
            fields["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "choice", "strict": True, "schema": schema},
            }
        return fields

    @staticmethod
    def _pick(mode: StructuredMode, text: str, labels: list[str]) -> int | None:
        answer = text.strip()
        if mode == "json_schema":
            try:
                answer = str(json.loads(answer)["choice"]).strip()
            except (ValueError, KeyError, TypeError):
                return None
        lowered = [label.lower() for label in labels]
        return lowered.index(answer.lower()) if answer.lower() in lowered else None

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
