"""Emotion arithmetic shared by every backend: clamping, bands and termination thresholds."""

from __future__ import annotations

from attune_client.wire import Band

__all__ = ["DELTA_MAX", "DELTA_MIN", "EMOTION_GOAL", "EMOTION_LEAVE", "apply_delta", "band_of", "clamp_delta"]

DELTA_MIN, DELTA_MAX = -10, 10
EMOTION_GOAL = 100
"""At this emotion the person's need is met and the episode terminates."""
EMOTION_LEAVE = 10
"""Below this emotion the person gives up and leaves."""


def clamp_delta(delta: int) -> int:
    """Clamp an appraised change to SAGE's [-10, +10]."""
    return max(DELTA_MIN, min(DELTA_MAX, int(delta)))


def apply_delta(emotion: int, delta: int) -> int:
    """New emotion after a clamped change, kept in 0..100."""
    return max(0, min(100, emotion + clamp_delta(delta)))


def band_of(emotion: int) -> Band:
    """SAGE's band letter for an emotion score."""
    if emotion >= 100:
        return Band.S
    if emotion >= 70:
        return Band.A
    if emotion >= 40:
        return Band.B
    if emotion >= 10:
        return Band.C
    return Band.F
