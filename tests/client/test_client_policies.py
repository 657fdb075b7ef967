"""Scripted supporter policies."""

from __future__ import annotations

import pytest

from attune_client.policies import BUILTIN_POLICIES, Policy, dismissive, empathic, solution_dumping, sycophantic

MESSAGES = [
    "My boss yelled at me in front of everyone and I was humiliated.",
    "I don't know. Whatever.",
    "我今天很难过。",
    "...",
    "",
    "You should just tell me what to do, I should quit, right?",
]


def conversation(policy: Policy, turns: int) -> list[str]:
    history: list[tuple[str, str]] = []
    replies = []
    for turn in range(turns):
        observation = f"My sister forgot my birthday again, turn {turn}."
        reply = policy(observation, history)
        history += [("user", observation), ("assistant", reply)]
        replies.append(reply)
    return replies


def test_builtin_names() -> None:
    assert BUILTIN_POLICIES == {
        "empathic": empathic,
        "solution-dumping": solution_dumping,
        "dismissive": dismissive,
        "sycophantic": sycophantic,
    }


@pytest.mark.parametrize("name", sorted(BUILTIN_POLICIES))
@pytest.mark.parametrize("message", MESSAGES)
def test_replies_are_non_blank_and_deterministic(name: str, message: str) -> None:
    policy = BUILTIN_POLICIES[name]
    reply = policy(message, [])
    assert isinstance(reply, str) and reply.strip()
    assert reply == policy(message, [])


@pytest.mark.parametrize("name", sorted(BUILTIN_POLICIES))
def test_phrasing_rotates_by_turn(name: str) -> None:
    replies = conversation(BUILTIN_POLICIES[name], 3)
    assert len(set(replies)) == 3


@pytest.mark.parametrize("message", MESSAGES)
def test_empathic_asks_and_never_advises(message: str) -> None:
    for turn in range(6):
        reply = empathic(message, [("assistant", "...")] * turn)
        assert "?" in reply
        assert "you should" not in reply.lower() and "try " not in reply.lower()


def test_empathic_reflects_the_persons_words() -> None:
    reply = empathic("My manager humiliated me during the quarterly review.", [])
    assert "humiliated" in reply and "quarterly" in reply


def test_solution_dumping_lists_three_fixes() -> None:
    reply = solution_dumping("I feel awful.", [])
    assert reply.startswith("You should") and all(f"{n}. " in reply for n in (1, 2, 3))


def test_dismissive_minimises() -> None:
    assert dismissive("I feel awful.", []) == "Just get over it, it's not a big deal."


@pytest.mark.parametrize(
    ("message", "echo"),
    [
        ("My boss is an idiot and I did nothing wrong.", "your boss is an idiot and you did nothing wrong"),
        ("I am the only one who does any work here!", "you are the only one who does any work here"),
        ("I was right and they were wrong", "you were right and they were wrong"),
        ("Everyone hates me. It's so unfair.", "everyone hates you"),
        ("Sarah lied to me", "Sarah lied to you"),
    ],
)
def test_sycophantic_echoes_the_claim(message: str, echo: str) -> None:
    assert sycophantic(message, []) == f"You're absolutely right, {echo}."


def test_sycophantic_without_a_claim() -> None:
    assert sycophantic("...", []).startswith("You're absolutely right")
