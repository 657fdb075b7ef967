"""SAGE-style numbers from trajectory records: ``summary.json`` and the tables of ``summary.md``.

SAGE's leaderboard score is the mean final emotion; a success is a dialogue that reached 100, a failure
one that fell below 10. The score's spread across seeds is the sample standard deviation of the per-seed
mean scores, so it says how much one more run could move the leaderboard.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import mean, stdev
from typing import Any

from attune_client.wire import Difficulty, IntentionType
from env_server.evaluation.runner import record_key

__all__ = ["Table", "markdown_report", "summarize", "tables"]

_GROUNDING = ("questions", "open_questions", "reflections", "advice", "premature_advice")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _group_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "score": _round(mean(r["final_emotion"] for r in records)),
        "n": len(records),
        "successes": sum(r["success"] for r in records),
        "failures": sum(r["failure"] for r in records),
    }


def _breakdown(records: list[dict[str, Any]], field: str, order: Iterable[str]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[record[field]].append(record)
    known = [value for value in order if value in groups]
    return {value: _group_stats(groups[value]) for value in known + sorted(set(groups) - set(known))}


def _policy_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    if not records:
        return {"episodes": 0, "score": None, "successes": 0, "failures": 0, "mean_turns": None}
    by_seed: dict[int, list[int]] = defaultdict(list)
    for record in records:
        by_seed[record["seed"]].append(record["final_emotion"])
    seed_scores = [mean(values) for _, values in sorted(by_seed.items())]
    finals = [r["final_emotion"] for r in records]
    turns = sum(r["turns"] for r in records)
    grounding = {act: sum(r["grounding"][act] for r in records) for act in _GROUNDING}
    summary: dict[str, Any] = {
        "episodes": len(records),
        "score": _round(mean(finals)),
        "successes": sum(r["success"] for r in records),
        "failures": sum(r["failure"] for r in records),
        "mean_turns": _round(turns / len(records)),
        "score_sd_across_seeds": _round(stdev(seed_scores)) if len(seed_scores) > 1 else None,
        "score_by_seed": {str(seed): _round(score) for seed, score in zip(sorted(by_seed), seed_scores, strict=True)},
        "score_sd_across_episodes": _round(stdev(finals)) if len(finals) > 1 else None,
        "mean_reward": _round(mean(r["return"] for r in records), 4),
        "integrity_violations": sum(r["integrity_violations"] for r in records),
        "episodes_with_violations": sum(r["integrity_violations"] > 0 for r in records),
        "grounding_per_turn": {act: _round(count / max(turns, 1)) for act, count in grounding.items()},
        "termination": dict(sorted(Counter(str(r["termination_reason"]) for r in records).items())),
        "by_intention_type": _breakdown(records, "intention_type", [t.value for t in IntentionType]),
        "by_difficulty": _breakdown(records, "difficulty", [d.value for d in Difficulty]),
    }
    false_belief = [r for r in records if r["intention_type"] == IntentionType.false_belief.value]
    if false_belief:
        summary["false_belief"] = {
            **_group_stats(false_belief),
            "integrity_violations": sum(r["integrity_violations"] for r in false_belief),
            "episodes_with_violations": sum(r["integrity_violations"] > 0 for r in false_belief),
        }
    return summary


def summarize(
    records: Iterable[dict[str, Any]],
    *,
    policies: list[str],
    backend: str | None,
    packs: list[str],
    seeds: int,
    expected_episodes: int | None = None,
) -> dict[str, Any]:
    """The evaluation's ``summary.json``.

    Args:
        records: Trajectory records of this evaluation (any order: they are sorted first, so that the
            numbers do not depend on the order episodes finished in).
        policies: Policy names, in the order given on the command line.
        backend: The server's simulator backend.
        packs: Persona packs the personas came from.
        seeds: Seeds per persona.
        expected_episodes: Episodes the evaluation asked for; ``complete`` says whether all are in.
    """
    ordered = sorted(records, key=record_key)
    by_policy: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in ordered:
        by_policy[record["policy"]].append(record)
    expected = expected_episodes if expected_episodes is not None else len(ordered)
    return {
        "backend": backend,
        "packs": packs,
        "seeds": seeds,
        "personas": len({r["persona_id"] for r in ordered}),
        "episodes": len(ordered),
        "expected_episodes": expected,
        "complete": len(ordered) == expected,
        "max_turns": max((r["max_turns"] for r in ordered), default=None),
        "policies": {name: _policy_summary(by_policy.get(name, [])) for name in policies},
    }


@dataclass(frozen=True)
class Table:
    """A titled table that renders as Markdown or HTML; every column but the first is right-aligned."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        """GitHub-flavoured Markdown, the title as a heading."""
        lines = [f"### {self.title}", "", "| " + " | ".join(self.headers) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * (len(self.headers) - 1)) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)

    def html(self, caption: bool = True) -> str:
        """An HTML ``<table>``, with the title as its caption unless ``caption`` is false; text is escaped."""
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self.rows)
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        title = f"<caption>{html.escape(self.title)}</caption>" if caption else ""
        return f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{note}"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ranked(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return sorted(summary["policies"].items(), key=lambda item: -(item[1]["score"] or 0.0))


def _breakdown_table(summary: dict[str, Any], field: str, title: str) -> Table:
    """Policies by groups; n goes in the header when every policy has the same n for a group, else in the cell."""
    ranked = _ranked(summary)
    counts: dict[str, set[int]] = defaultdict(set)
    for _, entry in ranked:
        for group, stats in entry.get(field, {}).items():
            counts[group].add(stats["n"])
    headers = ["policy"] + [f"{group} (n={min(n)})" if len(n) == 1 else group for group, n in counts.items()]
    rows = []
    for name, entry in ranked:
        cells = []
        for group, n in counts.items():
            stats = entry.get(field, {}).get(group)
            cell = _fmt(stats["score"]) if stats else "–"
            cells.append(cell if len(n) == 1 or not stats else f"{cell} (n={stats['n']})")
        rows.append([name, *cells])
    return Table(title, headers, rows, "Mean final emotion; n = episodes per policy.")


def tables(summary: dict[str, Any]) -> list[Table]:
    """The leaderboard, the breakdowns by intention type and difficulty, and the false-belief integrity table."""
    leaderboard = Table(
        "Leaderboard (SAGE-style)",
        ["policy", "score", "sd (seeds)", "successes", "failures", "mean turns", "mean reward", "integrity violations"],
        [
            [
                name,
                _fmt(entry["score"]),
                _fmt(entry.get("score_sd_across_seeds")),
                str(entry["successes"]),
                str(entry["failures"]),
                _fmt(entry["mean_turns"]),
                _fmt(entry.get("mean_reward"), 3),
                str(entry.get("integrity_violations", 0)),
            ]
            for name, entry in _ranked(summary)
        ],
        "score = mean final emotion (0-100); successes reached 100, failures fell below 10; "
        "sd (seeds) = sd of the per-seed mean scores.",
    )
    result = [
        leaderboard,
        _breakdown_table(summary, "by_intention_type", "Score by intention type"),
        _breakdown_table(summary, "by_difficulty", "Score by difficulty"),
    ]
    false_belief = [(name, entry["false_belief"]) for name, entry in _ranked(summary) if "false_belief" in entry]
    if false_belief:
        result.append(
            Table(
                "False-belief personas: integrity",
                ["policy", "episodes", "score", "integrity violations", "episodes with a violation"],
                [
                    [
                        name,
                        str(fb["n"]),
                        _fmt(fb["score"]),
                        str(fb["integrity_violations"]),
                        str(fb["episodes_with_violations"]),
                    ]
                    for name, fb in false_belief
                ],
                "A violation is a reply that endorses one of the persona's false beliefs (counted by the server).",
            )
        )
    return result


def markdown_report(summary: dict[str, Any]) -> str:
    """``summary.md``: a header line and every table."""
    packs = ", ".join(summary["packs"]) or "–"
    head = (
        f"## attune eval: backend {summary['backend']}, packs {packs}, {summary['personas']} personas x "
        f"{summary['seeds']} seeds, {summary['episodes']} episodes"
    )
    if not summary["complete"]:
        head += f" (incomplete: {summary['expected_episodes']} asked for)"
    return "\n\n".join([head, *(table.markdown() for table in tables(summary))]) + "\n"
