"""Multi-turn rollouts for RL trainers: one dialogue with a simulated person, as token ids, a mask and rewards.

This is the framework-neutral core under :mod:`attune_client.integrations` (TRL, verl, SkyRL). It needs no
torch: the policy is a callable from token ids to token ids, and the tokenizer is anything with a Hugging Face
style ``apply_chat_template`` / ``encode`` / ``decode``.

A rollout is one episode played by the policy::

    chat = ChatFormat(tokenizer)                                  # system prompt + chat template
    group = open_group(client, EpisodeSpec(seed=7), n=4)          # one create + fork(3): a GRPO group
    rollouts = run_group(client, group, generate_batch, chat)     # the four dialogues, in lockstep
    rollouts[0].completion_ids, rollouts[0].env_mask, rollouts[0].reward

**Token layout.** ``prompt_ids`` is the chat template applied to the system prompt and the person's opening
line, with the generation prompt (for ChatML: ``<|im_start|>assistant\\n``). ``completion_ids`` is every token
after it, built by concatenation, never by re-tokenizing the dialogue (so the ids are exactly those the policy
sampled)::

    reply 1 (policy) | person's reply 1 in the template | reply 2 (policy) | ... | last reply (policy)

``env_mask`` is 1 exactly on the tokens the ``generate`` callable returned: a reply's text tokens and the
end-of-turn token that stopped it (``<|im_end|>`` for ChatML), since the policy chose to stop there. Everything
else is 0: what the template puts after that end-of-turn token (ChatML's ``\\n``), the person's turn with its
wrapper (``<|im_start|>user\\n ... <|im_end|>\\n``), the next generation prompt (``<|im_start|>assistant\\n``),
and an end-of-turn token added after a reply that hit its token limit without stopping. The completion ends
with the policy's last reply; the person's answer to it is in :attr:`Rollout.messages`, not in the tokens
(nothing would be trained on it). The person's turn is templated by :meth:`ChatFormat.user_turn_ids`: the
template applied to a short dialogue with and without that turn, the shorter cut after its last end-of-turn
token, the difference kept.

**Reward.** :attr:`Rollout.reward` is the sum of the server's step rewards, so it follows the episode's reward
mode: ``terminal`` (the default, RLVER) pays final emotion / 100 on the last step and 0 before, so the sum is
final emotion / 100; ``dense`` pays delta / 100 each step, so the sum is (final - initial) / 100. The per-turn
rewards are :attr:`Rollout.rewards`; an episode ends when the person reaches emotion 100 or leaves (below 10),
or after ``max_turns`` replies.

**Groups.** :func:`open_group` creates one episode and forks it ``n - 1`` times, so every member shares the
persona, seed and opening line and differs only by what the policy says. :class:`GroupPool` and
:class:`AsyncGroupPool` hand the members out one at a time to trainers that run each rollout on its own (verl,
SkyRL); the first member to ask for a group opens it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from attune_client.http import AsyncAttuneClient, AttuneClient
from attune_client.wire import RewardMode, Role, StepInfo, StepResponse

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "EMPTY_REPLY",
    "MAX_ACTION_CHARS",
    "AsyncGenerate",
    "AsyncGroupPool",
    "BatchGenerate",
    "ChatFormat",
    "ChatTokenizer",
    "Dialogue",
    "EpisodeSpec",
    "Generate",
    "Generation",
    "GroupPool",
    "Opening",
    "Rollout",
    "aopen_group",
    "arun_dialogue",
    "open_group",
    "run_dialogue",
    "run_group",
    "stable_seed",
]

DEFAULT_SYSTEM_PROMPT = (
    "You are talking with someone who is going through something hard. Listen closely, reflect what they "
    "feel in their own words, and ask about what matters to them. Do not lecture or rush to advice. "
    "Reply in two or three sentences."
)
"""The supporter's system prompt unless one is given."""

EMPTY_REPLY = "..."
"""Sent to the server when a reply decodes to blank text (the server refuses an empty action)."""

