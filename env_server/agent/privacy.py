"""Keeps private text out of what the policy sees.

A language model playing a persona can parrot its prompt: the hidden intention, or the inner thoughts it
just wrote. Any sentence of a simulated reply that copies a run of :data:`WINDOW` words (or, for text
without spaces such as Chinese, a run of 12 characters) from private text is dropped before the reply
leaves the server.
"""

from __future__ import annotations

import functools
import re

__all__ = ["WINDOW", "redact_private"]

WINDOW = 6
"""Consecutive shared words that count as a leak: long enough that ordinary phrases ("I don't know what
to do") don't trip it, short enough to catch copied clauses."""
_CHARS = 12

_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


# Hidden intentions are written about the persona ("she wants..."); the persona speaks as "I want...".
_PERSON = {"she": "i", "he": "i", "they": "i", "her": "my", "his": "my", "their": "my", "him": "me", "them": "me"}


def _normal(word: str) -> str:
    word = _PERSON.get(word, word)
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


@functools.lru_cache(maxsize=4096)
def _word_windows(text: str) -> frozenset[tuple[str, ...]]:
    words = [_normal(word) for word in _WORD.findall(text.lower())]
    return frozenset(tuple(words[i : i + WINDOW]) for i in range(len(words) - WINDOW + 1))


@functools.lru_cache(maxsize=4096)
def _char_chunks(text: str) -> frozenset[str]:
    # Chunks every 4 characters: any copied run of 15+ characters contains one of them whole.
    compact = re.sub(r"\s+", "", text)
    return frozenset(
        compact[i : i + _CHARS] for i in range(0, len(compact) - _CHARS + 1, 4) if not compact[i].isascii()
    )


def redact_private(reply: str, private_texts: list[str]) -> tuple[str, bool]:
    """The reply without sentences that copy private text, and whether anything was removed."""
    windows: set[tuple[str, ...]] = set()
    chunks: set[str] = set()
    for text in private_texts:
        windows |= _word_windows(text)
        chunks |= _char_chunks(text)
    kept = [
        sentence
        for sentence in _SENTENCE_END.split(reply.strip())
        if sentence
        and not (_word_windows(sentence) & windows)
        and not any(chunk in re.sub(r"\s+", "", sentence) for chunk in chunks)
    ]
    cleaned = " ".join(kept).strip()
    return cleaned, cleaned != " ".join(s for s in _SENTENCE_END.split(reply.strip()) if s).strip()
