"""``report.html``: one self-contained page (inline CSS, plots as base64 PNG data URIs) comparing the policies.

Emotion trajectories are drawn per supporter turn. An episode that ended early (emotion reached 100 or
fell below 10) keeps its final emotion for the remaining turns, as the person's state stays where it ended.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402

from attune_client.wire import Difficulty, IntentionType  # noqa: E402
from env_server.evaluation.report import markdown_report, tables  # noqa: E402

__all__ = ["html_report"]

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; margin: 0; }
body { background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #d9dde5; }
.meta { color: #5a6272; margin: 0 0 16px; }
.warn { background: #fff4d6; border: 1px solid #e8c96a; padding: 8px 12px; border-radius: 6px; }
table { border-collapse: collapse; margin: 8px 0 4px; background: #fff; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border: 1px solid #d9dde5; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #eef1f6; }
.note { color: #5a6272; font-size: 12px; margin: 2px 0 16px; }
figure { margin: 12px 0; background: #fff; border: 1px solid #d9dde5; border-radius: 6px; padding: 8px; }
figure img { max-width: 100%; height: auto; display: block; }
figcaption { color: #5a6272; font-size: 12px; padding: 4px 4px 0; }
.row { display: flex; gap: 12px; flex-wrap: wrap; } .row figure { flex: 1 1 480px; }
details { margin: 12px 0; } summary { cursor: pointer; font-weight: 600; }
table.claims td, table.claims th { text-align: left; vertical-align: top; font-size: 13px; }
"""


def _png(figure: plt.Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(uri: str, caption: str) -> str:
    text = html.escape(caption)
    return f'<figure><img src="{uri}" alt="{text}"><figcaption>{text}</figcaption></figure>'


def _trajectories(records: list[dict[str, Any]], length: int) -> np.ndarray:
    rows = [r["emotions"] + [r["emotions"][-1]] * (length - len(r["emotions"])) for r in records]
    return np.asarray(rows, dtype=float)


def _colors(policies: list[str]) -> dict[str, Any]:
    palette = plt.get_cmap("tab10")
    return {name: palette(index % 10) for index, name in enumerate(policies)}


def _draw_panel(axis, groups: dict[str, list[dict[str, Any]]], colors: dict[str, Any], length: int) -> None:
    turns = np.arange(length)
    for name, records in groups.items():
        if not records:
            continue
        matrix = _trajectories(records, length)
        low, high = np.percentile(matrix, [25, 75], axis=0)
        axis.fill_between(turns, low, high, color=colors[name], alpha=0.15, linewidth=0)
        axis.plot(turns, matrix.mean(axis=0), color=colors[name], linewidth=2, label=f"{name} (n={len(records)})")
    axis.axhline(100, color="#999", linewidth=0.8, linestyle=":")
    axis.axhline(10, color="#999", linewidth=0.8, linestyle=":")
    axis.set_ylim(0, 102)
    axis.set_xlim(0, length - 1)
    axis.grid(alpha=0.3)


def _by(records: list[dict[str, Any]], policies: list[str], field: str | None, value: str | None) -> dict:
    groups: dict[str, list[dict[str, Any]]] = {name: [] for name in policies}
    for record in records:
        if field is None or record[field] == value:
            groups.setdefault(record["policy"], []).append(record)
    return groups


def _overall_plot(records, policies, colors, length) -> str:
    figure, axis = plt.subplots(figsize=(7, 4.2))
    _draw_panel(axis, _by(records, policies, None, None), colors, length)
    axis.set_xlabel("supporter turn")
    axis.set_ylabel("emotion")
    axis.set_title("Emotion by turn, all personas")
    axis.legend(loc="best", fontsize=9)
    return _png(figure)


def _final_plot(records, policies, colors) -> str:
    figure, axis = plt.subplots(figsize=(7, 4.2))
    finals = [[r["final_emotion"] for r in records if r["policy"] == name] for name in policies]
    axis.boxplot(finals, showfliers=False, widths=0.5)
    axis.set_xticks(range(1, len(policies) + 1), policies, rotation=15)
    jitter = np.random.default_rng(0)
    for index, (name, values) in enumerate(zip(policies, finals, strict=True), 1):
        x = index + jitter.uniform(-0.18, 0.18, len(values))
        axis.scatter(x, values, s=10, color=colors[name], alpha=0.6, zorder=3)
        if values:
            axis.scatter([index], [np.mean(values)], marker="D", s=40, color="black", zorder=4)
    axis.axhline(100, color="#999", linewidth=0.8, linestyle=":")
    axis.axhline(10, color="#999", linewidth=0.8, linestyle=":")
    axis.set_ylim(-2, 104)
    axis.set_ylabel("final emotion")
    axis.set_title("Final emotion per episode (diamond = score)")
    axis.grid(axis="y", alpha=0.3)
    return _png(figure)


def _panels_plot(records, policies, colors, length, field: str, values: list[str], columns: int) -> str:
    present = [value for value in values if any(r[field] == value for r in records)]
    rows = max(1, -(-len(present) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.1 * columns, 2.5 * rows), sharex=True, sharey=True)
    flat = np.atleast_1d(axes).ravel()
    for axis, value in zip(flat, present, strict=False):
        groups = _by(records, policies, field, value)
        _draw_panel(axis, groups, colors, length)
        n = max((len(group) for group in groups.values()), default=0)
        axis.set_title(f"{value} (n={n})", fontsize=10)
    for axis in flat[len(present) :]:
        axis.set_visible(False)
    handles = [plt.Line2D([], [], color=colors[name], linewidth=2) for name in policies]
    height = figure.get_figheight()
    figure.legend(handles, policies, loc="upper center", ncol=len(policies), frameon=False)
    figure.supxlabel("supporter turn")
    figure.supylabel("emotion")
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.35 / height))
    return _png(figure)