MAX_ACTION_CHARS = 4000
"""Replies are cut to this many characters before they are sent (the server's default limit)."""

_SPEC_PREFIX = "attune:"
_SPEC_PARSERS: dict[str, Callable[[str], Any]] = {
    "persona_id": str,
    "seed": int,
    "max_turns": int,
    "reward_mode": RewardMode,
}
_MAX_SEED = 2**63 - 1


def stable_seed(*parts: object) -> int:
    """A seed the server accepts, the same in every process for the same ``parts`` (``hash()`` is not).

    Args:
        *parts: Anything with a stable ``str()``.

    Returns:
        An integer in ``[0, 2**63 - 1)``.
    """
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % _MAX_SEED


@dataclass(frozen=True)
class EpisodeSpec:
    """What episode to open: the arguments of :meth:`AttuneClient.create_episode`, all optional.

    Trainers that only pass a prompt through (TRL) carry the spec as a prompt string, ``attune:`` followed
    by comma-separated ``key=value`` pairs, e.g. ``attune:persona_id=maya-overtime,seed=7,max_turns=4``;
    see :meth:`to_prompt` and :meth:`from_prompt`.
    """

    persona_id: str | None = None
    seed: int | None = None
    max_turns: int | None = None
    reward_mode: RewardMode | str | None = None

    def to_prompt(self) -> str:
        """This spec as a prompt string (``attune:`` alone when every field is unset)."""
        pairs = [
            f"{name}={getattr(value, 'value', value)}"
            for name in _SPEC_PARSERS
            if (value := getattr(self, name)) is not None
        ]
        return _SPEC_PREFIX + ",".join(pairs)

    @classmethod
    def from_prompt(cls, prompt: str | Sequence[Mapping[str, Any]]) -> EpisodeSpec:
        """Parse a prompt made by :meth:`to_prompt`; a list of chat messages is read from its last message.

        Args:
            prompt: ``"attune:key=value,..."``, or messages whose last ``content`` is such a string.

        Returns:
            The spec.

        Raises:
            ValueError: The prompt is not in that form, or names an unknown key or a bad value.
        """
        text = (prompt if isinstance(prompt, str) else str(prompt[-1]["content"]) if prompt else "").strip()
        if not text.startswith(_SPEC_PREFIX):
            raise ValueError(f"an Attune episode prompt starts with {_SPEC_PREFIX!r} (attune:seed=7), got {text!r}")
        fields: dict[str, Any] = {}
        for pair in filter(None, (part.strip() for part in text[len(_SPEC_PREFIX) :].split(","))):
            key, sep, value = (part.strip() for part in pair.partition("="))
            if not sep or key not in _SPEC_PARSERS:
                raise ValueError(f"bad episode prompt {text!r}: {pair!r} is not one of {sorted(_SPEC_PARSERS)}=...")
            try:
                fields[key] = _SPEC_PARSERS[key](value)
            except ValueError as exc:
                raise ValueError(f"bad episode prompt {text!r}: {key}={value!r}: {exc}") from None
        return cls(**fields)

    def with_defaults(self, **defaults: Any) -> EpisodeSpec:
        """This spec with its unset fields taken from ``defaults`` (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in defaults.items() if v is not None and getattr(self, k) is None})


@dataclass(frozen=True)
class Opening:
    """One member of a group, before the policy's first reply."""

    episode_id: str
    observation: str
    info: StepInfo


