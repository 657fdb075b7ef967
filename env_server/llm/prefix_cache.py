"""Reuse of attention key/value states between prompts that begin with the same tokens.

An env step asks the model about one dialogue several times (score the feelings, the blank-reply baseline,
write the thoughts, write the reply), and the next step asks again about the same dialogue one turn longer.
The prompts are built so that each one extends an earlier one (see :mod:`env_server.llm.prompts`), so most of a
prompt's tokens were already run through the model. :class:`PrefixCache` keeps the key/value states of recent
token sequences, and for a new prompt hands back the states of its longest cached prefix: only the remaining
tokens are computed. Like vLLM's automatic prefix caching, it is an optimisation only: a prompt that finds
nothing (another server ran the episode's last step, the entry was evicted) is computed in full, with the same
result up to float rounding.

Entries are whole sequences, each one row of per-layer ``(keys, values)`` tensors shaped
``[heads, tokens, head_dim]``. A new entry replaces any entry that is a prefix of it (the longer one serves
every prompt the shorter one did), and a sequence that starts a held entry is not stored again. The least
recently used entries are dropped once the entries hold more than ``max_tokens`` tokens in all.

*Pinned* entries (:meth:`PrefixCache.pin`) sit outside that order: the prompts every episode of a persona begins
with, computed once when the server starts. They are never evicted nor replaced by a longer entry, so a persona's
first turn finds them however many other dialogues ran since; they have their own budget, ``max_pinned_tokens``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch

__all__ = ["CachedPrefix", "PrefixCache"]

LayerStates = list[tuple[torch.Tensor, torch.Tensor]]


class CachedPrefix(NamedTuple):
    """The states of a prompt's first ``length`` tokens (``states`` is None when ``length`` is 0)."""

    length: int
    states: LayerStates | None


class _Entry(NamedTuple):
    tokens: torch.Tensor
    states: LayerStates


class PrefixCache:
    """Key/value states of recent token sequences, looked up by longest common prefix.

    Args:
        max_tokens: Most tokens held over all entries but the pinned ones; 0 keeps nothing.
        max_pinned_tokens: Most tokens held over all pinned entries; 0 pins nothing.
    """

    def __init__(self, max_tokens: int, max_pinned_tokens: int = 0) -> None:
        if max_tokens < 0 or max_pinned_tokens < 0:
            raise ValueError(f"token budgets must not be negative, not {max_tokens} and {max_pinned_tokens}")
        self.max_tokens = max_tokens
        self.max_pinned_tokens = max_pinned_tokens
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()
        self._pinned: dict[tuple[int, ...], _Entry] = {}
        self._tokens = 0
        self.pinned_tokens = 0
        """Tokens held now by pinned entries."""
        self._lock = threading.Lock()
        self.hits = 0
        """Prompt tokens served from the cache so far."""
        self.misses = 0
        """Prompt tokens that had to be computed so far."""

    @property
    def tokens(self) -> int:
        """Tokens held now, over all entries but the pinned ones."""
        return self._tokens

    def __len__(self) -> int:
        return len(self._entries) + len(self._pinned)

    def longest(self, tokens: Sequence[int]) -> CachedPrefix:
        """The states of the longest cached prefix of ``tokens``, at most ``len(tokens) - 1`` long.

        One token is always left to compute, since its output (the next-token distribution) is what the
        caller wants. The hit and miss counters record the split.
        """
        limit = len(tokens) - 1
        best, best_key = 0, None
        if limit > 0 and (self._entries or self._pinned):
            query = torch.tensor(tokens[:limit])
            with self._lock:
                entries = [*self._pinned.items(), *self._entries.items()]
            for key, entry in entries:
                width = min(limit, len(key))
                if width <= best:
                    continue
                same = entry.tokens[:width] == query[:width]
                common = width if bool(same.all()) else int((~same).int().argmax())
                if common > best:
                    best, best_key = common, key
        self.hits += best
        self.misses += len(tokens) - best
        if best_key is None:
            return CachedPrefix(0, None)
        with self._lock:
            entry = self._pinned.get(best_key)
            if entry is None:
                entry = self._entries.get(best_key)
            if entry is None:  # evicted meanwhile
                self.hits -= best
                self.misses += best
                return CachedPrefix(0, None)
            if best_key in self._entries:
                self._entries.move_to_end(best_key)
        return CachedPrefix(best, [(k[:, :best], v[:, :best]) for k, v in entry.states])

    def put(self, tokens: Sequence[int], states: LayerStates) -> None:
        """Keep the states of ``tokens`` (each layer's tensors ``[heads, len(tokens), head_dim]``)."""
        key = tuple(tokens)
        if not key or len(key) > self.max_tokens:
            return
        entry = _Entry(torch.tensor(key), states)
        with self._lock:
            if any(len(old) >= len(key) and old[: len(key)] == key for old in self._pinned):
                return
            for old in self._entries:
                if len(old) >= len(key) and old[: len(key)] == key:
                    self._entries.move_to_end(old)  # already held, as the start of a longer entry
                    return
            # An entry that is a prefix of the new one is redundant now.
            for old in [old for old in self._entries if len(old) <= len(key) and key[: len(old)] == old]:
                self._tokens -= len(old)
                del self._entries[old]
            self._entries[key] = entry
            self._tokens += len(key)
            while self._tokens > self.max_tokens:
                old, _ = self._entries.popitem(last=False)
                self._tokens -= len(old)

    def fits(self, length: int) -> bool:
        """Whether ``length`` more pinned tokens fit in ``max_pinned_tokens``."""
        return self.pinned_tokens + length <= self.max_pinned_tokens

    def is_pinned(self, tokens: Sequence[int]) -> bool:
        """Whether exactly ``tokens`` are pinned."""
        return tuple(tokens) in self._pinned

    def pin(self, tokens: Sequence[int], states: LayerStates) -> bool:
        """Keep the states of ``tokens`` for good (see the module); False, keeping nothing, when they would take the
        pinned entries past ``max_pinned_tokens``. Pinning a sequence already pinned changes nothing."""
        key = tuple(tokens)
        with self._lock:
            if key in self._pinned:
                return True
            if not key or not self.fits(len(key)):
                return False
            self._pinned[key] = _Entry(torch.tensor(key), states)
            self.pinned_tokens += len(key)
        return True
