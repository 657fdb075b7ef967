"""Utterance: any text of bounded length."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from gymnasium.error import CustomSpaceError
from gymnasium.spaces import Text
from gymnasium.vector.utils import batch_space, create_shared_memory

from attune_client.spaces import SAMPLE_CHARSET, Utterance


@pytest.mark.parametrize(
    "text",
    [
        "I had an awful day. My boss yelled at me, in front of everyone!",
        "我今天很难过，不知道该怎么办。",
        "ugh 😩😩 seriously??",
        "line one\nline two\ttabbed",
        "x",
    ],
)
def test_contains_any_unicode_text(text: str) -> None:
    assert text in Utterance(max_length=100)


def test_plain_text_space_would_reject_a_sentence() -> None:
    # The reason Utterance exists.
    assert "I am sad." not in Text(max_length=100)
    assert "I am sad." in Utterance(max_length=100)


@pytest.mark.parametrize("value", [b"bytes", 42, None, ["a"], np.str_("ok").encode()])
def test_rejects_non_str(value: object) -> None:
    assert value not in Utterance(max_length=100)


def test_length_bounds_are_inclusive() -> None:
    space = Utterance(max_length=5, min_length=2)
    assert "ab" in space and "abcde" in space and "😀😀" in space
    assert "a" not in space and "abcdef" not in space
    assert "" not in Utterance(max_length=5)
    assert "" in Utterance(max_length=5, min_length=0)


def test_numpy_str_is_a_str() -> None:
    assert np.str_("hello there") in Utterance(max_length=20)


def test_sample_is_never_blank_and_is_contained() -> None:
    space = Utterance(max_length=30, seed=0)
    samples = [space.sample() for _ in range(500)]
    assert all(s.strip() == s and s and s in space for s in samples)
    assert all(set(s) <= set(SAMPLE_CHARSET) for s in samples)
    assert not any(c.isspace() for c in SAMPLE_CHARSET)


def test_sample_is_seeded() -> None:
    a, b = Utterance(50, seed=3), Utterance(50, seed=3)
    assert [a.sample() for _ in range(5)] == [b.sample() for _ in range(5)]


def test_equality_repr_and_copies() -> None:
    space = Utterance(max_length=10, min_length=0)
    assert space == Utterance(10, min_length=0)
    assert space != Utterance(11, min_length=0)
    assert space != Text(10, min_length=0, charset=SAMPLE_CHARSET)
    assert repr(space) == "Utterance(0, 10)"
    assert pickle.loads(pickle.dumps(space)) == space == copy.deepcopy(space)


def test_not_flattenable_and_no_shared_memory() -> None:
    space = Utterance(max_length=10)
    assert space.is_np_flattenable is False
    with pytest.raises(CustomSpaceError, match="shared_memory=False"):
        create_shared_memory(space, n=2)


def test_batches_for_vector_envs() -> None:
    batched = batch_space(Utterance(max_length=10), 3)
    assert ("hi 🙂", "你好", "ok") in batched
