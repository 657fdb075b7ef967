"""``attune bench``'s load generator against a real heuristic server."""

from __future__ import annotations

import asyncio
import json

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


def test_json_report_against_a_running_server(server_url: str, capsys) -> None:
    # The tracking contract: levels with their figures, the overhead share, and the flags that shaped the run.
    from env_server.cli import main

    code = main(
        ["bench", "--backend", "heuristic", "--url", server_url, "--concurrency", "1,2", "--steps", "6"]
        + ["--dtype", "bfloat16", "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [level["concurrency"] for level in report["levels"]] == [1, 2]
    for level in report["levels"]:
        assert level["steps"] == 6 and level["steps_per_s"] > 0
        assert level["p50_ms"] <= level["p99_ms"]
        assert {"tokens_per_s", "p50_ms", "p99_ms"} <= level.keys()
    assert 0 <= report["overhead_share"] <= 1
    assert "dtype" not in report  # it shapes only servers the bench starts itself
    assert "batched_over_unbatched" not in report  # a running server cannot be compared with another engine
