"""Seeded sampling for a batch: each row draws from its own generator, with temperature and nucleus (top-p)."""

from __future__ import annotations

__all__ = ["SeededSampler"]


class SeededSampler:
    """Samples every row of a batch from its own generator, so a request's draw does not depend on its batch.

    Temperature, then nucleus (top-p) filtering by transformers' rule: keep the most probable tokens until their
    mass reaches ``top_p``, the token that crosses it included. Each row then draws one uniform number from its
    own ``torch.Generator`` (seeded with its request's seed) and takes the token where that number falls in the
    kept tokens' cumulative mass.

    A row's nucleus is found among its ``_CANDIDATES`` most probable tokens, and over the whole vocabulary only
    where those hold less than ``top_p`` (a flat distribution): sorting every row's 49,152 scores at every token
    took 60 ms a token at batch 16 on this CPU, a third of the model's own time.
    """

    _CANDIDATES = 256

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device) -> None:
        import torch

        self._torch = torch
        self.device = device
        self.temperature = temperature
        self.top_p = top_p
        self.generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]

    def draw(self, scores):
        """One token per row (a 1-D tensor), from the row's own generator."""
        torch = self._torch
        probs = torch.softmax(scores / self.temperature, dim=-1)
        # One number per row per token, whichever way the row's nucleus is found below.
        uniform = torch.cat([torch.rand(1, generator=g, device=self.device) for g in self.generators])
        top, index = probs.topk(min(self._CANDIDATES, probs.shape[-1]), dim=-1)
        wide = top.sum(-1) < self.top_p
        if not bool(wide.any()):
            return self._pick(top, index, uniform)
        tokens = torch.empty(len(probs), dtype=torch.long, device=probs.device)
        tokens[~wide] = self._pick(top[~wide], index[~wide], uniform[~wide])
        tokens[wide] = self._pick(*probs[wide].sort(dim=-1, descending=True), uniform[wide])
        return tokens

    def _pick(self, top, index, uniform):
        """Per row: the token where ``uniform`` falls in the cumulative mass of the nucleus of ``top`` (the
        row's most probable tokens, most probable first, whose ids are ``index``)."""
        torch = self._torch
        # A token is kept while the mass of the tokens above it is still short of top_p.
        top = torch.where(top.cumsum(-1) - top < self.top_p, top, torch.zeros_like(top))
        mass = top.cumsum(-1)
        pick = torch.searchsorted(mass, (uniform * mass[:, -1])[:, None]).clamp(max=mass.shape[-1] - 1)
        return index.gather(-1, pick)[:, 0]
