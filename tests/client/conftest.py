"""Client test fixtures: a fake Attune server (an ``httpx.MockTransport`` handler) and clients bound to it.

The fake emulates the wire contract only (routes, status codes, error bodies, idempotent steps, seeded
determinism, groups of ``n``, forks, the admin-only internals view), not the simulated person. Tests
queue failures with :meth:`FakeServer.fail_next`. The tests run with ``--import-mode=importlib``, so
they reach :class:`FakeServer` through fixtures.
"""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from attune_client import AsyncAttuneClient, AttuneClient

PERSONAS = [
    {
        "id": "riley-burnout",
        "name": "Riley",
        "language": "en",
        "difficulty": "normal",
        "intention_type": "vent",
        "initial_emotion": 30,
        "pack": "core",
    },
    {
        "id": "mei-family",
        "name": "Mei",
        "language": "zh",
        "difficulty": "hard",
        "intention_type": "validation",
        "initial_emotion": 25,
        "pack": "core",
    },
]
PERSONA_IDS = [p["id"] for p in PERSONAS]
HIDDEN_INTENTIONS = {p["id"]: f"{p['name']} wants to be heard before anyone offers advice." for p in PERSONAS}
MAX_GROUP = 64  # CreateEpisodeRequest.n and ForkRequest.n allow 1..64


def error(status: int, code: str, message: str) -> httpx.Response:
    """An error response as the server sends it."""
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


@dataclass
class Episode:
    episode_id: str
    persona_id: str
    seed: int
    max_turns: int
    reward_mode: str
    emotions: list[int]
    transcript: list[dict[str, Any]]
    turn: int = 0
    status: str = "active"
    termination_reason: str | None = None
    replies: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    appraisals: list[dict[str, Any]] = field(default_factory=list)

    def info(self, delta: int) -> dict[str, Any]:
        emotion = self.emotions[-1]
        band = (
            "S" if emotion >= 100 else "A" if emotion >= 70 else "B" if emotion >= 40 else "C" if emotion >= 10 else "F"
        )
        return {
            "persona_id": self.persona_id,
            "emotion": emotion,
            "delta": delta,
            "band": band,
            "turn": self.turn,
            "max_turns": self.max_turns,
            "status": self.status,
            "termination_reason": self.termination_reason,
        }


