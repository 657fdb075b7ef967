"""Builds the configured simulator backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from env_server.llm.heuristic import HeuristicSimulator
from env_server.llm.protocol import Simulator
from env_server.settings import BackendName, Settings

if TYPE_CHECKING:
    from env_server.llm.chat import ChatModel, ChatSimulator

__all__ = ["build_simulator"]


def build_simulator(settings: Settings) -> Simulator:
    """The simulator named by ``settings.backend``; loads model weights (slow) for model backends."""
    if settings.backend is BackendName.heuristic:
        return HeuristicSimulator()
    if settings.backend is BackendName.openai:
        from env_server.llm.openai_backend import OpenAIChatModel

        if not settings.openai_base_url:
            raise ValueError("the openai backend needs ATTUNE_OPENAI_BASE_URL (or --openai-base-url)")
        remote = OpenAIChatModel(
            settings.openai_base_url,
            settings.openai_model,
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            max_concurrency=settings.openai_max_concurrency,
            temperature=settings.temperature,
            prefix_mode=settings.openai_prefix_mode,
        )
        return _chat_simulator(remote, settings)
    # Imported here: the heuristic server and the personas CLI must not pay for importing torch.
    from env_server.llm.transformers_backend import TransformersChatModel

    model = TransformersChatModel(
        settings.model,
        device=settings.device,
        dtype=settings.dtype,
        temperature=settings.temperature,
        torch_threads=settings.torch_threads,
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_wait_ms / 1000,
        gap_s=min(settings.batch_gap_ms, settings.max_wait_ms) / 1000,
        prefix_cache_tokens=settings.prefix_cache_tokens,
        pinned_prefix_tokens=settings.pinned_prefix_tokens,
    )
    return _chat_simulator(model, settings)


def _chat_simulator(model: ChatModel, settings: Settings) -> ChatSimulator:
    from env_server.llm.chat import ChatSimulator

    return ChatSimulator(
        model,
        max_new_tokens=settings.max_new_tokens,
        thoughts_tokens=settings.thoughts_tokens,
        transcript_window=settings.transcript_window,
    )