def _persona_matrix(records: list[dict[str, Any]], policies: list[str]) -> str:
    finals: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    kinds: dict[str, str] = {}
    for record in records:
        finals[record["persona_id"]][record["policy"]].append(record["final_emotion"])
        kinds[record["persona_id"]] = f"{record['intention_type']}, {record['difficulty']}"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["persona", "type, difficulty", *policies])
    body = ""
    for persona in sorted(finals):
        cells = [f"{np.mean(finals[persona][p]):.1f}" if finals[persona][p] else "–" for p in policies]
        row = [persona, kinds[persona], *cells]
        body += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _claims(records: list[dict[str, Any]], policies: list[str], limit: int = 8) -> str:
    """Which replies endorsed a false belief: one row per policy, persona and claim, the first reply quoted."""
    groups: dict[tuple[str, str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for record in records:
        for claim in record["endorsed_claims"]:
            groups[(record["policy"], record["persona_id"], claim["claim"])].append((record, claim))
    rows = []
    for name in policies:
        for (_, persona, claim), hits in [item for item in groups.items() if item[0][0] == name][:limit]:
            record, first = hits[0]
            reply = record["transcript"][2 * first["turn"] - 1]["content"]
            seeds = ", ".join(str(seed) for seed in sorted({hit[0]["seed"] for hit in hits}))
            cells = [name, persona, seeds, f"turn {first['turn']}", claim, reply]
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    if not rows:
        return "<p>No reply endorsed a false belief.</p>"
    head = "".join(f"<th>{h}</th>" for h in ["policy", "persona", "seeds", "first at", "belief endorsed", "the reply"])
    return (
        f"<p>Replies that endorsed a false belief (at most {limit} persona-claim pairs per policy; the reply quoted "
        f'is the first seed\'s):</p><table class="claims"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
        "</tbody></table>"
    )


def html_report(summary: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The whole page for ``summary`` (from :func:`~env_server.evaluation.report.summarize`) and its records."""
    policies = list(summary["policies"])
    colors = _colors(policies)
    length = max((len(r["emotions"]) for r in records), default=1)
    title = markdown_report(summary).splitlines()[0].removeprefix("## ")
    parts = [f"<h1>Attune evaluation</h1><p class=meta>{html.escape(title)}</p>"]
    if not summary["complete"]:
        parts.append('<p class="warn">Incomplete: rerun the same command to finish the missing episodes.</p>')
    table_list = tables(summary)
    parts += ["<h2>Leaderboard (SAGE-style)</h2>", table_list[0].html(caption=False)]
    if records:
        band = "Line: mean; band: 25th-75th percentile across episodes; dotted: success (100) and failure (10)."
        parts.append(
            '<div class="row">'
            + _figure(_overall_plot(records, policies, colors, length), f"Emotion by turn. {band}")
            + _figure(_final_plot(records, policies, colors), "Final emotion of every episode, by policy.")
            + "</div>"
        )
        intentions = [t.value for t in IntentionType]
        difficulties = [d.value for d in Difficulty]
        parts += ["<h2>By intention type</h2>", table_list[1].html(caption=False)]
        uri = _panels_plot(records, policies, colors, length, "intention_type", intentions, 4)
        parts.append(_figure(uri, f"Emotion by turn, one panel per intention type. {band}"))
        parts += ["<h2>By difficulty</h2>", table_list[2].html(caption=False)]
        uri = _panels_plot(records, policies, colors, length, "difficulty", difficulties, 3)
        parts.append(_figure(uri, f"Emotion by turn, one panel per difficulty. {band}"))
    if len(table_list) > 3:
        parts += ["<h2>False-belief personas: integrity</h2>", table_list[3].html(caption=False)]
        false_belief = [r for r in records if r["intention_type"] == IntentionType.false_belief.value]
        parts.append(_claims(false_belief, policies))
    if records:
        parts.append(
            "<details><summary>Mean final emotion per persona</summary>"
            + _persona_matrix(records, policies)
            + "</details>"
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Attune evaluation</title><style>{_CSS}</style></head>"
        f"<body><main>{''.join(parts)}</main></body></html>\n"
    )
