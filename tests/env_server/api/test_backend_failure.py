"""A simulator that fails mid-step yields a 503 and leaves the episode exactly as it was."""

from __future__ import annotations

import httpx

from env_server.app import create_app
from env_server.embedded import serve_in_thread
from env_server.llm.heuristic import HeuristicSimulator
from env_server.llm.protocol import TurnContext
from env_server.settings import BackendName, Settings


class FailingReplies(HeuristicSimulator):
    """The real heuristic simulator, except that its reply step raises when the supporter wrote FAIL.

    The appraisal has already succeeded by then, so a server that applied half a turn would show it.
    """

    async def reply(self, context: TurnContext) -> str:
        if "FAIL" in context.last_reply:
            raise RuntimeError("model worker crashed")
        return await super().reply(context)


def test_backend_failure_is_503_and_episode_unchanged() -> None:
    app = create_app(Settings(backend=BackendName.heuristic), simulator=FailingReplies())
    with serve_in_thread(app) as url, httpx.Client(base_url=url) as http:
        episode = http.post("/v1/episodes", json={"seed": 4}).json()["episode_id"]
        assert http.post(f"/v1/episodes/{episode}/step", json={"action": "What happened?"}).status_code == 200
        before = http.get(f"/v1/episodes/{episode}").json()

        failed = http.post(f"/v1/episodes/{episode}/step", json={"action": "FAIL please"})
        assert failed.status_code == 503
        assert failed.json()["error"]["code"] == "backend_unavailable"
        assert "model worker crashed" in failed.json()["error"]["message"]
        assert http.get(f"/v1/episodes/{episode}").json() == before

        after = http.post(f"/v1/episodes/{episode}/step", json={"action": "Sorry, go on?"})
        assert after.status_code == 200 and after.json()["info"]["turn"] == 2
