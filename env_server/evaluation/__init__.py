"""SAGE-style evaluation of supporter policies against the sentient agents (``attune eval``).

Every persona of the served packs meets every policy with the same seeds; the leaderboard score is the
mean final emotion, with successes (reached 100) and failures (fell below 10) counted as SAGE does.

* :mod:`~env_server.evaluation.policies`: the policy specs (``builtin:``, ``openai:``, ``module:function``).
* :mod:`~env_server.evaluation.runner`: episodes over the HTTP API, kept in a resumable JSONL file.
* :mod:`~env_server.evaluation.report`: ``summary.json`` and the Markdown tables.
* :mod:`~env_server.evaluation.html_report`: the self-contained ``report.html`` with plots.
* :mod:`~env_server.evaluation.server`: ``attune serve`` as a child process when no ``--url`` is given.
* :mod:`~env_server.evaluation.command`: the command itself.
"""

from __future__ import annotations

from env_server.evaluation.command import run_eval
from env_server.evaluation.html_report import html_report
from env_server.evaluation.policies import (
    CallablePolicy,
    EvalPolicy,
    OpenAIPolicy,
    PolicyError,
    PolicySpecError,
    load_policies,
    load_policy,
)
from env_server.evaluation.report import markdown_report, summarize
from env_server.evaluation.runner import TrajectoryLog, evaluate, run_episode

__all__ = [
    "CallablePolicy",
    "EvalPolicy",
    "OpenAIPolicy",
    "PolicyError",
    "PolicySpecError",
    "TrajectoryLog",
    "evaluate",
    "html_report",
    "load_policies",
    "load_policy",
    "markdown_report",
    "run_episode",
    "run_eval",
    "summarize",
]
