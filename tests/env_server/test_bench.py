"""``attune bench``'s load generator against a real heuristic server."""

from __future__ import annotations

import asyncio

import pytest

from env_server.bench import _Connection, run_level


def test_run_level_steps_episodes_through_http(server_url: str) -> None:
    result = asyncio.run(run_level(server_url, concurrency=2, steps_per_worker=7, max_turns=3))
    assert result.steps == 14 and result.steps_per_s > 0 and result.p50_ms > 0


def test_connection_reports_an_error_status_with_the_body(server_url: str) -> None:
    async def step_unknown() -> None:
        connection = await _Connection.open(server_url)
        try:
            await connection.request("POST", "/v1/episodes/nope/step", {"action": "hello"})
        finally:
            await connection.aclose()

    with pytest.raises(RuntimeError, match="HTTP 404.*not_found"):
        asyncio.run(step_unknown())
