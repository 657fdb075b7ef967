"""Prometheus metrics, one registry per app (so several apps in one process never collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """What the server counts and times."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.steps = Counter(
            "attune_steps", "Steps answered, by outcome (applied or replayed).", ["outcome"], registry=self.registry
        )
        self.episodes_created = Counter("attune_episodes_created", "Episodes created.", registry=self.registry)
        self.active_episodes = Gauge("attune_active_episodes", "Episodes in the store.", registry=self.registry)
        self.step_seconds = Histogram(
            "attune_step_seconds", "Step latency inside the server.", buckets=_LATENCY_BUCKETS, registry=self.registry
        )
        self.backend_seconds = Histogram(
            "attune_backend_seconds",
            "Simulator call latency, by call (appraise, reply, opening).",
            ["call"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.appraisal_fallbacks = Counter(
            "attune_appraisal_fallbacks", "Appraisals decided by the heuristic fallback.", registry=self.registry
        )
        self.redactions = Counter(
            "attune_redactions", "Simulated replies with private text withheld.", registry=self.registry
        )
        self.errors = Counter("attune_errors", "Error responses, by code.", ["code"], registry=self.registry)

        self._tokens: Callable[[], int] = lambda: 0
        self._prompt_tokens: Callable[[], tuple[int, int]] = lambda: (0, 0)
        self.registry.register(_TokenCollector(self))

    def count_tokens_with(self, read: Callable[[], int], prompt: Callable[[], tuple[int, int]] | None = None) -> None:
        """Read the simulator's own token counters at scrape time: generated tokens, and (when the model has a
        prefix cache) prompt tokens as (served from the cache, computed)."""
        self._tokens = read
        if prompt is not None:
            self._prompt_tokens = prompt

    def render(self, active_episodes: int) -> bytes:
        """The exposition text, with the gauge read at scrape time."""
        self.active_episodes.set(active_episodes)
        return generate_latest(self.registry)


class _TokenCollector(Collector):
    """Exposes the simulator's generated-token count, which the model keeps itself."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(
            "attune_simulator_tokens", "Tokens the simulator model generated.", value=self._metrics._tokens()
        )
        cached, computed = self._metrics._prompt_tokens()
        prompt = CounterMetricFamily(
            "attune_prompt_tokens", "Prompt tokens the simulator model read, by source.", labels=["source"]
        )
        prompt.add_metric(["cache"], cached)
        prompt.add_metric(["computed"], computed)
        yield prompt