def open_group(client: AttuneClient, spec: EpisodeSpec, n: int = 1) -> list[Opening]:
    """Open a GRPO group: create one episode, then fork it ``n - 1`` times (no fork when ``n`` is 1).

    Args:
        client: The server's client.
        spec: Which episode.
        n: Group size (1 to 65).

    Returns:
        ``n`` openings with the same persona, seed and opening line; the created episode first.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    created = client.create_episode(spec.persona_id, spec.seed, spec.max_turns, spec.reward_mode)
    ids = [created.episode_id, *(client.fork(created.episode_id, n - 1) if n > 1 else [])]
    return [Opening(episode_id, created.observation, created.info) for episode_id in ids]


async def aopen_group(client: AsyncAttuneClient, spec: EpisodeSpec, n: int = 1) -> list[Opening]:
    """Open a GRPO group with the async client; see :func:`open_group`.

    Args:
        client: The server's async client.
        spec: Which episode.
        n: Group size (1 to 65).

    Returns:
        ``n`` openings with the same persona, seed and opening line; the created episode first.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    created = await client.create_episode(spec.persona_id, spec.seed, spec.max_turns, spec.reward_mode)
    ids = [created.episode_id, *(await client.fork(created.episode_id, n - 1) if n > 1 else [])]
    return [Opening(episode_id, created.observation, created.info) for episode_id in ids]


class ChatTokenizer(Protocol):
    """What :class:`ChatFormat` needs of a tokenizer; a Hugging Face tokenizer has it."""

    eos_token_id: int | None

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any:
        """Render ``conversation`` (called with ``tokenize=False``; must return a string)."""
        ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]:
        """Token ids of ``text`` (called with ``add_special_tokens=False``)."""
        ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str:
        """Text of ``token_ids`` (called with ``skip_special_tokens=True``)."""
        ...


