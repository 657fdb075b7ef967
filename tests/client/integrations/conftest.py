"""Fixtures for the trainer adapters: a ChatML tokenizer without a model, and a policy made of canned replies.

:class:`ChatMLTokenizer` splits text into words, whitespace runs and the two ChatML special tokens, so decoding
its ids gives the text back; its chat template is SmolLM2's (ChatML with a default system prompt).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from attune_client.rollout import Generation

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
_PIECES = re.compile(r"<\|im_start\|>|<\|im_end\|>|\s+|[^\s<]+|<")


class ChatMLTokenizer:
    """Word-level tokenizer with SmolLM2's chat template; ids are handed out as pieces are first seen."""

    eos_token_id = 2
    pad_token_id = 2

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {IM_START: 1, IM_END: 2}
        self.pieces: dict[int, str] = {1: IM_START, 2: IM_END}

    def apply_chat_template(
        self, conversation: list[dict[str, str]], tokenize: bool = False, add_generation_prompt: bool = False
    ) -> str:
        assert not tokenize
        text = "" if conversation[0]["role"] == "system" else f"{IM_START}system\nYou are SmolLM{IM_END}\n"
        text += "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in conversation)
        return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = []
        for piece in _PIECES.findall(text):
            if piece not in self.vocab:
                self.vocab[piece] = len(self.vocab) + 1
                self.pieces[self.vocab[piece]] = piece
            ids.append(self.vocab[piece])
        return ids

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(self.pieces[t] for t in token_ids if not (skip_special_tokens and t in (1, 2)))


@pytest.fixture
def tokenizer() -> ChatMLTokenizer:
    return ChatMLTokenizer()


class CannedPolicy:
    """Replies with the next of ``replies`` (cycling), then the end-of-turn token unless ``stop`` is False."""

    def __init__(self, tokenizer: Any, replies: Sequence[str], stop: bool = True) -> None:
        self.tokenizer, self.replies, self.stop = tokenizer, list(replies), stop
        self.calls: list[list[list[int]]] = []

    def reply(self, context: list[int], index: int) -> Generation:
        ids = self.tokenizer.encode(self.replies[index % len(self.replies)], add_special_tokens=False)
        ids += [self.tokenizer.eos_token_id] if self.stop else []
        return Generation(ids, [-0.5] * len(ids))

    def __call__(self, context: list[int]) -> Generation:
        self.calls.append([context])
        return self.reply(context, len(self.calls) - 1)

    def batch(self, contexts: list[list[int]]) -> list[Generation]:
        self.calls.append(contexts)
        return [self.reply(c, i) for i, c in enumerate(contexts)]


@pytest.fixture
def canned(tokenizer: ChatMLTokenizer) -> Callable[..., CannedPolicy]:
    def make(
        replies: Sequence[str] = ("That sounds hard. What happened?",), stop: bool = True, tokenizer: Any = tokenizer
    ) -> CannedPolicy:
        return CannedPolicy(tokenizer, replies, stop)

    return make


def runs_of(mask: list[int], value: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of ``value`` in ``mask``."""
    runs, start = [], None
    for i, m in enumerate([*mask, None]):
        if m == value and start is None:
            start = i
        elif m != value and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.fixture
def mask_runs() -> Callable[[list[int], int], list[tuple[int, int]]]:
    return runs_of