class FakeServer:
    """Callable handler for ``httpx.MockTransport``; records every request it receives."""

    def __init__(self, api_key: str | None = None, opening_suffix: str = "", admin_key: str | None = None) -> None:
        """Serve without keys (everyone is admin, as on the real server), or require ``api_key`` or ``admin_key``.

        Only ``admin_key`` (or no keys at all) may read ``?view=internals``; others get 403 forbidden.
        """
        self.api_key = api_key
        self.admin_key = admin_key
        self.opening_suffix = opening_suffix
        self.episodes: dict[str, Episode] = {}
        self.requests: list[httpx.Request] = []
        self._failures: list[Callable[[httpx.Request], httpx.Response]] = []

    def fail_next(self, *failures: int | Exception) -> None:
        """Answer the next requests with these statuses (503 -> backend_unavailable) or raise these errors."""
        for failure in failures:
            if isinstance(failure, Exception):
                self._failures.append(lambda request, exc=failure: _raise(exc, request))
            else:
                self._failures.append(lambda request, status=failure: error(status, "backend_unavailable", "busy"))

    def bodies(self, method: str | None = None, path_suffix: str = "") -> list[dict[str, Any]]:
        """JSON bodies of the recorded requests matching the method and path ending."""
        return [
            json.loads(r.content)
            for r in self.requests
            if (method is None or r.method == method) and r.url.path.endswith(path_suffix) and r.content
        ]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self._failures:
            return self._failures.pop(0)(request)
        keys = {f"Bearer {key}" for key in (self.api_key, self.admin_key) if key is not None}
        presented = request.headers.get("authorization")
        if keys and presented not in keys:
            return error(401, "unauthorized", "missing or wrong API key")
        admin = not keys or presented == f"Bearer {self.admin_key}"
        parts = [unquote(part) for part in request.url.raw_path.decode().split("?")[0].strip("/").split("/")]
        body = json.loads(request.content) if request.content else {}
        match request.method, parts:
            case "GET", ["healthz"] | ["readyz"]:
                return httpx.Response(200, json={"status": "ok"})
            case "GET", ["v1", "personas"]:
                return httpx.Response(200, json={"personas": PERSONAS})
            case "GET", ["v1", "personas", persona_id]:
                for persona in PERSONAS:
                    if persona["id"] == persona_id:
                        return httpx.Response(200, json=persona)
                return error(404, "persona_not_found", f"persona {persona_id!r} does not exist")
            case "POST", ["v1", "episodes"]:
                return self._create(body)
            case "POST", ["v1", "episodes", episode_id, "step"]:
                return self._step(episode_id, body)
            case "POST", ["v1", "episodes", episode_id, "fork"]:
                return self._fork(episode_id, body)
            case "GET", ["v1", "episodes", episode_id]:
                view = request.url.params.get("view", "public")
                if view not in ("public", "internals"):
                    return error(422, "invalid_request", f"view must be 'public' or 'internals', got {view!r}")
                if view == "internals" and not admin:  # checked before the episode, as the real server does
                    return error(403, "forbidden", "view=internals needs an admin key")
                if episode_id not in self.episodes:
                    return _not_found(episode_id)
                episode = self.episodes[episode_id]
                return httpx.Response(
                    200, json=self._internals(episode) if view == "internals" else self._view(episode)
                )
            case "DELETE", ["v1", "episodes", episode_id]:
                if self.episodes.pop(episode_id, None) is None:
                    return _not_found(episode_id)
                return httpx.Response(204)
        return error(404, "not_found", f"no route {request.method} {request.url.path}")

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        options = body.get("options", {})
        seed = body.get("seed")
        seed = seed if seed is not None else uuid.uuid4().int % 2**32
        persona_id = body.get("persona_id") or PERSONA_IDS[seed % len(PERSONA_IDS)]
        if persona_id not in PERSONA_IDS:
            return error(404, "persona_not_found", f"persona {persona_id!r} does not exist")
        max_turns = options.get("max_turns") or 5
        if not 1 <= max_turns <= 100:
            return error(422, "invalid_request", "max_turns must be between 1 and 100")
        n = body.get("n", 1)
        if not 1 <= n <= MAX_GROUP:
            return error(422, "invalid_request", f"n must be between 1 and {MAX_GROUP}")
        opening = f"[{persona_id}] I had an awful day (seed {seed}). My boss yelled at me in front of everyone."
        opening += self.opening_suffix
        initial = next(p["initial_emotion"] for p in PERSONAS if p["id"] == persona_id)
        episode = Episode(
            episode_id=uuid.uuid4().hex,
            persona_id=persona_id,
            seed=seed,
            max_turns=max_turns,
            reward_mode=options.get("reward_mode") or "terminal",
            emotions=[initial],
            transcript=[{"role": "user", "content": opening, "emotion": initial}],
        )
        self.episodes[episode.episode_id] = episode
        group = [episode, *self._copies(episode, n - 1)]
        return httpx.Response(
            201,
            json={
                "episode_id": episode.episode_id,
                "episode_ids": [member.episode_id for member in group],
                "observation": opening,
                "info": episode.info(0),
            },
        )

    def _fork(self, episode_id: str, body: dict[str, Any]) -> httpx.Response:
        episode = self.episodes.get(episode_id)
        if episode is None:
            return _not_found(episode_id)
        n = body.get("n", 1)
        if not 1 <= n <= MAX_GROUP:
            return error(422, "invalid_request", f"n must be between 1 and {MAX_GROUP}")
        return httpx.Response(201, json={"episode_ids": [c.episode_id for c in self._copies(episode, n)]})

    def _copies(self, episode: Episode, n: int) -> list[Episode]:
        # Like the real server: a deep copy of everything (seed and replayable replies too) under a new id.
        copies = [copy.deepcopy(episode) for _ in range(n)]
        for member in copies:
            member.episode_id = uuid.uuid4().hex
            self.episodes[member.episode_id] = member
        return copies

    def _step(self, episode_id: str, body: dict[str, Any]) -> httpx.Response:
        episode = self.episodes.get(episode_id)
        if episode is None:
            return _not_found(episode_id)
        action, request_id = body.get("action", ""), body.get("request_id")
        if request_id in episode.replies:
            first_action, payload = episode.replies[request_id]
            if first_action != action:
                return error(409, "request_conflict", f"request_id {request_id!r} was used with another action")
            return httpx.Response(200, json=payload)
        if episode.status != "active":
            return error(409, "episode_finished", f"episode {episode_id!r} has ended; reset to start another")
        if not action.strip():
            return error(422, "action_empty", "action is empty")
        if len(action) > 4000:
            return error(422, "action_too_long", f"action has {len(action)} characters; the limit is 4000")
        # Deterministic in (seed, turn, action), like the real server for a fixed seed.
        delta = 6 if "?" in action else (hash_text(f"{episode.seed}:{episode.turn}:{action}") % 9) - 4
        emotion = max(0, min(100, episode.emotions[-1] + delta))
        delta = emotion - episode.emotions[-1]
        episode.turn += 1
        episode.emotions.append(emotion)
        episode.appraisals.append(
            {
                "turn": episode.turn,
                "thoughts": f"They {'asked' if '?' in action else 'told'} me something.",
                "delta": delta,
                "fallback": False,
                "signals": {"question": float("?" in action)},
            }
        )
        terminated = emotion in (0, 100)
        truncated = not terminated and episode.turn >= episode.max_turns
        if terminated:
            episode.status, episode.termination_reason = "terminated", "goal_reached" if emotion else "user_left"
        elif truncated:
            episode.status, episode.termination_reason = "truncated", "max_turns"
        reply = f"Turn {episode.turn}: I hear you. I'm at {emotion} now."
        episode.transcript += [
            {"role": "assistant", "content": action, "emotion": None},
            {"role": "user", "content": reply, "emotion": emotion},
        ]
        if episode.reward_mode == "dense":
            reward = delta / 100
        else:
            reward = emotion / 100 if terminated or truncated else 0.0
        payload = {
            "observation": reply,
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "info": episode.info(delta),
        }
        if request_id is not None:
            episode.replies[request_id] = (action, payload)
        return httpx.Response(200, json=payload)

    @staticmethod
    def _view(episode: Episode) -> dict[str, Any]:
        return {
            "episode_id": episode.episode_id,
            "persona_id": episode.persona_id,
            "status": episode.status,
            "termination_reason": episode.termination_reason,
            "turn": episode.turn,
            "max_turns": episode.max_turns,
            "reward": {"mode": episode.reward_mode},
            "emotion": episode.emotions[-1],
            "emotions": episode.emotions,
            "transcript": episode.transcript,
        }

    @classmethod
    def _internals(cls, episode: Episode) -> dict[str, Any]:
        return {
            **cls._view(episode),
            "hidden_intention": HIDDEN_INTENTIONS[episode.persona_id],
            "seed": episode.seed,
            "appraisals": episode.appraisals,
        }


def hash_text(text: str) -> int:
    """A process-independent hash (``hash()`` of a str changes with PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def _not_found(episode_id: str) -> httpx.Response:
    return error(404, "episode_not_found", f"episode {episode_id!r} does not exist (unknown, deleted or expired)")


def _raise(exc: Exception, request: httpx.Request) -> httpx.Response:
    if isinstance(exc, httpx.RequestError):
        exc = type(exc)(str(exc), request=request)
    raise exc


@pytest.fixture
def server_factory() -> type[FakeServer]:
    """The fake server class, for tests that need one with options (e.g. an API key)."""
    return FakeServer


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


@pytest.fixture
def client(server: FakeServer) -> Iterator[AttuneClient]:
    """A sync client on the fake server; no backoff so retries do not sleep."""
    with AttuneClient("http://attune.test", transport=httpx.MockTransport(server), backoff=0.0) as c:
        yield c


@pytest.fixture
def async_client_factory(server: FakeServer) -> Callable[..., AsyncAttuneClient]:
    def make(**kwargs: Any) -> AsyncAttuneClient:
        kwargs.setdefault("backoff", 0.0)
        return AsyncAttuneClient("http://attune.test", transport=httpx.MockTransport(server), **kwargs)

    return make
