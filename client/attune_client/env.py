"""The Gymnasium environment: :class:`AttuneEnv`, one conversation with a simulated person per episode."""

from __future__ import annotations

import contextlib
from typing import Any, SupportsFloat

import gymnasium
from gymnasium import logger
from gymnasium.utils import seeding

from attune_client.errors import AttuneError, EpisodeNotFoundError, ResetNeeded
from attune_client.http import DEFAULT_BASE_URL, AttuneClient
from attune_client.spaces import Utterance
from attune_client.wire import RewardMode, Role

__all__ = ["RESET_OPTIONS", "AttuneEnv"]

RESET_OPTIONS = frozenset({"persona_id", "max_turns", "reward_mode"})
"""The keys :meth:`AttuneEnv.reset` accepts in ``options``."""

# Largest seed the server accepts (CreateEpisodeRequest.seed); unseeded resets draw below it.
_MAX_SEED = 2**63 - 1


class AttuneEnv(gymnasium.Env[str, str]):
    """A conversation with a simulated person ("sentient agent") served by an Attune server.

    The observation is what the person says; the action is the supporter's reply; the reward
    follows the person's emotion under the episode's reward mode. Episodes end with ``terminated``
    when the person's goal is reached or they leave, and with ``truncated`` after ``max_turns``.

    Seeding follows Gymnasium: ``reset(seed=s)`` sends ``s`` to the server, which uses it to choose
    the persona and seed its sampling, so equal seeds give equal episodes; ``reset()`` without a seed
    sends a seed drawn from :attr:`np_random`, so a seeded reset makes the resets after it
    reproducible too, and an env never seeded starts from OS entropy.

    ``info`` holds :class:`~attune_client.wire.StepInfo` as JSON (``persona_id``, ``emotion``,
    ``delta``, ``band``, ``turn``, ``max_turns``, ``status``, ``termination_reason``). The reset info
    also holds ``episode_id``; step infos do not, so that two runs with the same seed and actions
    return equal infos (Gymnasium's determinism check compares them). Use :attr:`episode_id`.

    GRPO groups: :meth:`fork` branches the current episode into new envs that share its state, so a
    group of ``n`` rollouts from one opening is ``env.reset(seed=s); members = [env, *env.fork(n - 1)]``;
    forking later branches mid-dialogue. Without envs, ``client.create_episode(seed=s, n=n)`` creates
    the ``n`` episodes at once (their ids are in ``episode_ids``).

    Example:
        >>> env = gymnasium.make("Attune-v0", base_url="http://127.0.0.1:8000")  # doctest: +SKIP
        >>> observation, info = env.reset(seed=7)  # doctest: +SKIP
        >>> reply = "That sounds hard. What happened?"
        >>> observation, reward, terminated, truncated, info = env.step(reply)  # doctest: +SKIP
    """

    metadata: dict[str, Any] = {"render_modes": ["ansi", "human"], "render_fps": 4}  # noqa: RUF012
    """``ansi``: :meth:`render` returns the transcript. ``human``: each message is printed as it arrives.
    ``render_fps`` only matters to video recorders; Gymnasium's checker asks for one."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        persona_id: str | None = None,
        max_turns: int | None = None,
        reward_mode: RewardMode | str | None = None,
        max_observation_chars: int = 8192,
        max_action_chars: int = 4000,
        client: AttuneClient | None = None,
        timeout: float = 60.0,
        render_mode: str | None = None,
    ) -> None:
        """Create the env; it contacts the server only on :meth:`reset`.

        Args:
            base_url: The server's base URL.
            api_key: Sent as a bearer token when given.
            persona_id: Persona for every episode; ``None`` lets each reset's seed choose. A reset's
                ``options`` override this, and ``max_turns`` and ``reward_mode``, for one episode.
            max_turns: Supporter turns before truncation; the server default when ``None``.
            reward_mode: ``"terminal"`` or ``"dense"``; the server default when ``None``.
            max_observation_chars: Bound of the observation space; longer messages are cut to it.
            max_action_chars: Bound of the action space (the server enforces its own limit).
            client: A client to use instead of creating one; then ``base_url``, ``api_key`` and
                ``timeout`` are ignored, and :meth:`close` leaves the client open.
            timeout: Seconds allowed per request phase (connect, read, write).
            render_mode: ``None``, ``"ansi"`` or ``"human"``.

        Raises:
            ValueError: ``render_mode`` is not one of :attr:`metadata`'s ``render_modes``.
        """
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.observation_space = Utterance(max_observation_chars, min_length=0)
        self.action_space = Utterance(max_action_chars, min_length=1)
        self._owns_client = client is None
        self._client = client if client is not None else AttuneClient(base_url, api_key=api_key, timeout=timeout)
        self._defaults: dict[str, Any] = {"persona_id": persona_id, "max_turns": max_turns, "reward_mode": reward_mode}
        self._episode_id: str | None = None
        self._transcript: list[tuple[str, str]] = []

    @property
    def client(self) -> AttuneClient:
        """The HTTP client the env talks through."""
        return self._client

    @property
    def episode_id(self) -> str | None:
        """The current episode's id, or ``None`` before the first :meth:`reset` and after :meth:`close`."""
        return self._episode_id

    @property
    def transcript(self) -> list[tuple[str, str]]:
        """The current episode as ``(role, content)`` pairs, oldest first (a copy).

        Roles are ``"user"`` (the simulated person) and ``"assistant"`` (the supporter); the last
        entry is the latest observation, uncut.
        """
        return list(self._transcript)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
        """Delete the current episode, if any, and start a new one.

        Args:
            seed: Chooses the persona and seeds the server's sampling; see the class docstring.
            options: Overrides of ``persona_id``, ``max_turns`` and ``reward_mode`` for this episode.

        Returns:
            The person's opening message, and info (with ``episode_id``).

        Raises:
            ValueError: ``options`` has keys other than those in :data:`RESET_OPTIONS`.
            AttuneError: The server refused (e.g. ``PersonaNotFoundError``) or could not be reached.
        """
        settings = self._episode_settings(options)
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, _MAX_SEED))
        self._discard_episode()
        response = self._client.create_episode(seed=seed, **settings)
        self._episode_id = response.episode_id
        self._add_message(Role.user, response.observation)
        info = response.info.model_dump(mode="json")
        info["episode_id"] = response.episode_id
        return self._clip(response.observation), info

    def step(self, action: str) -> tuple[str, SupportsFloat, bool, bool, dict[str, Any]]:
        """Send the supporter's reply and receive the person's answer.

        Args:
            action: The reply.

        Returns:
            Observation, reward, terminated, truncated and info.

        Raises:
            ResetNeeded: There is no current episode.
            AttuneError: The server refused (e.g. ``EpisodeFinishedError`` after the episode ended,
                ``ActionEmptyError``) or could not be reached.
        """
        if self._episode_id is None:
            raise ResetNeeded("AttuneEnv.step() called with no current episode; call reset() first")
        response = self._client.step(self._episode_id, action)
        self._add_message(Role.assistant, action)
        self._add_message(Role.user, response.observation)
        info = response.info.model_dump(mode="json")
        return self._clip(response.observation), float(response.reward), response.terminated, response.truncated, info

    def fork(self, n: int = 1) -> list[AttuneEnv]:
        """Branch the current episode into ``n`` new envs, each on its own server-side copy of it.

        The server copies the episode as it stands (persona, transcript, emotion, seed; no model call).
        Each returned env is positioned on one copy, with its :attr:`episode_id` and a copy of this env's
        :attr:`transcript` (the latest observation included), so :meth:`step` works on it at once,
        without a reset. Steps on one env leave this env and the other copies unchanged. A fork's
        :meth:`reset` starts a fresh episode as usual, and its :meth:`close` deletes only its own episode.

        The forks share this env's client and never close it, so close them before closing an env that
        created its client. They are bare :class:`AttuneEnv` objects (no wrappers, even when this env
        came from ``gymnasium.make``: call ``env.unwrapped.fork()``), with this env's constructor settings
        and render mode; each gets its own random generator, drawn from this env's, so the unseeded
        resets of a seeded env's forks are reproducible and differ between forks.

        Args:
            n: How many forks to make (1 to 64); 0 makes none without contacting the server.

        Returns:
            The new envs, in the order of the server's ``episode_ids``.

        Raises:
            ResetNeeded: There is no current episode.
            ValueError: ``n`` is negative.
            AttuneError: The server refused (e.g. ``EpisodeNotFoundError`` if the episode expired) or
                could not be reached.
        """
        if self._episode_id is None:
            raise ResetNeeded("AttuneEnv.fork() called with no current episode; call reset() first")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:  # keeps [env, *env.fork(size - 1)] valid for a group of one
            return []
        return [self._branch(episode_id) for episode_id in self._client.fork(self._episode_id, n)]

    def render(self) -> str | None:
        """Return the transcript as text in ``ansi`` mode; ``None`` otherwise (``human`` prints as it goes)."""
        if self.render_mode != "ansi":
            return None
        return "".join(_format_message(role, content) for role, content in self._transcript)

    def close(self) -> None:
        """Delete the current episode and close the client if the env created it. Safe to call twice.

        Failures to delete are logged as warnings, not raised: the server expires abandoned episodes.
        """
        try:
            self._discard_episode()
        except AttuneError as exc:
            logger.warn(f"AttuneEnv.close() could not delete its episode: {exc!r}")
        finally:
            if self._owns_client:
                self._client.close()
        super().close()

    def _episode_settings(self, options: dict[str, Any] | None) -> dict[str, Any]:
        options = options or {}
        unknown = sorted(set(options) - RESET_OPTIONS)
        if unknown:
            raise ValueError(f"unknown reset option(s) {unknown}; allowed options are {sorted(RESET_OPTIONS)}")
        return {**self._defaults, **options}

    def _discard_episode(self) -> None:
        episode_id, self._episode_id = self._episode_id, None
        self._transcript = []
        if episode_id is None:
            return
        with contextlib.suppress(EpisodeNotFoundError):  # already expired or deleted: nothing left to free
            self._client.delete_episode(episode_id)

    def _branch(self, episode_id: str) -> AttuneEnv:
        branch = AttuneEnv(
            client=self._client,  # passed in, so the branch does not own it and its close() leaves it open
            max_observation_chars=self.observation_space.max_length,
            max_action_chars=self.action_space.max_length,
            render_mode=self.render_mode,
            **self._defaults,
        )
        branch._episode_id = episode_id
        branch._transcript = list(self._transcript)
        branch.np_random, _ = seeding.np_random(int(self.np_random.integers(0, _MAX_SEED)))
        return branch

    def _add_message(self, role: Role, content: str) -> None:
        self._transcript.append((role.value, content))
        if self.render_mode == "human":
            print(_format_message(role.value, content), end="", flush=True)

    def _clip(self, observation: str) -> str:
        return observation[: self.observation_space.max_length]


def _format_message(role: str, content: str) -> str:
    return f"[{role}] {content}\n"
