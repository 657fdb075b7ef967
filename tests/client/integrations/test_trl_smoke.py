"""``examples/trl_grpo.py --smoke``: two real GRPO steps of SmolLM2-135M against its own heuristic server.

The script checks itself (one create + fork per group, multi-turn completions with simulated-user tokens masked
out, logged reward = the server's mean final emotion / 100, rewards varying inside groups, weights moving) and
exits non-zero when a check fails. About 1.5 minutes on an idle 2-core CPU; the timeout leaves room for a busy one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]


def test_trl_grpo_smoke_run() -> None:
    pytest.importorskip("trl")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [sys.executable, "examples/trl_grpo.py", "--smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    checks = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert len(checks) == 7 and all(line.startswith("[ok]") for line in checks), "\n".join(checks)
