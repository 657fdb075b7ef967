"""Reward for one step, from the emotion trajectory.

``terminal`` (RLVER's default): emotion/100 on the step that ends the episode, 0 before it, so the
return of an episode is its final emotion / 100. ``dense``: delta/100 on every step, so the return is
(final - initial) / 100; it credits each reply with its own effect.
"""

from __future__ import annotations

from attune_client.wire import RewardMode

__all__ = ["step_reward"]


def step_reward(mode: RewardMode, *, delta: int, emotion: int, done: bool) -> float:
    """The reward for a step that changed emotion by ``delta`` to ``emotion``."""
    if mode is RewardMode.dense:
        return delta / 100
    return emotion / 100 if done else 0.0
