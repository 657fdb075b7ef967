"""HTTP clients for an Attune server: :class:`AttuneClient` (sync) and :class:`AsyncAttuneClient` (async).

The two share everything but the I/O. Each API operation is described once, as a :class:`_Call`
(method, path, JSON body, how to parse the answer, what may be retried); :class:`_RetryPolicy` decides
whether to repeat it; :func:`_finish` turns the last outcome into a parsed value or a typed error from
:mod:`attune_client.errors`. The classes themselves only send, sleep and loop.

Retries cover failures that leave the server unchanged or that a repeat cannot harm: connection
errors, timeouts and 503 ``backend_unavailable``, with exponential backoff. ``step`` is safe to repeat
because it carries a ``request_id`` (generated once per call when not given) that the server uses to
replay the first result; ``create_episode`` and ``fork`` have no such key, so they are repeated only after
errors that mean the request never reached the server (or a 503, which the server answers before changing
anything).
"""

from __future__ import annotations

import asyncio
import logging
import operator
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from attune_client.errors import AttuneError, ServerError, TransportError, error_from_response
from attune_client.wire import (
    CreateEpisodeResponse,
    EpisodeInternals,
    EpisodeView,
    ForkResponse,
    PersonaList,
    PersonaPublic,
    RewardMode,
    StepResponse,
)

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["DEFAULT_BASE_URL", "AsyncAttuneClient", "AttuneClient"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
"""Where a server started with default settings listens."""

_T = TypeVar("_T")
_logger = logging.getLogger("attune_client")

# Errors after which a repeat cannot do harm when the operation is idempotent.
_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
# Errors that mean the request never reached the server, so even a non-idempotent one may be repeated.
_UNSENT_ERRORS: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# A server's Retry-After is honoured up to this many seconds.
_MAX_RETRY_AFTER = 60.0


def _user_agent() -> str:
    try:
        return f"attune-client/{version('attune-client')}"
    except PackageNotFoundError:
        return "attune-client"


@dataclass(frozen=True)
class _Call(Generic[_T]):
    """One API operation, described without doing any I/O."""

    method: str
    path: str
    parse: Callable[[httpx.Response], _T]
    json: dict[str, Any] | None = None
    retry_errors: tuple[type[Exception], ...] = _TRANSIENT_ERRORS
    retry_unavailable: bool = True
    wait_while_busy: bool = False
    """A step retried after a lost reply may find its own first attempt still running (409 episode_busy):
    wait for it, since the retry then replays that attempt's result (same request id)."""


def _episode_path(episode_id: str) -> str:
    if not isinstance(episode_id, str) or not episode_id:
        raise ValueError(f"episode_id must be a non-empty string, got {episode_id!r}")
    return f"/v1/episodes/{quote(episode_id, safe='')}"


def _create_episode_call(
    persona_id: str | None,
    seed: int | None,
    max_turns: int | None,
    reward_mode: RewardMode | str | None,
    n: int,
) -> _Call[CreateEpisodeResponse]:
    body: dict[str, Any] = {}
    if persona_id is not None:
        body["persona_id"] = persona_id
    if seed is not None:
        body["seed"] = operator.index(seed)  # numpy integers are not JSON-serialisable
    options: dict[str, Any] = {}
    if max_turns is not None:
        options["max_turns"] = operator.index(max_turns)
    if reward_mode is not None:
        options["reward_mode"] = getattr(reward_mode, "value", reward_mode)
    if options:
        body["options"] = options
    if n != 1:
        body["n"] = operator.index(n)
    return _Call(
        "POST",
        "/v1/episodes",
        lambda r: CreateEpisodeResponse.model_validate_json(r.content),
        json=body,
        retry_errors=_UNSENT_ERRORS,
    )


def _step_call(episode_id: str, action: str, request_id: str | None) -> _Call[StepResponse]:
    if not isinstance(action, str):
        raise TypeError(f"action must be a str, got {type(action).__name__}")
    body = {"action": action, "request_id": request_id if request_id is not None else uuid.uuid4().hex}
    return _Call(
        "POST",
        f"{_episode_path(episode_id)}/step",
        lambda r: StepResponse.model_validate_json(r.content),
        json=body,
        wait_while_busy=True,
    )


def _fork_call(episode_id: str, n: int) -> _Call[list[str]]:
    return _Call(
        "POST",
        f"{_episode_path(episode_id)}/fork",
        lambda r: ForkResponse.model_validate_json(r.content).episode_ids,
        json={"n": operator.index(n)},
        retry_errors=_UNSENT_ERRORS,
    )


def _get_episode_call(episode_id: str) -> _Call[EpisodeView]:
    return _Call("GET", _episode_path(episode_id), lambda r: EpisodeView.model_validate_json(r.content))


def _get_internals_call(episode_id: str) -> _Call[EpisodeInternals]:
    path = f"{_episode_path(episode_id)}?view=internals"
    return _Call("GET", path, lambda r: EpisodeInternals.model_validate_json(r.content))


def _delete_episode_call(episode_id: str) -> _Call[None]:
    return _Call("DELETE", _episode_path(episode_id), lambda r: None)


def _list_personas_call() -> _Call[list[PersonaPublic]]:
    return _Call("GET", "/v1/personas", lambda r: PersonaList.model_validate_json(r.content).personas)


def _get_persona_call(persona_id: str) -> _Call[PersonaPublic]:
    if not isinstance(persona_id, str) or not persona_id:
        raise ValueError(f"persona_id must be a non-empty string, got {persona_id!r}")
    path = f"/v1/personas/{quote(persona_id, safe='')}"
    return _Call("GET", path, lambda r: PersonaPublic.model_validate_json(r.content))


def _probe_call(path: str) -> _Call[bool]:
    # A probe asks "is it up now?": one attempt, no retries.
    return _Call("GET", path, lambda r: True, retry_errors=(), retry_unavailable=False)


_BUSY_WAITS, _BUSY_WAIT_S = 300, 2.0
"""How long a retried step waits for its own first attempt to finish on the server: up to 10 minutes."""


def _own_attempt_running(call: _Call[Any], attempt: int, outcome: httpx.Response | Exception) -> bool:
    if not (call.wait_while_busy and attempt >= 1 and isinstance(outcome, httpx.Response)):
        return False
    if outcome.status_code != 409:
        return False
    try:
        return outcome.json()["error"]["code"] == "episode_busy"
    except (ValueError, KeyError, TypeError):
        return False


@dataclass(frozen=True)
class _RetryPolicy:
    retries: int
    backoff: float

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff < 0:
            raise ValueError(f"backoff must be >= 0, got {self.backoff}")

    def delay(self, call: _Call[Any], attempt: int, outcome: httpx.Response | Exception) -> float | None:
        """Seconds to wait before repeating ``call``, or ``None`` to stop with this outcome.

        Args:
            call: The operation.
            attempt: How many attempts failed before this one (0 for the first).
            outcome: The response or the ``httpx`` exception of this attempt.
        """
        if _own_attempt_running(call, attempt, outcome):
            if attempt >= self.retries + _BUSY_WAITS:
                return None
            _logger.info("%s %s: the first attempt is still running; waiting for it", call.method, call.path)
            return _BUSY_WAIT_S
        if attempt >= self.retries:
            return None
        wait = self.backoff * 2**attempt
        if isinstance(outcome, httpx.Response):
            if outcome.status_code != 503 or not call.retry_unavailable:
                return None
            wait = max(wait, _retry_after(outcome))
            reason = "HTTP 503"
        elif isinstance(outcome, call.retry_errors):
            reason = type(outcome).__name__
        else:
            return None
        retry = attempt + 1
        _logger.warning(
            "%s %s failed (%s); retry %d of %d in %.2fs", call.method, call.path, reason, retry, self.retries, wait
        )
        return wait


def _retry_after(response: httpx.Response) -> float:
    try:
        seconds = float(response.headers.get("retry-after", "0"))
    except ValueError:  # the HTTP-date form is not worth supporting here
        return 0.0
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _finish(call: _Call[_T], outcome: httpx.Response | Exception, attempts: int) -> _T:
    """Turn the last outcome of ``call`` into its parsed value, or raise the matching typed error."""
    if isinstance(outcome, Exception):
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        message = f"{call.method} {call.path} failed{tries}: {type(outcome).__name__}: {outcome}"
        raise TransportError(message) from outcome
    if not outcome.is_success:
        raise error_from_response(outcome.status_code, outcome.content)
    try:
        return call.parse(outcome)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        message = f"{call.method} {call.path} returned a body this client cannot read: {exc}"
        raise ServerError(message, status_code=outcome.status_code) from exc


class _ClientBase:
    """Construction shared by the sync and async clients."""

    def __init__(self, base_url: str, api_key: str | None, timeout: float, retries: int, backoff: float) -> None:
        self._policy = _RetryPolicy(retries, backoff)
        self._base_url = base_url
        headers = {"User-Agent": _user_agent(), "Accept": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client_options: dict[str, Any] = {
            "base_url": base_url,
            "headers": headers,
            "timeout": httpx.Timeout(timeout),
        }

    @property
    def base_url(self) -> str:
        """The server's base URL, as given."""
        return self._base_url

    def __repr__(self) -> str:
        """Show the class and base URL (never the API key)."""
        return f"{type(self).__name__}({self._base_url!r})"

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        """Return the client itself: it is a handle to a connection pool, which copies share.

        Gymnasium deep-copies an env spec's kwargs when it re-creates an env (``env.spec.make()``,
        ``check_env``), so an env made with ``client=...`` needs this.
        """
        return self


class AttuneClient(_ClientBase):
    """Synchronous client for an Attune server.

    Every method raises an :class:`~attune_client.errors.AttuneError` subclass on failure: the one
    named by the server's error code, or :class:`~attune_client.errors.TransportError` when no
    response arrived after the retries.

    Example:
        >>> with AttuneClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
        ...     episode = client.create_episode(seed=7)
        ...     result = client.step(episode.episode_id, "That sounds exhausting. What happened?")
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Create a client; it opens connections lazily.

        Args:
            base_url: The server's base URL, e.g. ``http://127.0.0.1:8000``.
            api_key: Sent as ``Authorization: Bearer <api_key>`` when given.
            timeout: Seconds allowed for connecting, and for each read and write.
            retries: How many times to repeat a request after a retryable failure (0 disables).
            backoff: Seconds before the first retry; each further retry waits twice as long.
            transport: An ``httpx`` transport to use instead of the network (e.g. ``httpx.MockTransport``).
        """
        super().__init__(base_url, api_key, timeout, retries, backoff)
        self._http = httpx.Client(**self._client_options, transport=transport)

    def _send(self, call: _Call[_T]) -> _T:
        attempt = 0
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = self._http.request(call.method, call.path, json=call.json)
            except httpx.RequestError as exc:
                outcome = exc
            delay = self._policy.delay(call, attempt, outcome)
            if delay is None:
                return _finish(call, outcome, attempt + 1)
            time.sleep(delay)
            attempt += 1

    def create_episode(
        self,
        persona_id: str | None = None,
        seed: int | None = None,
        max_turns: int | None = None,
        reward_mode: RewardMode | str | None = None,
        n: int = 1,
    ) -> CreateEpisodeResponse:
        """Start an episode, or a group of identical ones: the simulated person's opening message and state.

        Args:
            persona_id: Persona to play; the server chooses one from ``seed`` when ``None``.
            seed: Seeds the persona choice and the simulator's sampling; equal seeds give equal episodes.
            max_turns: Supporter turns before truncation; the server default when ``None``.
            reward_mode: ``"terminal"`` or ``"dense"``; the server default when ``None``.
            n: How many identical episodes to create (a GRPO group, 1 to 64): same persona, seed and
                opening, each stepped independently. Sent only when not 1.

        Returns:
            The new episodes' ids (``episode_ids``, all ``n``; ``episode_id`` is the first), the opening
            observation and info they share.
        """
        return self._send(_create_episode_call(persona_id, seed, max_turns, reward_mode, n))

    def step(self, episode_id: str, action: str, request_id: str | None = None) -> StepResponse:
        """Send the supporter's reply and get what the simulated person says next.

        Args:
            episode_id: The episode.
            action: The supporter's reply.
            request_id: Idempotency key; a fresh one is generated when ``None`` and reused by every retry.

        Returns:
            Observation, reward, ``terminated``, ``truncated`` and info.
        """
        return self._send(_step_call(episode_id, action, request_id))

    def fork(self, episode_id: str, n: int = 1) -> list[str]:
        """Copy an episode's current state into ``n`` new episodes, e.g. to branch a GRPO group mid-dialogue.

        The copies share the persona, transcript, emotion and seed, and are independent from then on.
        The server makes no model call. Like :meth:`create_episode`, a fork is not idempotent, so it is
        repeated only after errors that mean the request never reached the server.

        Args:
            episode_id: The episode to copy; it is left unchanged.
            n: How many copies to make (1 to 64).

        Returns:
            The new episodes' ids.
        """
        return self._send(_fork_call(episode_id, n))

    def get_episode(self, episode_id: str) -> EpisodeView:
        """Fetch an episode's state and public transcript.

        Args:
            episode_id: The episode.

        Returns:
            The episode's current view.
        """
        return self._send(_get_episode_call(episode_id))

    def get_internals(self, episode_id: str) -> EpisodeInternals:
        """Fetch an episode with its hidden state: the hidden intention, seed and every appraisal.

        Needs an admin key when the server has keys configured (a server without keys serves it to all).
        Meant for inspection and evaluation, never for the policy: it reveals what the person hides.

        Args:
            episode_id: The episode.

        Returns:
            The episode's view plus ``hidden_intention``, ``seed`` and ``appraisals``.

        Raises:
            PermissionDeniedError: The API key is not an admin key.
        """
        return self._send(_get_internals_call(episode_id))

    def delete_episode(self, episode_id: str) -> None:
        """Delete an episode, freeing it on the server.

        Args:
            episode_id: The episode.
        """
        self._send(_delete_episode_call(episode_id))

    def list_personas(self) -> list[PersonaPublic]:
        """List every persona the server serves.

        Returns:
            The personas' public descriptions.
        """
        return self._send(_list_personas_call())

    def get_persona(self, persona_id: str) -> PersonaPublic:
        """Fetch one persona's public description.

        Args:
            persona_id: The persona.

        Returns:
            The persona's public description.
        """
        return self._send(_get_persona_call(persona_id))

    def healthz(self) -> bool:
        """Whether the server process answers (one attempt, no retries; never raises for server failure).

        Returns:
            ``True`` when ``GET /healthz`` answers 2xx.
        """
        try:
            return self._send(_probe_call("/healthz"))
        except AttuneError:
            return False

    def readyz(self) -> bool:
        """Whether the server is ready to serve episodes (its backend loaded); one attempt, never raises.

        Returns:
            ``True`` when ``GET /readyz`` answers 2xx.
        """
        try:
            return self._send(_probe_call("/readyz"))
        except AttuneError:
            return False

    def close(self) -> None:
        """Close the connection pool. Closing twice is harmless."""
        self._http.close()

    def __enter__(self) -> AttuneClient:
        """Return the client itself."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the client."""
        self.close()


class AsyncAttuneClient(_ClientBase):
    """Asynchronous client for an Attune server; the same methods as :class:`AttuneClient`, awaited.

    Example:
        >>> async with AsyncAttuneClient("http://127.0.0.1:8000") as client:  # doctest: +SKIP
        ...     episode = await client.create_episode(seed=7)
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """Create a client; see :class:`AttuneClient` for the arguments.

        Args:
            base_url: The server's base URL.
            api_key: Sent as ``Authorization: Bearer <api_key>`` when given.
            timeout: Seconds allowed for connecting, and for each read and write.
            retries: How many times to repeat a request after a retryable failure (0 disables).
            backoff: Seconds before the first retry; each further retry waits twice as long.
            transport: An async ``httpx`` transport to use instead of the network.
        """
        super().__init__(base_url, api_key, timeout, retries, backoff)
        self._http = httpx.AsyncClient(**self._client_options, transport=transport)

    async def _send(self, call: _Call[_T]) -> _T:
        attempt = 0
        while True:
            outcome: httpx.Response | Exception
            try:
                outcome = await self._http.request(call.method, call.path, json=call.json)
            except httpx.RequestError as exc:
                outcome = exc
            delay = self._policy.delay(call, attempt, outcome)
            if delay is None:
                return _finish(call, outcome, attempt + 1)
            await asyncio.sleep(delay)
            attempt += 1

    async def create_episode(
        self,
        persona_id: str | None = None,
        seed: int | None = None,
        max_turns: int | None = None,
        reward_mode: RewardMode | str | None = None,
        n: int = 1,
    ) -> CreateEpisodeResponse:
        """Start an episode; see :meth:`AttuneClient.create_episode`.

        Args:
            persona_id: Persona to play; chosen from ``seed`` when ``None``.
            seed: Seeds the persona choice and the simulator's sampling.
            max_turns: Supporter turns before truncation; the server default when ``None``.
            reward_mode: ``"terminal"`` or ``"dense"``; the server default when ``None``.
            n: How many identical episodes to create (a GRPO group); sent only when not 1.

        Returns:
            The new episodes' ids (``episode_ids``; ``episode_id`` is the first), opening observation and info.
        """
        return await self._send(_create_episode_call(persona_id, seed, max_turns, reward_mode, n))

    async def step(self, episode_id: str, action: str, request_id: str | None = None) -> StepResponse:
        """Send the supporter's reply; see :meth:`AttuneClient.step`.

        Args:
            episode_id: The episode.
            action: The supporter's reply.
            request_id: Idempotency key; a fresh one is generated when ``None`` and reused by every retry.

        Returns:
            Observation, reward, ``terminated``, ``truncated`` and info.
        """
        return await self._send(_step_call(episode_id, action, request_id))

    async def fork(self, episode_id: str, n: int = 1) -> list[str]:
        """Copy an episode's current state into ``n`` new episodes; see :meth:`AttuneClient.fork`.

        Args:
            episode_id: The episode to copy; it is left unchanged.
            n: How many copies to make (1 to 64).

        Returns:
            The new episodes' ids.
        """
        return await self._send(_fork_call(episode_id, n))

    async def get_episode(self, episode_id: str) -> EpisodeView:
        """Fetch an episode's state and public transcript.

        Args:
            episode_id: The episode.

        Returns:
            The episode's current view.
        """
        return await self._send(_get_episode_call(episode_id))

    async def get_internals(self, episode_id: str) -> EpisodeInternals:
        """Fetch an episode with its hidden state; see :meth:`AttuneClient.get_internals`.

        Args:
            episode_id: The episode.

        Returns:
            The episode's view plus ``hidden_intention``, ``seed`` and ``appraisals``.

        Raises:
            PermissionDeniedError: The API key is not an admin key.
        """
        return await self._send(_get_internals_call(episode_id))

    async def delete_episode(self, episode_id: str) -> None:
        """Delete an episode, freeing it on the server.

        Args:
            episode_id: The episode.
        """
        await self._send(_delete_episode_call(episode_id))

    async def list_personas(self) -> list[PersonaPublic]:
        """List every persona the server serves.

        Returns:
            The personas' public descriptions.
        """
        return await self._send(_list_personas_call())

    async def get_persona(self, persona_id: str) -> PersonaPublic:
        """Fetch one persona's public description.

        Args:
            persona_id: The persona.

        Returns:
            The persona's public description.
        """
        return await self._send(_get_persona_call(persona_id))

    async def healthz(self) -> bool:
        """Whether the server process answers (one attempt; never raises for server failure).

        Returns:
            ``True`` when ``GET /healthz`` answers 2xx.
        """
        try:
            return await self._send(_probe_call("/healthz"))
        except AttuneError:
            return False

    async def readyz(self) -> bool:
        """Whether the server is ready to serve episodes; one attempt, never raises for server failure.

        Returns:
            ``True`` when ``GET /readyz`` answers 2xx.
        """
        try:
            return await self._send(_probe_call("/readyz"))
        except AttuneError:
            return False

    async def aclose(self) -> None:
        """Close the connection pool. Closing twice is harmless."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAttuneClient:
        """Return the client itself."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the client."""
        await self.aclose()