class ChatFormat:
    """How a dialogue becomes tokens under the policy's chat template. See the module docstring for the layout."""

    def __init__(
        self,
        tokenizer: ChatTokenizer,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        *,
        stop_token_ids: Sequence[int] | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        """Bind a tokenizer and a system prompt.

        Args:
            tokenizer: The policy's tokenizer.
            system_prompt: The supporter's instructions; ``None`` sends none (the template may add its own).
            stop_token_ids: Tokens that end a reply; the tokenizer's ``eos_token_id`` when ``None``. The first
                is the one added after a reply that hit its token limit.
            chat_template_kwargs: Passed to every ``apply_chat_template`` call.

        Raises:
            ValueError: No stop token is given and the tokenizer has no ``eos_token_id``.
        """
        stops = list(stop_token_ids) if stop_token_ids is not None else [tokenizer.eos_token_id]
        if not stops or any(s is None for s in stops):
            raise ValueError("the tokenizer has no eos_token_id; pass stop_token_ids")
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.stop_token_ids: tuple[int, ...] = tuple(int(s) for s in stops)
        self._template_kwargs = dict(chat_template_kwargs or {})

    def messages(self, opening: str) -> list[dict[str, str]]:
        """The prompt as chat messages: the system prompt (when set), then the person's opening line."""
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt is not None else []
        return [*system, {"role": Role.user.value, "content": opening}]

    def render(self, messages: list[dict[str, str]], *, add_generation_prompt: bool) -> list[int]:
        """Token ids of ``messages`` under the chat template."""
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **self._template_kwargs
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def prompt_ids(self, opening: str) -> list[int]:
        """The prompt: system prompt and opening line, ending with the generation prompt."""
        return self.render(self.messages(opening), add_generation_prompt=True)

    def user_turn_ids(self, text: str) -> list[int]:
        """The template tokens between a reply's end-of-turn token and the next reply: the person's turn.

        Raises:
            ValueError: The template does not render a dialogue as a prefix of its continuation.
        """
        stub = [*self.messages("Hello."), {"role": Role.assistant.value, "content": "Hi."}]
        before = self.render(stub, add_generation_prompt=False)
        after = self.render([*stub, {"role": Role.user.value, "content": text}], add_generation_prompt=True)
        stops = [i for i, token in enumerate(before) if token in self.stop_token_ids]
        if stops:  # e.g. ChatML renders "<|im_end|>\n": the "\n" belongs to the template, not the reply
            before = before[: stops[-1] + 1]
        if after[: len(before)] != before:
            raise ValueError("this chat template does not render a dialogue as a prefix of its continuation")
        return after[len(before) :]

    def reply_text(self, token_ids: Sequence[int]) -> str:
        """What a reply says, as sent to the server: decoded without special tokens, stripped."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True).strip()


@dataclass(frozen=True)
class Generation:
    """What the policy produced for one context: token ids, and their log-probabilities when known."""

    token_ids: Sequence[int]
    logprobs: Sequence[float] | None = None


Generate = Callable[[list[int]], "Generation | Sequence[int]"]
BatchGenerate = Callable[[list[list[int]]], "Sequence[Generation | Sequence[int]]"]
AsyncGenerate = Callable[[list[int]], Awaitable["Generation | Sequence[int]"]]


def _as_generation(output: Generation | Sequence[int]) -> Generation:
    return output if isinstance(output, Generation) else Generation(list(output))


@dataclass(frozen=True)
class Rollout:
    """One finished dialogue: its tokens, mask and log-probabilities, and what the server said about it."""

    episode_id: str
    persona_id: str
    prompt_ids: list[int]
    completion_ids: list[int]
    env_mask: list[int]
    logprobs: list[float] | None
    messages: list[dict[str, str]]
    initial_emotion: int
    steps: list[StepResponse] = field(repr=False)

    @property
    def rewards(self) -> list[float]:
        """The server's reward for each reply."""
        return [step.reward for step in self.steps]

    @property
    def reward(self) -> float:
        """The sum of :attr:`rewards`: final emotion / 100 in terminal mode, its change / 100 in dense mode."""
        return sum(self.rewards)

    @property
    def emotions(self) -> list[int]:
        """The emotion trajectory: the initial value, then one per reply."""
        return [self.initial_emotion, *(step.info.emotion for step in self.steps)]

    @property
    def final_emotion(self) -> int:
        """The person's emotion at the end (0..100)."""
        return self.emotions[-1]

    @property
    def num_turns(self) -> int:
        """Replies the policy made."""
        return len(self.steps)

    @property
    def finished(self) -> bool:
        """The episode ended on the server (terminated or truncated), not only stopped by a token budget."""
        return bool(self.steps) and (self.steps[-1].terminated or self.steps[-1].truncated)

    @property
    def termination_reason(self) -> str | None:
        """``goal_reached``, ``user_left`` or ``max_turns``; ``None`` when not :attr:`finished`."""
        reason = self.steps[-1].info.termination_reason if self.steps else None
        return reason.value if reason is not None else None


class Dialogue:
    """The state of one rollout while it runs; drivers alternate :meth:`add_reply` and :meth:`add_step`.

    Use it directly to drive a dialogue from a trainer's own loop (the verl adapter does); :func:`run_dialogue`,
    :func:`arun_dialogue` and :func:`run_group` drive it for you.
    """

    def __init__(self, chat: ChatFormat, opening: Opening, *, max_completion_tokens: int | None = None) -> None:
        """Start from an opening.

        Args:
            chat: The policy's chat format.
            opening: The episode and what the person said first.
            max_completion_tokens: Stop when the person's next turn would take the completion to this many
                tokens, even if the episode goes on (for trainers with a fixed response length; the reward is then
                what the server paid so far: 0 in terminal mode). The completion still ends with a reply.
        """
        self.chat = chat
        self.episode_id = opening.episode_id
        self.persona_id = opening.info.persona_id
        self.initial_emotion = opening.info.emotion
        self.max_completion_tokens = max_completion_tokens
        self.messages = chat.messages(opening.observation)
        self.prompt_ids = chat.prompt_ids(opening.observation)
        self.completion_ids: list[int] = []
        self.env_mask: list[int] = []
        self.logprobs: list[float] | None = []
        self.steps: list[StepResponse] = []
        self.done = False
        self._pending: str | None = None
        self._open_turn = False

    @property
    def context_ids(self) -> list[int]:
        """What the policy continues from: the prompt and the completion so far."""
        return self.prompt_ids + self.completion_ids

    @property
    def remaining_tokens(self) -> int | None:
        """Tokens left under ``max_completion_tokens`` (``None`` without a budget)."""
        if self.max_completion_tokens is None:
            return None
        return max(0, self.max_completion_tokens - len(self.completion_ids))

    @property
    def pending_action(self) -> str | None:
        """The reply waiting to be sent with :meth:`add_step`, if any."""
        return self._pending

    def add_reply(self, output: Generation | Sequence[int]) -> str:
        """Record the policy's reply (mask 1) and return its text, the action to send to the server.

        Tokens after the first stop token are dropped (padding from a batched generate), and tokens beyond
        ``max_completion_tokens``. A reply without a stop token is closed with one, masked 0, when the dialogue
        goes on.
        """
        if self.done or self._pending is not None:
            raise RuntimeError("add_reply() needs an active dialogue whose last reply was stepped")
        generation = _as_generation(output)
        ids = [int(t) for t in generation.token_ids]
        stop = next((i for i, t in enumerate(ids) if t in self.chat.stop_token_ids), None)
        if stop is not None:
            ids = ids[: stop + 1]
        if self.remaining_tokens is not None:
            ids = ids[: self.remaining_tokens]
        self.completion_ids += ids
        self.env_mask += [1] * len(ids)
        if self.logprobs is not None and generation.logprobs is not None:
            self.logprobs += [float(x) for x in list(generation.logprobs)[: len(ids)]]
        else:
            self.logprobs = None
        self._open_turn = not ids or ids[-1] not in self.chat.stop_token_ids
        text = self.chat.reply_text(ids)[:MAX_ACTION_CHARS].strip() or EMPTY_REPLY
        self._pending = text
        return text

    def add_step(self, step: StepResponse) -> None:
        """Record the server's answer to the pending reply; template the person's turn unless the episode ended."""
        if self._pending is None:
            raise RuntimeError("add_step() needs a reply recorded with add_reply()")
        self.steps.append(step)
        self.messages += [
            {"role": Role.assistant.value, "content": self._pending},
            {"role": Role.user.value, "content": step.observation},
        ]
        self._pending = None
        if step.terminated or step.truncated:
            self.done = True
            return
        # A reply cut by its token limit is closed here, not in add_reply: when it is the last one, the
        # completion still ends without a stop token, so trainers can tell it was truncated.
        close = self.chat.stop_token_ids[:1] if self._open_turn else ()
        turn = [*close, *self.chat.user_turn_ids(step.observation)]
        if self.remaining_tokens is not None and len(turn) >= self.remaining_tokens:
            self.done = True
            return
        self._extend_env(turn)

    def _extend_env(self, ids: Sequence[int]) -> None:
        self.completion_ids += ids
        self.env_mask += [0] * len(ids)
        if self.logprobs is not None:
            self.logprobs += [0.0] * len(ids)

    def result(self) -> Rollout:
        """The rollout so far (normally called once :attr:`done`)."""
        return Rollout(
            episode_id=self.episode_id,
            persona_id=self.persona_id,
            prompt_ids=list(self.prompt_ids),
            completion_ids=list(self.completion_ids),
            env_mask=list(self.env_mask),
            logprobs=list(self.logprobs) if self.logprobs is not None else None,
            messages=[dict(m) for m in self.messages],
            initial_emotion=self.initial_emotion,
            steps=list(self.steps),
        )


def run_dialogue(
    client: AttuneClient,
    opening: Opening,
    generate: Generate,
    chat: ChatFormat,
    *,
    max_completion_tokens: int | None = None,
) -> Rollout:
    """Play one episode to its end with the policy ``generate``.

    Args:
        client: The server's client.
        opening: The episode (e.g. one member of :func:`open_group`).
        generate: Maps the context token ids to the reply's token ids (or a :class:`Generation`).
        chat: The policy's chat format.
        max_completion_tokens: See :class:`Dialogue`.

    Returns:
        The rollout.
    """
    dialogue = Dialogue(chat, opening, max_completion_tokens=max_completion_tokens)
    while not dialogue.done:
        action = dialogue.add_reply(generate(dialogue.context_ids))
        dialogue.add_step(client.step(dialogue.episode_id, action))
    return dialogue.result()


async def arun_dialogue(
    client: AsyncAttuneClient,
    opening: Opening,
    generate: AsyncGenerate,
    chat: ChatFormat,
    *,
    max_completion_tokens: int | None = None,
) -> Rollout:
    """Play one episode to its end with an async policy; see :func:`run_dialogue`.

    Args:
        client: The server's async client.
        opening: The episode.
        generate: Awaitable map from context token ids to the reply's token ids (or a :class:`Generation`).
        chat: The policy's chat format.
        max_completion_tokens: See :class:`Dialogue`.

    Returns:
        The rollout.
    """
    dialogue = Dialogue(chat, opening, max_completion_tokens=max_completion_tokens)
    while not dialogue.done:
        action = dialogue.add_reply(await generate(dialogue.context_ids))
        dialogue.add_step(await client.step(dialogue.episode_id, action))
    return dialogue.result()


def run_group(
    client: AttuneClient,
    openings: Sequence[Opening],
    generate_batch: BatchGenerate,
    chat: ChatFormat,
    *,
    max_completion_tokens: int | None = None,
    max_workers: int = 16,
) -> list[Rollout]:
    """Play several episodes in lockstep: one batched ``generate_batch`` call per turn, steps sent concurrently.

    The openings may come from several groups (a trainer's whole batch); the rollouts keep their order.

    Args:
        client: The server's client (shared by the worker threads).
        openings: The episodes.
        generate_batch: Maps a list of contexts to one reply each, in order.
        chat: The policy's chat format.
        max_completion_tokens: See :class:`Dialogue`.
        max_workers: Most steps in flight at once (a model-backed server batches concurrent steps).

    Returns:
        One rollout per opening, in order.
    """
    dialogues = [Dialogue(chat, o, max_completion_tokens=max_completion_tokens) for o in openings]
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        while active := [d for d in dialogues if not d.done]:
            outputs = list(generate_batch([d.context_ids for d in active]))
            if len(outputs) != len(active):
                raise ValueError(f"generate_batch returned {len(outputs)} replies for {len(active)} contexts")
            actions = [d.add_reply(o) for d, o in zip(active, outputs, strict=True)]
            steps = pool.map(client.step, [d.episode_id for d in active], actions)
            for dialogue, step in zip(active, steps, strict=True):
                dialogue.add_step(step)
    return [d.result() for d in dialogues]


class _Slot:
    """One opened (or opening) group in a pool: its members, how many are handed out, when it was opened."""

    def __init__(self) -> None:
        self.opened = time.monotonic()
        self.taken = 0


class _Slots:
    """The bookkeeping shared by :class:`GroupPool` and :class:`AsyncGroupPool` (no I/O, no locking)."""

    def __init__(self, group_size: int, max_age_s: float) -> None:
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.group_size = group_size
        self.max_age_s = max_age_s
        self.slots: dict[Any, Any] = {}

    def prune(self) -> None:
        # Members nobody took (a group split across processes) are dropped; their episodes expire on the server.
        now = time.monotonic()
        for key in [k for k, s in self.slots.items() if now - s.opened > self.max_age_s]:
            del self.slots[key]

    def claim(self, key: Any, openings: list[Opening], slot: Any) -> Opening | None:
        """The next member of ``slot``'s group, or ``None`` when all are taken (the slot is then dropped)."""
        member = openings[slot.taken] if slot.taken < len(openings) else None
        slot.taken += 1
        if slot.taken >= len(openings) and self.slots.get(key) is slot:
            del self.slots[key]
        return member


class _SyncSlot(_Slot):
    def __init__(self) -> None:
        super().__init__()
        self.future: concurrent.futures.Future[list[Opening]] = concurrent.futures.Future()


class GroupPool:
    """Hands out the members of GRPO groups one at a time, for trainers that start each rollout on its own.

    The first :meth:`take` for a key opens a group of ``group_size`` (one create + fork); the next
    ``group_size - 1`` calls with that key get the other members; a call after that opens a new group. Thread-safe:
    callers with the same key wait for the one that opens it. A group whose members are not all taken within
    ``max_age_s`` is forgotten.
    """

    def __init__(self, client: AttuneClient, group_size: int, *, max_age_s: float = 600.0) -> None:
        """Bind a client and a group size.

        Args:
            client: The server's client.
            group_size: Members per group (the trainer's samples per prompt), 1 to 65.
            max_age_s: Seconds after which untaken members are forgotten.
        """
        self.client = client
        self._slots = _Slots(group_size, max_age_s)
        self._lock = threading.Lock()

    @property
    def group_size(self) -> int:
        """Members per group."""
        return self._slots.group_size

    def take(self, key: Any, spec: EpisodeSpec) -> Opening:
        """One member of the group for ``key``, opening the group with ``spec`` when needed.

        Args:
            key: Identifies the group (the same for every sample of one prompt in one step), hashable.
            spec: Which episode; used by the call that opens the group.

        Returns:
            A member nobody else got.
        """
        while True:
            with self._lock:
                self._slots.prune()
                slot = self._slots.slots.get(key)
                owner = slot is None
                if owner:
                    slot = self._slots.slots[key] = _SyncSlot()
            if owner:
                try:
                    slot.future.set_result(open_group(self.client, spec, self.group_size))
                except BaseException as exc:
                    with self._lock:
                        if self._slots.slots.get(key) is slot:
                            del self._slots.slots[key]
                    slot.future.set_exception(exc)
                    raise
            openings = slot.future.result()
            with self._lock:
                member = self._slots.claim(key, openings, slot)
            if member is not None:
                return member


class _AsyncSlot(_Slot):
    def __init__(self) -> None:
        super().__init__()
        self.future: asyncio.Future[list[Opening]] = asyncio.get_running_loop().create_future()


class AsyncGroupPool:
    """:class:`GroupPool` for one event loop, with the async client."""

    def __init__(self, client: AsyncAttuneClient, group_size: int, *, max_age_s: float = 600.0) -> None:
        """Bind an async client and a group size.

        Args:
            client: The server's async client.
            group_size: Members per group, 1 to 65.
            max_age_s: Seconds after which untaken members are forgotten.
        """
        self.client = client
        self._slots = _Slots(group_size, max_age_s)

    @property
    def group_size(self) -> int:
        """Members per group."""
        return self._slots.group_size

    async def take(self, key: Any, spec: EpisodeSpec) -> Opening:
        """One member of the group for ``key``; see :meth:`GroupPool.take`.

        Args:
            key: Identifies the group, hashable.
            spec: Which episode; used by the call that opens the group.

        Returns:
            A member nobody else got.
        """
        while True:
            self._slots.prune()
            slot = self._slots.slots.get(key)
            if slot is None:
                slot = self._slots.slots[key] = _AsyncSlot()
                try:
                    slot.future.set_result(await aopen_group(self.client, spec, self.group_size))
                except BaseException as exc:
                    if self._slots.slots.get(key) is slot:
                        del self._slots.slots[key]
                    if isinstance(exc, asyncio.CancelledError):
                        slot.future.cancel()
                    else:
                        slot.future.set_exception(exc)
                        slot.future.exception()  # retrieved: waiters may be none
                    raise
            try:
                openings = await asyncio.shield(slot.future)
            except asyncio.CancelledError:
                if slot.future.cancelled():  # the opener was cancelled, not us: open the group again
                    continue
                raise
            member = self._slots.claim(key, openings, slot)
            if member is not None:
                return member
