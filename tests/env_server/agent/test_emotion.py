import pytest

from attune_client.wire import Band, RewardMode
from env_server.agent.emotion import apply_delta, band_of, clamp_delta
from env_server.agent.reward import step_reward


@pytest.mark.parametrize(("delta", "expected"), [(-25, -10), (-10, -10), (0, 0), (7, 7), (10, 10), (11, 10)])
def test_clamp_delta_keeps_sage_range(delta: int, expected: int) -> None:
    assert clamp_delta(delta) == expected


@pytest.mark.parametrize(("emotion", "delta", "expected"), [(95, 10, 100), (3, -10, 0), (50, 30, 60), (40, -4, 36)])
def test_apply_delta_clamps_change_then_range(emotion: int, delta: int, expected: int) -> None:
    assert apply_delta(emotion, delta) == expected


@pytest.mark.parametrize(
    ("emotion", "band"),
    [
        (100, Band.S),
        (99, Band.A),
        (70, Band.A),
        (69, Band.B),
        (40, Band.B),
        (39, Band.C),
        (10, Band.C),
        (9, Band.F),
        (0, Band.F),
    ],
)
def test_bands_follow_sage_thresholds(emotion: int, band: Band) -> None:
    assert band_of(emotion) is band


def test_terminal_reward_pays_final_emotion_only_at_the_end() -> None:
    assert step_reward(RewardMode.terminal, delta=5, emotion=60, done=False) == 0.0
    assert step_reward(RewardMode.terminal, delta=5, emotion=60, done=True) == pytest.approx(0.6)


def test_dense_reward_pays_each_delta() -> None:
    assert step_reward(RewardMode.dense, delta=-4, emotion=36, done=False) == pytest.approx(-0.04)
    assert step_reward(RewardMode.dense, delta=3, emotion=80, done=True) == pytest.approx(0.03)
