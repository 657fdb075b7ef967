"""The Gymnasium space of things people say: :class:`Utterance`."""

from __future__ import annotations

import string
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
from gymnasium.error import CustomSpaceError
from gymnasium.spaces import Text
from gymnasium.vector.utils import create_shared_memory

__all__ = ["SAMPLE_CHARSET", "Utterance"]

SAMPLE_CHARSET = string.ascii_letters + string.digits + string.punctuation
"""Characters :meth:`Utterance.sample` draws from: printable ASCII without whitespace."""


class Utterance(Text):
    """Any text of bounded length: the observation and action space of :class:`~attune_client.env.AttuneEnv`.

    :class:`gymnasium.spaces.Text` holds only strings whose every character is in its charset
    (alphanumeric by default), so an ordinary sentence, with its spaces and punctuation, or one in
    Chinese or with an emoji, would fall outside it. A person can say anything, so :meth:`contains`
    accepts every ``str`` whose length is within bounds, whatever its characters.

    :meth:`sample` still needs a finite alphabet. It draws from :data:`SAMPLE_CHARSET`, printable ASCII
    without whitespace, so that a sample is never blank: the server rejects blank replies
    (``action_empty``), and Gymnasium's ``check_env`` steps with sampled actions. Samples are noise,
    useful for smoke tests only.

    The charset-index encodings that Gymnasium defines for ``Text`` (flattening, shared memory) cannot
    represent arbitrary Unicode, so this space is not flattenable, and ``AsyncVectorEnv`` needs
    ``shared_memory=False`` with it.

    Example:
        >>> space = Utterance(max_length=20)
        >>> "我今天很难过 😢" in space, "" in space, "x" * 21 in space
        (True, False, False)
    """

    def __init__(
        self,
        max_length: int,
        *,
        min_length: int = 1,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        """Create the space; both length bounds are inclusive and count Unicode code points.

        Args:
            max_length: Longest allowed text.
            min_length: Shortest allowed text; 1 (the default) excludes the empty string.
            seed: Seed for :meth:`sample`.
        """
        super().__init__(max_length, min_length=min_length, charset=SAMPLE_CHARSET, seed=seed)

    def contains(self, x: Any) -> bool:
        """Whether ``x`` is a ``str`` of allowed length; any characters are allowed.

        Args:
            x: The candidate.

        Returns:
            ``True`` when ``x`` is in the space.
        """
        return isinstance(x, str) and self.min_length <= len(x) <= self.max_length

    @property
    def is_np_flattenable(self) -> bool:
        """``False``: arbitrary Unicode has no index in a fixed charset."""
        return False

    def __repr__(self) -> str:
        """Show the length bounds."""
        return f"Utterance({self.min_length}, {self.max_length})"

    def __eq__(self, other: object, /) -> bool:
        """Equal to another :class:`Utterance` with the same bounds (never to a plain ``Text``)."""
        return isinstance(other, Utterance) and (self.min_length, self.max_length) == (
            other.min_length,
            other.max_length,
        )


@create_shared_memory.register(Utterance)
def _utterance_shared_memory(space: Utterance, n: int = 1, ctx: ModuleType | None = None) -> NoReturn:
    # Text's shared memory stores charset indexes; failing here makes AsyncVectorEnv say
    # "use shared_memory=False" instead of failing on the first non-ASCII observation.
    raise CustomSpaceError(f"{space!r} cannot be stored in shared memory; use shared_memory=False")
