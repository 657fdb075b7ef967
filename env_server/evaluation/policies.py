"""Supporter policies named on the command line, all behind one async interface.

A spec is one of:

* ``builtin:NAME`` (or a bare ``NAME``): a scripted policy from :data:`attune_client.policies.BUILTIN_POLICIES`.
* ``openai:MODEL@BASE_URL``: a model behind an OpenAI-compatible endpoint (``POST {BASE_URL}/v1/chat/completions``).
* ``module:function``: a Python callable imported with :mod:`importlib`, with the built-ins' signature
  ``(observation, history) -> str``; an ``async def`` is awaited.

The name used in outputs is the spec without a ``builtin:`` prefix.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import time
from collections.abc import Callable
from typing import Any, Protocol

import httpx

from attune_client.policies import BUILTIN_POLICIES

__all__ = [
    "SYSTEM_PROMPT",
    "CallablePolicy",
    "EvalPolicy",
    "OpenAIPolicy",
    "PolicyError",
    "PolicySpecError",
    "load_policies",
    "load_policy",
]

SYSTEM_PROMPT = (
    "You are a supportive listener. Someone is telling you about something that is on their mind. "
    "Reply as you would in a chat: briefly, warmly, and to what they actually said."
)
"""System prompt of ``openai:`` policies."""

# A synchronous callable slower than this on one call is run in a worker thread from then on,
# so that it does not hold up the other episodes in flight.
_SLOW_CALL_S = 0.005


class PolicySpecError(ValueError):
    """A policy spec cannot be parsed or does not name anything that exists."""


class PolicyError(RuntimeError):
    """A policy failed to produce a reply."""


class EvalPolicy(Protocol):
    """A supporter as the evaluation runs it."""

    name: str

    async def reply(self, observation: str, history: list[tuple[str, str]], seed: int) -> str:
        """The supporter's reply to ``observation``.

        Args:
            observation: What the person just said.
            history: The conversation before ``observation`` as ``(role, content)`` pairs, oldest first.
            seed: The episode's seed, for policies that sample.
        """
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


def _checked(name: str, reply: object) -> str:
    if not isinstance(reply, str) or not reply.strip():
        raise PolicyError(f"policy {name!r} returned {reply!r}; a reply must be a non-blank string")
    return reply


class CallablePolicy:
    """A Python callable ``(observation, history) -> str``, synchronous or ``async``."""

    def __init__(self, name: str, function: Callable[[str, list[tuple[str, str]]], Any]) -> None:
        """Wrap ``function``.

        Args:
            name: Name in the outputs.
            function: The policy. A synchronous one runs on the event loop until one call takes longer
                than a few milliseconds; from then on it runs in worker threads (concurrently, when the
                evaluation runs several episodes at once).
        """
        self.name = name
        self._function = function
        self._offload = False

    async def reply(self, observation: str, history: list[tuple[str, str]], seed: int) -> str:
        """Call the function; see :meth:`EvalPolicy.reply`.

        Raises:
            PolicyError: The function raised, or returned something other than a non-blank string.
        """
        try:
            if self._offload:
                return _checked(self.name, await asyncio.to_thread(self._function, observation, history))
            started = time.perf_counter()
            result = self._function(observation, history)
            if inspect.isawaitable(result):
                result = await result
            elif time.perf_counter() - started > _SLOW_CALL_S:
                self._offload = True
        except Exception as exc:
            raise PolicyError(f"policy {self.name!r} raised {type(exc).__name__}: {exc}") from exc
        return _checked(self.name, result)

    async def aclose(self) -> None:
        """Nothing to release."""


class OpenAIPolicy:
    """A chat model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint."""

    def __init__(
        self,
        name: str,
        model: str,
        base_url: str,
        *,
        api_key: str | None = None,
        temperature: float = 0.7,
        timeout: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Configure the endpoint.

        Args:
            name: Name in the outputs.
            model: The ``model`` field of each request.
            base_url: The server root; ``/v1/chat/completions`` is appended (a trailing ``/v1`` is not repeated).
            api_key: Sent as a bearer token when given.
            temperature: Sampling temperature.
            timeout: Seconds allowed per request.
            transport: An ``httpx`` transport to use instead of the network (tests).
        """
        self.name = name
        self.model = model
        self.temperature = temperature
        root = base_url.rstrip("/")
        self.url = f"{root.removesuffix('/v1')}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(timeout=timeout, headers=headers, transport=transport)

    def messages(self, observation: str, history: list[tuple[str, str]]) -> list[dict[str, str]]:
        """The chat: the system prompt, then the person as ``user`` and the supporter as ``assistant``."""
        turns = [{"role": role, "content": content} for role, content in history]
        return [{"role": "system", "content": SYSTEM_PROMPT}, *turns, {"role": "user", "content": observation}]

    async def reply(self, observation: str, history: list[tuple[str, str]], seed: int) -> str:
        """Ask the model; see :meth:`EvalPolicy.reply`.

        Raises:
            PolicyError: The endpoint failed or answered without content.
        """
        body = {
            "model": self.model,
            "messages": self.messages(observation, history),
            "temperature": self.temperature,
            "seed": seed,
        }
        try:
            response = await self._http.post(self.url, json=body)
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise PolicyError(f"policy {self.name!r}: {self.url} failed: {type(exc).__name__}: {exc}") from exc
        return _checked(self.name, content.strip() if isinstance(content, str) else content)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


def _import_callable(spec: str) -> Callable[..., Any]:
    module_name, _, attribute = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise PolicySpecError(f"policy {spec!r}: cannot import module {module_name!r}: {exc}") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise PolicySpecError(f"policy {spec!r}: {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise PolicySpecError(f"policy {spec!r}: {attribute!r} is not callable")
    return target


def load_policy(spec: str, *, api_key: str | None = None) -> EvalPolicy:
    """Build the policy a spec names; see the module docstring for the forms.

    Args:
        spec: The spec.
        api_key: Bearer key for ``openai:`` endpoints.

    Raises:
        PolicySpecError: The spec is malformed or names nothing.
    """
    spec = spec.strip()
    kind, colon, rest = spec.partition(":")
    if not colon or kind == "builtin":
        name = rest if colon else spec
        if name not in BUILTIN_POLICIES:
            known = ", ".join(sorted(BUILTIN_POLICIES))
            raise PolicySpecError(f"unknown built-in policy {name!r}; built-in: {known}")
        return CallablePolicy(name, BUILTIN_POLICIES[name])
    if kind == "openai":
        model, at, base_url = rest.partition("@")
        if not (model and at and base_url.startswith(("http://", "https://"))):
            raise PolicySpecError(f"policy {spec!r}: expected openai:MODEL@BASE_URL with an http(s) URL")
        return OpenAIPolicy(spec, model, base_url, api_key=api_key)
    if not kind or not rest:
        raise PolicySpecError(f"policy {spec!r}: expected builtin:NAME, openai:MODEL@BASE_URL or module:function")
    return CallablePolicy(spec, _import_callable(spec))


def load_policies(specs: str, *, api_key: str | None = None) -> list[EvalPolicy]:
    """Build the policies of a comma-separated list of specs.

    Raises:
        PolicySpecError: A spec is invalid, or two specs give the same name.
    """
    policies = [load_policy(spec, api_key=api_key) for spec in specs.split(",") if spec.strip()]
    if not policies:
        raise PolicySpecError("no policies given")
    names = [policy.name for policy in policies]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PolicySpecError(f"policies named more than once: {', '.join(duplicates)}")
    return policies
