"""The results as a table (stdout), a JSON document and a PNG chart of the ratios.

The JSON holds everything needed to judge the figures later: the machine, the versions, the number of runs,
every comparison's settings, each figure's per-run samples, median and ratios, and the goals.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scripts.bench.results import Comparison, Figure

SCHEMA_VERSION = 1


def document(
    comparisons: Sequence[Comparison],
    *,
    machine: dict[str, Any],
    versions: dict[str, str],
    runs: int,
    quick: bool,
    command: Sequence[str],
    started_at: str,
    finished_at: str,
) -> dict[str, Any]:
    """The JSON document of one bench invocation."""
    return {
        "schema_version": SCHEMA_VERSION,
        "started_at": started_at,
        "finished_at": finished_at,
        "command": list(command),
        "runs": runs,
        "quick": quick,
        "figures_are": "medians over runs; ratios are medians of each run's figure / baseline",
        "machine": machine,
        "versions": versions,
        "comparisons": [_comparison_json(comparison) for comparison in comparisons],
    }


def _comparison_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "name": comparison.name,
        "title": comparison.title,
        "error": comparison.error,
        "settings": comparison.settings,
        "figures": [
            {
                "name": figure.spec.name,
                "unit": figure.spec.unit,
                "higher_is_better": figure.spec.higher_is_better,
                "median": figure.median,
                "samples": list(figure.samples),
                "ratios": dict(figure.ratios),
            }
            for figure in comparison.figures
        ],
        "goals": [
            {
                "text": goal.text,
                "figure": goal.figure,
                "baseline": goal.baseline,
                "op": goal.op,
                "threshold": goal.threshold,
                "value": value,
                "met": met,
            }
            for goal, value, met in comparison.goals
        ],
        "notes": comparison.notes,
    }


def table(comparisons: Sequence[Comparison], runs: int) -> str:
    """One block per comparison: figure, median, unit and its ratios; then goals and notes."""
    lines: list[str] = []
    for comparison in comparisons:
        lines.append(f"== {comparison.name}: {comparison.title} (median of {runs} run(s)) ==")
        if comparison.error is not None:
            lines.append(f"  FAILED: {comparison.error}")
        width = max((len(figure.spec.name) for figure in comparison.figures), default=0)
        for figure in comparison.figures:
            median = f"{_number(figure.median):>9} {figure.spec.unit:<8}"
            lines.append(f"  {figure.spec.name:<{width}} {median} {_ratios(figure)}".rstrip())
        for goal, value, met in comparison.goals:
            verdict = "n/a" if met is None else "met" if met else "MISSED"
            shown = "n/a" if value is None else f"{value:.2f}" + ("x" if goal.baseline else "")
            lines.append(f"  goal: {goal.text}: {shown} -> {verdict}")
        lines.extend(f"  note: {note}" for note in comparison.notes)
        lines.append("")
    return "\n".join(lines)


def _ratios(figure: Figure) -> str:
    if not figure.ratios:
        return "(baseline)"
    parts = [("n/a" if r is None else f"{r:.2f}x") + f" {base}" for base, r in figure.ratios.items()]
    return "= " + ", ".join(parts)


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


def write_chart(comparisons: Sequence[Comparison], path: Path, subtitle: str) -> None:
    """One horizontal bar chart per comparison: each figure's ratio against its first baseline."""
    import matplotlib  # the bench extra; imported here so the table and JSON work without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    panels = [(c, [f for f in c.figures if f.ratios]) for c in comparisons if any(f.ratios for f in c.figures)]
    if not panels:
        return
    heights = [max(len(bars), 1) * 0.45 + 1.0 for _, bars in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, sum(heights) + 0.8), height_ratios=heights, squeeze=False)
    for ax, (comparison, bars) in zip(axes[:, 0], panels, strict=True):
        labels, ratios, texts = [], [], []
        for figure in bars:
            base, value = next(iter(figure.ratios.items()))
            labels.append(f"{figure.spec.name}\n÷ {base}")
            ratios.append(value or 0.0)
            texts.append(f"{value or 0:.2f}x  ({_number(figure.median)} {figure.spec.unit})")
        positions = list(range(len(bars)))
        colours = ["tab:blue" if f.spec.higher_is_better else "tab:orange" for f in bars]
        shown = [max(ratio, 1e-3) for ratio in ratios]
        # Log scale, bars from 1.0: half and double are the same distance from the baseline.
        ax.barh(positions, [ratio - 1.0 for ratio in shown], left=1.0, color=colours)
        ax.set_xscale("log")
        ax.set_yticks(positions, labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color="grey", linewidth=0.8)
        for goal, _, _ in comparison.goals:
            if goal.baseline is not None:
                ax.axvline(goal.threshold, color="tab:green", linestyle="--", linewidth=0.8)
        for position, ratio, text in zip(positions, shown, texts, strict=True):
            ax.text(max(ratio, 1.0), position, " " + text, va="center", fontsize=7)
        ax.set_xlim(min([*shown, 1.0]) / 1.5, max([*shown, 1.0]) * 6)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(f"{comparison.name}: {comparison.title}", fontsize=9, loc="left")
    fig.suptitle(f"Ratios against baselines measured in the same run\n{subtitle}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
