import pytest

from attune_client.wire import EpisodeStatus, Message, RewardMode, RewardSpec, Role, TerminationReason
from env_server.agent.episode import EpisodeRecord, advance, turn_seed
from env_server.llm.protocol import Appraisal
from tests.support.personas import minimal_persona

PERSONA = minimal_persona()


def record(
    emotion: int = 40, max_turns: int = 3, mode: RewardMode = RewardMode.terminal, turn: int = 0
) -> EpisodeRecord:
    return EpisodeRecord(
        episode_id="e1",
        persona_id="p1",
        seed=7,
        max_turns=max_turns,
        reward=RewardSpec(mode=mode),
        emotion=emotion,
        turn=turn,
        transcript=[Message(role=Role.user, content="hello", emotion=emotion)],
        emotions=[emotion],
    )


def test_advance_builds_new_state_and_leaves_old_untouched() -> None:
    old = record()
    new, step = advance(old, PERSONA, "How are you?", Appraisal(thoughts="ok", delta=6), "Better.", "r1")
    assert (old.turn, old.emotion, len(old.transcript)) == (0, 40, 1)
    assert (new.turn, new.emotion, new.emotions) == (1, 46, [40, 46])
    assert [m.role for m in new.transcript] == [Role.user, Role.assistant, Role.user]
    assert new.transcript[-1].emotion == 46
    assert step.observation == "Better." and step.info.delta == 6 and step.reward == 0.0
    assert new.step_for("r1") == step and new.appraisals[0].thoughts == "ok"


def test_reaching_100_terminates_with_goal_reached_and_terminal_reward() -> None:
    new, step = advance(record(emotion=95), PERSONA, "a", Appraisal(thoughts="", delta=8), "Thank you.", "r")
    assert step.terminated and not step.truncated
    assert new.termination_reason is TerminationReason.goal_reached and new.emotion == 100
    assert step.reward == pytest.approx(1.0) and step.info.delta == 5


def test_dropping_below_10_terminates_with_user_left() -> None:
    new, step = advance(record(emotion=15), PERSONA, "a", Appraisal(thoughts="", delta=-6), "Bye.", "r")
    assert step.terminated and new.termination_reason is TerminationReason.user_left
    assert step.reward == pytest.approx(0.09)


def test_exactly_10_does_not_leave() -> None:
    new, step = advance(record(emotion=15), PERSONA, "a", Appraisal(thoughts="", delta=-5), "Hm.", "r")
    assert new.status is EpisodeStatus.active and not step.terminated


def test_max_turns_truncates() -> None:
    new, step = advance(record(max_turns=3, turn=2), PERSONA, "a", Appraisal(thoughts="", delta=1), "Hm.", "r")
    assert step.truncated and not step.terminated
    assert new.termination_reason is TerminationReason.max_turns and step.reward == pytest.approx(0.41)


def test_dense_reward_is_the_clamped_change() -> None:
    _, step = advance(record(mode=RewardMode.dense), PERSONA, "a", Appraisal(thoughts="", delta=-3), "Hm.", "r")
    assert step.reward == pytest.approx(-0.03)


def test_view_hides_thoughts() -> None:
    new, _ = advance(record(), PERSONA, "a", Appraisal(thoughts="SECRET-THOUGHT", delta=1), "Hm.", "r")
    assert "SECRET-THOUGHT" not in new.view().model_dump_json()
    assert "SECRET-THOUGHT" not in new.info().model_dump_json()


def test_turn_seed_is_stable_and_distinct() -> None:
    assert turn_seed(7, 1, "reply") == turn_seed(7, 1, "reply")
    assert len({turn_seed(7, t, p) for t in range(5) for p in ("appraise", "reply")}) == 10
    assert 0 <= turn_seed(2**63 - 1, 99, "reply") < 2**63
