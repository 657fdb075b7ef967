"""The seeded batch sampler: the nucleus distribution, per-row seeds, and the wide-distribution path."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from env_server.llm.sampling import SeededSampler  # noqa: E402

SCORES = [2.0, 1.5, 1.0, 0.2, -1.0, -3.0]


def nucleus(scores: list[float], temperature: float, top_p: float) -> list[float]:
    """transformers' own warpers, applied to one row: the probabilities the sampler must draw from."""
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    row = torch.tensor([scores])
    for warper in (TemperatureLogitsWarper(temperature), TopPLogitsWarper(top_p)):
        row = warper(None, row)
    return torch.softmax(row, dim=-1)[0].tolist()


def frequencies(sampler: SeededSampler, scores: torch.Tensor, draws: int) -> list[list[float]]:
    tokens = torch.stack([sampler.draw(scores) for _ in range(draws)])
    return [(torch.bincount(column, minlength=scores.shape[-1]) / draws).tolist() for column in tokens.T]


@pytest.mark.parametrize("candidates", [256, 2], ids=["nucleus-in-candidates", "nucleus-wider-than-candidates"])
def test_draws_follow_transformers_top_p(candidates: int, monkeypatch) -> None:
    monkeypatch.setattr(SeededSampler, "_CANDIDATES", candidates)
    sampler = SeededSampler([0, 1], temperature=0.7, top_p=0.9, device="cpu")
    expected = nucleus(SCORES, 0.7, 0.9)
    assert sum(p > 0 for p in expected) == 3  # the filter matters: three of six tokens are kept
    for row in frequencies(sampler, torch.tensor([SCORES, SCORES]), 20_000):
        assert row == pytest.approx(expected, abs=0.015)


def test_a_rows_draws_depend_on_its_seed_only() -> None:
    """A row draws the same tokens alone and beside a flat row that takes the whole-vocabulary path."""
    peaked = torch.full((50,), -5.0)
    peaked[:4] = torch.tensor([3.0, 2.6, 2.2, 1.0])
    flat = torch.zeros(50)
    alone = SeededSampler([7], temperature=1.0, top_p=0.9, device="cpu")
    beside = SeededSampler([3, 7], temperature=1.0, top_p=0.9, device="cpu")
    beside._CANDIDATES = alone._CANDIDATES = 8
    solo = [alone.draw(peaked[None]).item() for _ in range(200)]
    paired = [beside.draw(torch.stack([flat, peaked]))[1].item() for _ in range(200)]
    assert solo == paired
    assert len(set(solo)) > 1  # it samples, not argmax
    again = SeededSampler([7], temperature=1.0, top_p=0.9, device="cpu")
    assert [again.draw(peaked[None]).item() for _ in range(200)] == solo
    other = SeededSampler([8], temperature=1.0, top_p=0.9, device="cpu")
    assert [other.draw(peaked[None]).item() for _ in range(200)] != solo
